"""Subscriber handlers for the pub/sub fault tests (``--handler tests.pubsub_handlers:NAME``).

Both append one JSON line per message to the file named by ``TEST_BUS_RECORD`` (flushed before
the handler returns), with the wall-clock time the handler saw it (``t``, seconds since the
epoch), so a test knows exactly which messages each subscriber process received, and when.
"""

from __future__ import annotations

import json
import os
import time

from producer import Envelope


def _append(env: Envelope) -> None:
    line = {"event": "handled", "id": env.id, "src": env.src, "seq": env.seq,
            "payload_n": env.payload.get("n") if isinstance(env.payload, dict) else None,
            "pid": os.getpid(), "t": time.time()}  # fmt: skip
    with open(os.environ["TEST_BUS_RECORD"], "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()


def record(env: Envelope) -> None:
    """Record the message with its arrival time."""
    _append(env)


def slow_record(env: Envelope) -> None:
    """Record the message, then sleep ``TEST_BUS_HANDLER_SLEEP_S`` seconds (default 0.02):
    a subscriber that reads its channel slower than it is published to."""
    _append(env)
    time.sleep(float(os.environ.get("TEST_BUS_HANDLER_SLEEP_S", "0.02")))
