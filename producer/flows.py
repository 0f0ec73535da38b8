"""Messages that wait for others, on the producer: ``push(after=...)``, :meth:`Flows.chain` and
:meth:`Flows.group` (Celery's chain and chord, RQ's ``depends_on``). How the waiting works:
:mod:`producer.store.after`."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from producer.errors import IdempotencyConflict
from producer.keyed import Sent
from producer.observe.stats import Stats
from producer.store import after, envelope, keys, once
from producer.store.after import Prerequisite


@dataclass(frozen=True)
class Step:
    """One message of a chain or a group: its payload, queue and options."""

    payload: Any
    queue: str = "default"
    priority: int | None = None
    timeout_s: float | None = None


@dataclass(frozen=True)
class Group:
    """What :meth:`Flows.group` sent: the members (in order) and the callback that waits for
    them (None when no callback was given)."""

    members: list[Sent]
    callback: Sent | None


class Flows:
    """The producer's pushes that wait for other messages; the attributes and the two methods
    below are the producer's."""

    client: redis.Redis
    src: str
    stats: Stats | None
    result_ttl_ms: int
    once_ms: int
    _seqs: dict[str, int]

    def _lock_for(self, dest: str) -> threading.Lock:
        raise NotImplementedError  # the producer's: one lock per destination

    def push_many(self, payloads: Iterable[Any], queue: str = "default", *,
                  delay_s: float | None = None, not_before: float | None = None,
                  track: bool | None = None, timeout_s: float | None = None,
                  priority: int | None = None) -> list[Sent]:  # fmt: skip
        raise NotImplementedError  # the producer's

    def _push_after(self, payload: Any, queue: str, prerequisites: Iterable[Any],
                    timeout_s: float | None, priority: int | None,
                    key: str | None = None) -> Sent:  # fmt: skip
        """:meth:`~producer.Producer.push` with ``after``: the message is tracked, and waits
        aside until every prerequisite is handled. Its result is how many it still waits for
        (0: they were all handled already, and it is pending now, or one of them had ended
        otherwise, and so has it). With ``key``, at most once within the key's window."""
        needs = after.parse(prerequisites, queue)
        timeout_s = envelope.check_timeout(timeout_s)
        level = envelope.check_priority(priority)
        keyed = None
        if key is not None:
            fp = once.fingerprint(queue, [payload, needs], -1, -1, True, timeout_s, level)
            keyed = (once.check_key(key), self.once_ms, fp)
        dest = keys.pending(queue)
        with self._lock_for(dest):
            seq = self._seqs.get(dest, 1)
            env = envelope.new(payload, src=self.src, seq=seq, track=True, timeout_s=timeout_s,
                               priority=level)  # fmt: skip
            raw = env.encode()  # a payload that is not JSON fails here, nothing sent
            kept = after.wait(self.client, queue, env.id, raw, needs, self.result_ttl_ms,
                              once=keyed)  # fmt: skip
            if kept.repeat is None:
                self._seqs[dest] = seq + 1
        if kept.repeat is not None:  # the key used before: nothing was sent now
            if not kept.same:
                raise IdempotencyConflict(queue, key or "")
            return Sent(envelope.decode(kept.repeat), kept.waiting_for, repeat=True, queue=queue)
        if self.stats:
            self.stats.incr("pushed", 1, queue)
        return Sent(env, kept.waiting_for, queue=queue)

    def chain(self, steps: Sequence[Step | Any], queue: str = "default") -> list[Sent]:
        """Push ``steps`` so that each waits for the one before it to be handled (each a
        :class:`Step`, or a payload for ``queue``): the first is pending at once, the others
        wait, tracked; a step's handler reads the result of the one before it with
        ``ctx.results()[0]``. A step that is dead-lettered or cancelled ends the rest of the
        chain the same way (their records say why). Returns what each push sent, in order."""
        sent: list[Sent] = []
        before: Prerequisite | None = None
        for step in _steps(steps, queue):
            if before is None:
                one = self.push_many([step.payload], step.queue, track=True,
                                     priority=step.priority,
                                     timeout_s=step.timeout_s)[0]  # fmt: skip
            else:
                one = self._push_after(step.payload, step.queue, [before], step.timeout_s,
                                       step.priority)  # fmt: skip
            sent.append(one)
            before = (step.queue, one.envelope.id)
        return sent

    def group(
        self, members: Sequence[Step | Any], then: Step | Any = None, queue: str = "default"
    ) -> Group:
        """Push ``members`` (each a :class:`Step`, or a payload for ``queue``), tracked, to be
        handled concurrently by the workers of their queues; with ``then``, a callback that
        waits until every member is handled (Celery's chord), whose handler reads their
        results, in the members' order, with ``ctx.results()``. A member dead-lettered or
        cancelled ends the callback the same way. Members of one queue go in one round trip."""
        todo = _steps(members, queue)
        if not todo:
            raise ValueError("a group has at least one member")
        sent: list[Sent | None] = [None] * len(todo)
        by_queue: dict[tuple[str, int | None, float | None], list[int]] = {}
        for i, step in enumerate(todo):
            by_queue.setdefault((step.queue, step.priority, step.timeout_s), []).append(i)
        for (q, priority, timeout_s), where in by_queue.items():
            pushed = self.push_many([todo[i].payload for i in where], q, track=True,
                                    priority=priority, timeout_s=timeout_s)  # fmt: skip
            for i, one in zip(where, pushed, strict=True):
                sent[i] = one
        done = [s for s in sent if s is not None]
        callback = None
        if then is not None:
            last = _steps([then], queue)[0]
            needs = [(step.queue, one.envelope.id) for step, one in zip(todo, done, strict=True)]
            callback = self._push_after(last.payload, last.queue, needs, last.timeout_s,
                                        last.priority)  # fmt: skip
        return Group(done, callback)


def _steps(items: Iterable[Step | Any], queue: str) -> list[Step]:
    return [item if isinstance(item, Step) else Step(item, queue) for item in items]
