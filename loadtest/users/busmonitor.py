"""The bus's figures while a load test runs: a poller of ``/api/stats`` and a web UI tab.

:class:`Monitor` takes the starting snapshot when the test starts, polls every ``interval_s`` in
a thread (a greenlet under locust's gevent), logs one line per mode, and when the test stops
polls until the counters settle, for the final block. :func:`add_web_tab` adds a "redis-bus"
tab to locust's web UI: the tab and its table in the index page's template args, and the rows
in every ``/stats/requests`` answer. No locust import: the locustfile passes its objects in.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Response, request

from loadtest.users.busfigures import Deltas, Figures, fetch_overview, format_line

log = logging.getLogger(__name__)
TAB = "redis-bus"
COLUMNS = (
    ("figure", "bus figure (GET /api/stats)"),
    ("prodcons", "prodcons (lists)"),
    ("pubsub", "pubsub"),
)


class Monitor:
    """Polls ``/api/stats`` every ``interval_s`` in a thread, logs a line per mode, keeps the
    latest figures; :meth:`stop` lets the counters settle once more before the final block."""

    SETTLE_STABLE_S = 1.5  # stats hashes and the web's cache lag by about 1 s together
    SETTLE_MAX_S = 6.0

    def __init__(self, base_url: str, interval_s: float) -> None:
        self.base_url = base_url
        self.source = base_url.rstrip("/") + "/api/stats"
        self.interval_s = interval_s
        self.latest: Figures | None = None
        self.updated_at: float | None = None
        self._deltas: Deltas | None = None
        self._warned = False
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Take the starting snapshot now (the test's zero), then poll in the background."""
        self._poll(first=True)
        self._spawn(self._run, "bus-figures")

    def stop(self) -> None:
        """Stop polling; settle the final figures in the background (see :meth:`final`)."""
        self._stopping.set()
        self._spawn(self._settle, "bus-figures-settle")

    def final(self) -> Figures | None:
        """Wait for the settling poll, then the last figures (None if never reachable)."""
        for t in self._threads:
            t.join(self.SETTLE_MAX_S + 5)
        return self.latest

    def note(self) -> str:
        """A status line for the web UI: where the figures come from and how fresh they are."""
        if self.latest is None or self.updated_at is None:
            return f"{self.source}: no answer yet"
        return f"deltas since the test started, {time.time() - self.updated_at:.0f} s old"

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            figures = self._poll()
            if figures is not None:
                for mode in ("prodcons", "pubsub"):
                    log.info("%s", format_line(mode, figures))

    def _settle(self) -> None:
        if self._deltas is None:  # never answered: one last try, no waiting
            self._poll()
            return
        started = stable_since = time.monotonic()
        previous = self.latest
        while time.monotonic() - started < self.SETTLE_MAX_S:
            time.sleep(0.5)
            figures = self._poll()
            if figures != previous:
                previous, stable_since = figures, time.monotonic()
            elif time.monotonic() - stable_since >= self.SETTLE_STABLE_S:
                return

    def _poll(self, first: bool = False) -> Figures | None:
        try:
            overview = fetch_overview(self.base_url)
        except (OSError, ValueError) as exc:
            if not self._warned:
                log.warning("bus figures: %s failed (%s); not shown until it answers",
                            self.source, exc)  # fmt: skip
                self._warned = True
            return None
        if self._deltas is None:
            if not first:
                log.info("bus figures: counting from now (no snapshot at the test's start)")
            self._deltas = Deltas(overview)
            figures = self._deltas.figures()
        else:
            figures = self._deltas.update(overview)
        self.latest, self.updated_at = figures, time.time()
        return figures


def add_web_tab(web_ui: Any, rows: Callable[[], list[dict[str, Any]]]) -> None:
    """Show ``rows()`` as a "redis-bus" tab of locust's web UI (``web_ui``: locust's WebUI)."""
    web_ui.template_args["extended_tabs"] = [{"title": "redis-bus", "key": TAB}]
    web_ui.template_args["extended_tables"] = [
        {"key": TAB, "structure": [{"key": k, "title": t} for k, t in COLUMNS]}
    ]

    @web_ui.app.after_request
    def add_bus_figures(response: Response) -> Response:
        if not request.path.endswith("/stats/requests") or response.status_code != 200:
            return response
        body = response.get_json(silent=True)
        if isinstance(body, dict):
            body["extended_stats"] = [{"key": TAB, "data": rows()}]
            response.set_data(json.dumps(body))
        return response
