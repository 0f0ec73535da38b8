"""The slots of an ``async def`` handler: one event loop awaiting up to ``n`` messages at once
(:class:`LoopSlots`; the common part and the thread pool: :mod:`consumers.slots`).

Given up on past its time limit, a task is cancelled. If the event loop itself is blocked (a
handler that called blocking code) the loop is left behind with all its tasks, and a new one
takes over (:meth:`LoopSlots.give_up` says which messages were stranded with it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from consumers.held import STALLED, TIME_LIMIT, Held
from consumers.slots import LOOP_STALL_S, Slots

log = logging.getLogger("consumers.worker")


class LoopSlots(Slots):
    """One event loop awaiting ``run(held)``, ``n`` at a time."""

    def __init__(self, n: int, run: Callable[[Held], Coroutine[Any, Any, None]],
                 done: queue.SimpleQueue[list[Held]], name: str,
                 setup: Callable[[], object] = lambda: None) -> None:  # fmt: skip
        super().__init__(n, done, name, setup)
        self._run = run
        self._left: list[threading.Thread] = []  # loops left behind, blocked
        self._start_loop()

    def _start_loop(self) -> None:
        self._loop = loop = asyncio.new_event_loop()
        self._tasks: dict[int, asyncio.Task[None]] = {}  # id(held): its task, in a slot
        self._cancelled: set[asyncio.Task[None]] = set()  # given up on, not ended yet
        self._giving_up: dict[int, Held] = {}  # given up on, its cancel not seen yet
        self._waiting: collections.deque[Held] = collections.deque()  # handed out, not started
        self._ticked_at = time.monotonic()
        self._thread = threading.Thread(target=self._serve, args=(loop,), daemon=True,
                                        name=f"handlers-{self.name}")  # fmt: skip
        self._thread.start()

    def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        self.setup()
        loop.call_soon(self._tick, loop)
        with contextlib.suppress(BaseException):
            loop.run_forever()

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is self._loop:
            self._ticked_at = time.monotonic()
            loop.call_later(0.1, self._tick, loop)

    def submit(self, batch: list[Held]) -> None:
        super().submit(batch)
        self._loop.call_soon_threadsafe(self._pump, self._loop)

    def _pump(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the oldest waiting messages while fewer than ``n`` run (on the loop)."""
        tasks, waiting = self._tasks, self._waiting
        with contextlib.suppress(queue.Empty):
            while True:
                batch = self._todo.get_nowait()  # (never an Event: nothing is adopted here)
                if isinstance(batch, list):
                    waiting.extend(batch)
        while loop is self._loop and len(tasks) < self.n and not self.closing and waiting:
            held = waiting.popleft()
            if not held.take(self):
                continue
            self._running[id(held)] = held
            tasks[id(held)] = loop.create_task(self._one(held, loop))

    async def _one(self, held: Held, loop: asyncio.AbstractEventLoop) -> None:
        try:
            await self._run(held)
        except asyncio.CancelledError:  # given up on: decided already
            pass
        except Exception:  # a bug of the worker's: the dispatcher settles it as if it crashed
            log.exception("queue worker %s: running a handler failed", self.name)
        finally:
            if held.fatal is not None:
                self.closing = True
            if loop is self._loop:
                self._running.pop(id(held), None)
                self._giving_up.pop(id(held), None)
                self._tasks.pop(id(held), None)
            if (me := asyncio.current_task()) is not None:
                self._cancelled.discard(me)
            if held.decided_by not in (TIME_LIMIT, STALLED):
                self.done.put([held])
            if loop is self._loop:
                self._pump(loop)

    def give_up(self, held: Held) -> None:
        self._giving_up[id(held)] = held
        self._loop.call_soon_threadsafe(self._cancel, held, self._loop)

    def strands(self) -> list[Held]:
        """If a task given up on does not end because the loop is blocked (a handler called
        blocking code), leave that loop with its tasks: a new one takes over, and the other
        messages of the old one are stranded."""
        if not self._giving_up or time.monotonic() - self._ticked_at < LOOP_STALL_S:
            return []
        stranded = [h for h in self.running() if id(h) not in self._giving_up]
        old_loop, old_tasks = self._loop, list(self._tasks.values())
        rest = [h for h in self._waiting if not h.taken]  # never started: the new loop's
        self._left.append(self._thread)
        self._running.clear()
        blocked_s = time.monotonic() - self._ticked_at
        self._start_loop()
        if rest:
            self._todo.put(rest)
        # When the blocking call returns, the old loop cancels what it holds and stops.
        old_loop.call_soon_threadsafe(_wind_down, old_loop, old_tasks)
        self._loop.call_soon_threadsafe(self._pump, self._loop)
        log.warning("queue worker %s: its event loop ran nothing for %.1f s (a handler called "
                    "blocking code): a new loop takes over; %d other message(s) in the old "
                    "one are released", self.name, blocked_s, len(stranded))  # fmt: skip
        return stranded

    def _cancel(self, held: Held, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop: cancel ``held``'s task; its slot is free even if it ignores that."""
        if loop is not self._loop:
            return
        self._giving_up.pop(id(held), None)
        task = self._tasks.pop(id(held), None)
        if task is not None and not task.done():
            self._cancelled.add(task)
            task.cancel()
        self._pump(loop)

    @property
    def abandoned(self) -> int:
        self._left = [t for t in self._left if t.is_alive()]
        return len(self._left) + len(self._cancelled)

    def close(self) -> None:
        loop = self._loop
        with contextlib.suppress(RuntimeError):  # closed already
            loop.call_soon_threadsafe(_wind_down, loop, list(self._tasks.values()))


def _wind_down(loop: asyncio.AbstractEventLoop, tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    loop.call_soon(loop.stop)
