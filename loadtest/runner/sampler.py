"""A thread that samples on a fixed schedule until it is stopped: the base of the runner's
watchers of memory (:mod:`.memwatch`) and of messages in hand (:mod:`.inhand`)."""

from __future__ import annotations

import threading
import time


class Sampler(threading.Thread):
    """Calls :meth:`sample` every ``every_s`` (a late sample does not shift the next ones)
    until :meth:`stop`."""

    def __init__(self, name: str, every_s: float) -> None:
        super().__init__(name=name, daemon=True)
        self.every_s = every_s
        self.stopping = threading.Event()

    def sample(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stopping.is_set():
            self.sample()
            next_at += self.every_s
            self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self.stopping.set()
        self.join()
