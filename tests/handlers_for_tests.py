"""Handlers the tests pass to the daemons with ``--handler tests.handlers_for_tests:NAME``.

``record`` appends one JSON line per message to the file named by ``TEST_BUS_RECORD``, flushed
before the handler returns, so a test can account for every message by id, even after kill -9.
"""

from __future__ import annotations

import json
import os
import time

from producer import Envelope


def _append(env: Envelope, event: str) -> None:
    line = {"event": event, "id": env.id, "seq": env.seq, "attempt": env.attempt,
            "payload": env.payload, "pid": os.getpid()}  # fmt: skip
    with open(os.environ["TEST_BUS_RECORD"], "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()


def record(env: Envelope) -> None:
    """Record the message as handled."""
    _append(env, "handled")


def fail_always(env: Envelope) -> None:
    """Record the attempt, then fail."""
    _append(env, "attempt")
    raise RuntimeError(f"refusing {env.id}")


def slow(env: Envelope) -> None:
    """Record the start, sleep for ``payload["sleep_s"]`` seconds if given, record the end."""
    _append(env, "start")
    if isinstance(env.payload, dict):
        time.sleep(float(env.payload.get("sleep_s", 0)))
    _append(env, "handled")
