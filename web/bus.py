"""The app's one connection pool and producer, created lazily in each (forked) process."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import redis
from flask import current_app

from producer import Producer, Settings, make_client
from producer.observe.overview import read_overview
from producer.observe.stats import Flusher, Stats
from producer.observe.totals import read_history
from producer.producer import new_src

OVERVIEW_CACHE_S = 0.5  # many viewers of /api/stats cost Redis one read per half second
HISTORY_CACHE_S = 1.0  # the history gains a sample a second at most


class Bus:
    """Per-app state. Everything that holds a socket or a thread is built on first use in the
    process that uses it, so gunicorn's fork (with or without --preload) never shares one."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid = -1
        self._lock = threading.Lock()
        self._overview: tuple[float, dict[str, Any]] | None = None
        self._history: tuple[float, dict[str, Any]] | None = None

    def _ensure(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            src = new_src()
            self.stats = Stats("web", src, {"name": f"web-{os.getpid()}"})
            self.client = make_client(self.settings, "producer", f"web-{os.getpid()}")
            self.producer = Producer.from_settings(
                self.settings, client=self.client, src=src, stats=self.stats
            )
            self._flusher = Flusher(self.settings.stats_interval_s, self._flush, name="web-stats")
            self._flusher.start()
            self._pid = os.getpid()

    def get_producer(self) -> Producer:
        """This process's producer."""
        self._ensure()
        return self.producer

    def get_stats(self) -> Stats:
        """This process's counters."""
        self._ensure()
        return self.stats

    def get_client(self) -> redis.Redis:
        """This process's pooled client (producer role: short deadlines, no blind retries)."""
        self._ensure()
        return self.client

    def overview(self) -> dict[str, Any]:
        """The bus overview, cached for :data:`OVERVIEW_CACHE_S`."""
        cached = self._overview
        if cached and time.monotonic() - cached[0] < OVERVIEW_CACHE_S:
            return cached[1]
        data = read_overview(self.get_client(), self.settings)
        self._overview = (time.monotonic(), data)
        return data

    def history(self) -> dict[str, Any]:
        """The bus-wide rates of the last minutes, cached for :data:`HISTORY_CACHE_S`."""
        cached = self._history
        if cached and time.monotonic() - cached[0] < HISTORY_CACHE_S:
            return cached[1]
        data = read_history(self.get_client())
        self._history = (time.monotonic(), data)
        return data

    def close(self) -> None:
        """Stop this process's stats thread and close its pool (an app being discarded, tests).
        The next use builds them afresh."""
        with self._lock:
            if self._pid != os.getpid():
                return
            self._flusher.stop()
            self.client.close()
            self._pid = -1

    def _flush(self) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            self.stats.flush(pipe, self.settings.stats_ttl_s, self.settings.stats_interval_s)
            pipe.execute()
        except redis.RedisError:
            pass  # the next tick repeats it; requests already report Redis trouble as 503


def get_bus() -> Bus:
    """The current app's :class:`Bus`."""
    bus: Bus = current_app.extensions["bus"]
    return bus
