"""Messages that wait for others: ``after`` (Celery's chain and chord, RQ's ``depends_on``).

A message pushed with ``after`` names tracked messages (its prerequisites, on any queue). It
waits aside, in no list a worker reads, until every one of them is handled; then it is pending
like any other, at its priority level, and its handler can read their results
(``Context.results()``). If one of them ends otherwise, the waiting message ends with it, and
says why: cancelled when the prerequisite was cancelled, else dead-lettered (the prerequisite was
dead-lettered, or its record is gone). A waiting message is tracked: its record says
``waiting`` and how many it still waits for (``waiting_for``), and names them (``after``).

How (the keys: :mod:`producer.store.keys`):

1. The push checks that every prerequisite has a record (none: :class:`UnknownPrerequisite`,
   nothing written), then keeps the message aside in one script on its queue's slot
   (``lua/wait.lua``: ``bus:{q}:wait:<id>`` holds the envelope and the prerequisites not yet
   handled, ``bus:{q}:waiting`` indexes it, its record says ``waiting``, it counts as pushed).
2. It links each prerequisite, on that one's slot (``lua/link.lua``): the waiting message joins
   ``bus:{p}:then:<id>``, unless the prerequisite is finished already, whose state is then
   resolved at once.
3. The script that finishes a prerequisite (the settle, the reaper, a cancel) writes, in the same
   step, one entry per waiting message into its queue's outbox (``bus:{p}:outbox``); the worker
   that ran it drains the outbox right away (``lua/resolve.lua`` on the waiting message's slot:
   crossed off, made pending when it was the last, or ended), and every worker's mover drains it
   again every ``BUS_MOVER_INTERVAL_S`` (a worker killed between the two).
4. The workers of a queue sweep its waiting messages every :data:`SWEEP_S`: each prerequisite's
   record is read again and what finished is resolved, what did not is linked again. So nothing
   waits forever for a lost link (a producer killed between steps 1 and 2, a write Redis lost in
   a restart): at worst it waits one sweep more.

Resolving is idempotent (a prerequisite crossed off twice is crossed off once; an outcome for a
message that no longer waits does nothing), so telling twice is harmless and the callback of a
group is made pending exactly once. On a cluster, every step runs on one slot.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from producer.connection.scripting import Script
from producer.errors import UnknownPrerequisite
from producer.store import keys, scripts
from producer.store.tracking import check_id

log = logging.getLogger(__name__)

Prerequisite = tuple[str, str]  # (queue, id)
MAX_AFTER = 100_000  # prerequisites of one message
SWEEP_S = 30.0  # how often a waiting message's prerequisites are read again
SWEEP_BATCH = 100  # waiting messages per sweep script call
CHUNK = 1000  # commands per pipeline
FINAL = ("handled", "dead", "cancelled")


def parse(after: Iterable[Any], queue: str) -> list[Prerequisite]:
    """``after`` as (queue, id) pairs, in order, each once: an item is an id (a message of
    ``queue``), a (queue, id) pair, a mapping with ``id`` (and ``queue``), or anything with
    an ``envelope`` (a :class:`~producer.Sent`: a message of the queue it was pushed to).
    ValueError for anything else, an id no record can have, or none at all."""
    if isinstance(after, str | bytes):
        raise ValueError("after is a list of messages, not one id")
    out: dict[Prerequisite, None] = {}
    for item in after:
        pair = _pair(item, queue)
        bad = check_id(pair[1])
        if bad:
            raise ValueError(f"after: {bad}, got {pair[1]!r}")
        if not pair[0] or any(ord(c) < 33 for c in pair[0]) or "{" in pair[0]:
            raise ValueError(f"after: not a queue name: {pair[0]!r}")
        out[pair] = None
        if len(out) > MAX_AFTER:
            raise ValueError(f"after names at most {MAX_AFTER} messages")
    if not out:
        raise ValueError("after names no message (leave it out to push at once)")
    return list(out)


def _pair(item: Any, queue: str) -> Prerequisite:
    if isinstance(item, str):
        return queue, item
    if isinstance(item, tuple | list) and len(item) == 2 and all(isinstance(x, str) for x in item):
        return item[0], item[1]
    if isinstance(item, dict) and isinstance(item.get("id"), str):
        q = item.get("queue", queue)
        if isinstance(q, str) and set(item) <= {"id", "queue"}:
            return q, item["id"]
    env = getattr(item, "envelope", None)
    if env is not None and isinstance(getattr(env, "id", None), str):
        return getattr(item, "queue", "") or queue, env.id
    raise ValueError(
        f"after: {item!r} is not a message: give an id, a (queue, id) pair, "
        '{"queue": ..., "id": ...} or what a push returned'
    )


@dataclass(frozen=True)
class Kept:
    """What :func:`wait` did: how many the message still waits for once linked (0: it is
    pending now); with an idempotency key used before, ``repeat`` holds the first push's
    envelope (nothing was written now) and ``same`` whether its request was this one."""

    waiting_for: int
    repeat: bytes | None = None
    same: bool = True


def wait(client: redis.Redis, queue: str, msg_id: str, raw: bytes,
         prerequisites: Sequence[Prerequisite], ttl_ms: int, dead_max: int = 0,
         once: tuple[str, int, str] | None = None) -> Kept:  # fmt: skip
    """Keep message ``msg_id`` (``raw``, tracked) of ``queue`` aside until every prerequisite
    is handled (see the module's docstring). Raises :class:`UnknownPrerequisite` (nothing
    written) when one has no record. ``once``: an idempotency key, its window (ms) and the
    request's fingerprint (:mod:`producer.store.once`): a repeat writes nothing."""
    states = _states(client, prerequisites)
    missing = [p for p, (state, _) in zip(prerequisites, states, strict=True) if not state]
    if missing:
        raise UnknownPrerequisite(tuple(missing))
    shown = json.dumps([{"queue": q, "id": i} for q, i in prerequisites], separators=(",", ":"))
    wait_keys = [keys.waiting(queue), keys.wait(queue, msg_id), keys.tracking(queue),
                 keys.record(queue, msg_id), keys.pending(queue)]  # fmt: skip
    window, fp = 0, ""
    if once is not None:
        wait_keys.append(keys.once(queue, once[0]))
        window, fp = once[1], once[2]
    fields = [f"{q}\n{i}" for q, i in prerequisites]
    args = (msg_id, raw, ttl_ms, shown, int(SWEEP_S * 1000), window, fp, *fields)
    reply = scripts.WAIT(client, wait_keys, args)
    if int(reply[0]) == 2:
        return Kept(int(reply[3]), reply[2], bool(int(reply[1])))
    if int(reply[0]) == 0:
        raise ValueError(f"a message {msg_id!r} waits on {queue} already")
    outcomes = []
    me = f"{queue}\n{msg_id}"
    calls = [((keys.record(q, i), keys.then(q, i)), (me,)) for q, i in prerequisites]
    for (q, i), reply in zip(prerequisites, run_many(client, scripts.LINK, calls), strict=True):
        state, reason = (_text(x) for x in reply)
        if state in FINAL or state == "unknown":
            outcomes.append((msg_id, f"{q}\n{i}", state, reason))
    if outcomes:
        resolve(client, queue, outcomes, dead_max)
    ended = any(state != "handled" for _, _, state, _ in outcomes)
    return Kept(0 if ended else len(prerequisites) - len(outcomes))


