"""The scripts a :class:`~producer.Producer` pushes with: plain, at a level, under a depth
limit, delayed, tracked. One script each time, so a push, its count and its record are never
half-applied (producer/store/lua/)."""

from __future__ import annotations

from typing import Any

from producer.errors import QueueFull
from producer.store import keys, scripts


class ScriptedPushes:
    """The producer's pushes by script; the attributes and ``_write`` are the producer's."""

    max_queue_depth: int
    result_ttl_ms: int

    def _write(self, command: tuple[Any, ...]) -> Any:
        raise NotImplementedError  # the producer's: one command, WAIT for replicas if asked

    def _schedule(
        self, queue: str, delay_ms: int, due_ms: int, key: str, raws: list[bytes]
    ) -> list[Any]:
        args = (self.max_queue_depth, delay_ms, due_ms, *raws)
        reply = scripts.SCHEDULE.run(self._write, (key, keys.delayed(queue)), args)
        done, count, due = (int(x) for x in reply)
        if not done:
            raise QueueFull(queue, count, self.max_queue_depth, len(raws))
        return [(count - len(raws) + 1 + i, due) for i in range(len(raws))]

    def _push_tracked(self, queue: str, delay_ms: int, due_ms: int, level: int, key: str,
                      raws: list[bytes], ids: list[str]) -> list[Any]:  # fmt: skip
        records = [keys.record(queue, i) for i in ids]
        push_keys = (key, keys.delayed(queue), keys.tracking(queue), *records)
        args = (self.max_queue_depth, delay_ms, due_ms, self.result_ttl_ms, level, *raws)
        reply = scripts.PUSH_TRACKED.run(self._write, push_keys, args)
        done, count, due = (int(x) for x in reply)
        if not done:
            raise QueueFull(queue, count, self.max_queue_depth, len(raws))
        first = count - len(raws) + 1
        if delay_ms < 0 and due_ms < 0:  # pushed now: the depths
            return [first + i for i in range(len(raws))]
        return [(first + i, due) for i in range(len(raws))]

    def _lpush(self, queue: str, level: int, key: str, raws: list[bytes]) -> list[Any]:
        if self.max_queue_depth:
            depth = self._push_if_room(queue, level, key, raws)
        else:
            # One script: the push and its count (producer/store/counts.py), never half-applied.
            if level:
                depth = scripts.PUSH_LEVEL.run(self._write, (key,), (level, *raws))
            else:
                depth = scripts.PUSH.run(self._write, (key, keys.levels_gate(queue)), raws)
        return [int(depth) - len(raws) + 1 + i for i in range(len(raws))]

    def _push_if_room(self, queue: str, level: int, key: str, raws: list[bytes]) -> int:
        args = (self.max_queue_depth, level, *raws)
        reply = scripts.PUSH_IF_ROOM.run(self._write, (key, keys.delayed(queue)), args)
        pushed, depth = (int(x) for x in reply)
        if not pushed:
            raise QueueFull(queue, depth, self.max_queue_depth, len(raws))
        return depth
