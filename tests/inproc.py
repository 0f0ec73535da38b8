"""Run a daemon object in a thread of the test process (the library never installs signals)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from consumers.daemon import Daemon


@contextmanager
def running(daemon: Daemon, ready_timeout_s: float = 5.0) -> Iterator[Daemon]:
    """Start ``daemon.run()`` in a thread, wait until it is connected; stop and join on exit."""
    thread = threading.Thread(target=daemon.run, name=f"test-{daemon.role}", daemon=True)
    thread.start()
    try:
        assert daemon.connected_once.wait(ready_timeout_s), f"{daemon.role} never connected"
        yield daemon
    finally:
        daemon.stop()
        thread.join(10)
        assert not thread.is_alive(), f"{daemon.role} did not stop"