def resolve(client: redis.Redis, queue: str, outcomes: Sequence[tuple[str, str, str, str]],
            dead_max: int = 0) -> tuple[int, int]:  # fmt: skip
    """Tell ``queue``'s waiting messages what became of their prerequisites: ``outcomes`` are
    (waiting id, prerequisite as ``queue\\nid``, its state, its reason). Returns (released,
    ended); what waits for the ended ones in turn is told at once (:func:`drain`)."""
    released, ended, told = _resolve(client, queue, outcomes, dead_max)
    if told:
        drain(client, queue, dead_max)
    return released, ended


def _resolve(client: redis.Redis, queue: str, outcomes: Sequence[tuple[str, str, str, str]],
             dead_max: int) -> tuple[int, int, int]:  # fmt: skip
    """:func:`resolve` without the drain: (released, ended, outbox entries written)."""
    released = ended = told = 0
    for start in range(0, len(outcomes), CHUNK):
        args: list[Any] = [dead_max]
        for outcome in outcomes[start : start + CHUNK]:
            args.extend(outcome)
        r, e, t = (int(x) for x in scripts.RESOLVE(client, _resolve_keys(queue), args))
        released, ended, told = released + r, ended + e, told + t
    return released, ended, told


def drain(client: redis.Redis, queue: str, dead_max: int = 0) -> int:
    """Tell every waiting message what ``queue``'s outbox says finished, oldest first, until it
    is empty (or nothing moves: another worker drains it meanwhile), and so on for the outbox
    of each queue whose waiting messages that ended (a chain ending step after step: a loop,
    however long the chain). Returns how many entries were told. Safe to run in several
    processes at once: telling twice is harmless."""
    told = 0
    todo = [queue]
    while todo:
        box = keys.outbox(todo.pop())
        while True:
            entries: list[bytes] = client.lrange(box, -CHUNK, -1)  # type: ignore[assignment]
            if not entries:
                break
            by_queue: dict[str, list[tuple[str, str, str, str]]] = defaultdict(list)
            for entry in entries:
                parts = _text(entry).split("\n", 5)
                if len(parts) != 6:
                    log.warning("%s: an entry that is not one: %r", box, entry[:200])
                    continue
                wq, wid, pq, pid, state, reason = parts
                by_queue[wq].append((wid, f"{pq}\n{pid}", state, reason))
            for wq, outcomes in by_queue.items():
                if _resolve(client, wq, outcomes, dead_max)[2] and wq not in todo:
                    todo.append(wq)  # ended ones were waited for: their outbox next
            pipe = client.pipeline(transaction=False)
            for entry in entries:
                pipe.lrem(box, -1, entry)  # type: ignore[arg-type]
            removed = sum(int(n) for n in pipe.execute())
            told += len(entries)
            if removed == 0:
                break
    return told


