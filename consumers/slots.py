"""Where handlers run: a pool of threads for a plain function (:class:`ThreadSlots`), one event
loop for ``async def`` (:class:`~consumers.loop_slots.LoopSlots`); :class:`Slots` is what both
share.

Both take messages from one line (:meth:`Slots.submit`), in claim order, in batches: the first
free slot takes the oldest batch, so messages start in queue order; with several slots they
finish in whatever order their handlers take. The dispatcher hands out a message per slot for
handlers that take some time; one batch for ``async def`` handlers that take almost none (a
plain function that fast runs in the dispatcher's own thread: :mod:`consumers.inline`).
Finished messages are put on ``done`` in lists for the dispatcher, which alone talks to Redis
and settles them: half way through a batch (the slot then yields the interpreter, so the
dispatcher settles and claims while it goes on), at its end, and after each message that took
a millisecond or more. On stop (:attr:`Slots.closing`) a slot starts nothing more; what no slot
started goes back to the queue unchanged.

Giving up on a handler past its time limit (:meth:`Slots.give_up`) frees its slot at once: a
thread is left to finish on its own (Python cannot stop a thread blocked in C code) and a new
thread takes its place; :class:`TimeLimitExceeded` is raised in it, which ends a handler running
Python code. Its late result is discarded. :attr:`Slots.abandoned` counts such threads still
running: the worker recycles its process when they outnumber its slots. (A task is cancelled
instead, and a blocked event loop left behind: :mod:`consumers.loop_slots`.)
"""

from __future__ import annotations

import ctypes
import logging
import queue
import threading
import time
from collections.abc import Callable

from consumers.held import TIME_LIMIT, Held
from producer.errors import TimeLimitExceeded

log = logging.getLogger("consumers.worker")
LOOP_STALL_S = 1.0  # an event loop that ran no callback for this long is blocked
FLUSH_AFTER_S = 0.001  # a message whose handler took this long is reported at once


class Slots:
    """What the dispatcher needs of either kind of slot."""

    def __init__(self, n: int, done: queue.SimpleQueue[list[Held]], name: str,
                 setup: Callable[[], object] = lambda: None) -> None:  # fmt: skip
        self.n = n
        self.done = done
        self.name = name
        self.setup = setup  # called first in each thread that runs handlers
        # Batches; None: a thread ends; an Event: a thread waits for it (a place held for an
        # adopted message).
        self._todo: queue.SimpleQueue[list[Held] | threading.Event | None] = queue.SimpleQueue()
        self._running: dict[int, Held] = {}  # id(held): started, not finished
        self.closing = False  # start nothing more (stopping, or a handler ended the process)

    def submit(self, batch: list[Held]) -> None:
        """Hand out ``batch`` (claim order) to the next free slot."""
        self._todo.put(batch)

    def running(self) -> list[Held]:
        """The messages whose handler is running now."""
        return list(self._running.values())

    def give_up(self, held: Held) -> None:
        """Free ``held``'s slot (its outcome was decided: timed out)."""
        raise NotImplementedError

    def adopt(self, held: Held) -> None:
        """Count ``held``, whose handler runs in a thread that is no slot's (:attr:`Held.thread`:
        the worker's own, held up), among the running: its time limit applies, and it may be
        given up on."""
        raise NotImplementedError

    def release(self, held: Held) -> None:
        """An adopted message's handler returned."""
        raise NotImplementedError

    def strands(self) -> list[Held]:
        """Messages stranded by a handler given up on (an event loop it blocks): their slots
        are taken over; their outcome is not decided yet. Asked after each look at the limits."""
        return []

    @property
    def abandoned(self) -> int:
        """Handlers given up on that are still running."""
        raise NotImplementedError

    def close(self) -> None:
        """Let the slots end once idle (handlers still running are not waited for)."""
        raise NotImplementedError


class ThreadSlots(Slots):
    """``n`` threads calling ``run(held)``."""

    def __init__(self, n: int, run: Callable[[Held], None], done: queue.SimpleQueue[list[Held]],
                 name: str, setup: Callable[[], object] = lambda: None) -> None:  # fmt: skip
        super().__init__(n, done, name, setup)
        self._run = run
        self._given_up: dict[int, threading.Thread] = {}  # ident: a thread left to finish
        self._batches: dict[int, list[Held]] = {}  # ident: the batch a thread works through
        # Ident of a thread no slot's: the message it runs, and the place it holds in the slots.
        self._adopted: dict[int, tuple[Held, threading.Event]] = {}
        self._lock = threading.Lock()  # adopted messages: given up on, or released, once
        self._spawned = 0
        for _ in range(n):
            self._spawn()

    def _spawn(self) -> None:
        self._spawned += 1
        thread = threading.Thread(target=self._serve, name=f"handler-{self.name}-{self._spawned}",
                                  daemon=True)  # fmt: skip
        thread.start()

    def _serve(self) -> None:
        me = threading.current_thread()
        ident = me.ident or 0
        self.setup()
        try:
            while (batch := self._todo.get()) is not None:
                if isinstance(batch, threading.Event):  # its place is an adopted message's
                    batch.wait()
                    continue
                self._batches[ident] = batch
                self._work_through(batch, me)
                self._batches.pop(ident, None)
                if ident in self._given_up:
                    return  # a new thread has its slot
        except TimeLimitExceeded:  # raised in it after its handler returned: it ends, as meant
            pass

    def _work_through(self, batch: list[Held], me: threading.Thread) -> None:
        finished: list[Held] = []
        half = len(batch) // 2 if len(batch) >= 8 else -1
        for i, held in enumerate(batch):
            if self.closing or me.ident in self._given_up:
                break  # left unstarted: handed out again, or given back by the worker
            if not held.take(me):
                continue
            held.thread = me
            self._running[id(held)] = held
            try:
                self._run(held)
            except Exception:  # a bug of the worker's: settled as if it crashed
                log.exception("queue worker %s: running a handler failed", self.name)
            finally:
                self._running.pop(id(held), None)
            if held.fatal is not None:
                self.closing = True
            if held.decided_by != TIME_LIMIT:
                finished.append(held)
            if finished and (i == half or held.ran_s >= FLUSH_AFTER_S):
                self.done.put(finished)
                finished = []
                if i == half:
                    time.sleep(0)  # the dispatcher settles and claims while this goes on
        if finished:
            self.done.put(finished)

    def give_up(self, held: Held) -> None:
        thread = held.thread
        if thread is None or thread.ident is None:
            return
        with self._lock:
            adopted = self._adopted.get(thread.ident)
            if adopted is not None and adopted[0] is held:  # left to finish; its place is free
                del self._adopted[thread.ident]
                adopted[1].set()
                self._given_up[thread.ident] = thread
                self._running.pop(id(held), None)
                _interrupt(thread)
                return
        self._given_up[thread.ident] = thread
        self._spawn()  # the slot is free again
        rest = [h for h in self._batches.get(thread.ident, []) if not h.taken]
        if rest:  # the rest of its batch, to the next free slot
            self._todo.put(rest)
        _interrupt(thread)

    def adopt(self, held: Held) -> None:
        assert held.thread is not None and held.thread.ident is not None
        place = threading.Event()  # the next free slot thread waits for it: no more at once
        with self._lock:
            self._adopted[held.thread.ident] = held, place
            self._running[id(held)] = held
        self._todo.put(place)

    def release(self, held: Held) -> None:
        assert held.thread is not None and held.thread.ident is not None
        with self._lock:
            self._running.pop(id(held), None)
            adopted = self._adopted.pop(held.thread.ident, None)
            if adopted is not None:
                adopted[1].set()
            self._given_up.pop(held.thread.ident, None)  # it is back: no longer abandoned

    @property
    def abandoned(self) -> int:
        for ident, thread in list(self._given_up.items()):
            if not thread.is_alive():
                self._given_up.pop(ident, None)
        return len(self._given_up)

    def close(self) -> None:
        with self._lock:
            for _, place in self._adopted.values():
                place.set()
        for _ in range(self._spawned):
            self._todo.put(None)


def _interrupt(thread: threading.Thread) -> None:
    """Raise :class:`TimeLimitExceeded` in ``thread``: it ends a handler running Python code;
    one blocked in C sees it when that call returns."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident or 0),
                                               ctypes.py_object(TimeLimitExceeded))  # fmt: skip