def sweep(client: redis.Redis, queue: str, dead_max: int = 0, batch: int = SWEEP_BATCH) -> int:
    """Read again the prerequisites of ``queue``'s waiting messages whose turn has come (each
    every :data:`SWEEP_S`): resolve what finished or has no record, link again what did not.
    Returns how many waiting messages were looked at."""
    looked = 0
    while True:
        ids = [_text(x) for x in scripts.DUE_WAITS(client, (keys.waiting(queue),),
                                                   (batch, int(SWEEP_S * 1000)))]  # fmt: skip
        if not ids:
            return looked
        looked += len(ids)
        pipe = client.pipeline(transaction=False)
        for msg_id in ids:
            pipe.hkeys(keys.wait(queue, msg_id))
        needs: list[tuple[str, Prerequisite]] = []
        for msg_id, fields in zip(ids, pipe.execute(), strict=True):
            for field in fields:
                name = _text(field)
                if name != "raw" and "\n" in name:
                    q, i = name.split("\n", 1)
                    needs.append((msg_id, (q, i)))
        states = _states(client, [p for _, p in needs])
        outcomes, relink = [], []
        for (msg_id, (q, i)), (state, reason) in zip(needs, states, strict=True):
            if state in FINAL or not state:
                outcomes.append((msg_id, f"{q}\n{i}", state or "unknown", reason))
            else:
                relink.append((msg_id, q, i))
        calls = [((keys.record(q, i), keys.then(q, i)), (f"{queue}\n{m}",)) for m, q, i in relink]
        for (msg_id, q, i), reply in zip(relink, run_many(client, scripts.LINK, calls),
                                         strict=True):  # fmt: skip
            state = _text(reply[0])
            if state in FINAL or state == "unknown":  # finished in between
                outcomes.append((msg_id, f"{q}\n{i}", state, _text(reply[1])))
        if outcomes:
            resolve(client, queue, outcomes, dead_max)
        if len(ids) < batch:
            return looked


def run_many(client: redis.Redis, script: Script,
             calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:  # fmt: skip
    """``script`` for each (keys, args) of ``calls`` on a pipeline (on a cluster, each on its
    slot's node; the pipeline loads the script where it is missing), the replies in order."""
    out: list[Any] = []
    for start in range(0, len(calls), CHUNK):
        pipe = client.pipeline(transaction=False)
        for k, a in calls[start : start + CHUNK]:
            script(pipe, k, a)
        out.extend(pipe.execute())
    return out


def _pipelined(client: redis.Redis, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    out: list[Any] = []
    for start in range(0, len(commands), CHUNK):
        pipe = client.pipeline(transaction=False)
        for command in commands[start : start + CHUNK]:
            pipe.execute_command(*command)
        out.extend(pipe.execute())
    return out


def _states(client: redis.Redis, prerequisites: Sequence[Prerequisite]) -> list[tuple[str, str]]:
    """Each prerequisite's record state and reason ("" for no record)."""
    replies = _pipelined(client, [("HMGET", keys.record(q, i), "state", "reason")
                                  for q, i in prerequisites])  # fmt: skip
    return [(_text(s) if s else "", _text(r) if r else "") for s, r in replies]


def _resolve_keys(queue: str) -> tuple[str, ...]:
    return (keys.waiting(queue), keys.pending(queue), keys.dead(queue), keys.dead_dropped(queue),
            keys.tracking(queue), keys.outbox(queue))  # fmt: skip


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
