"""A handler that measures push-to-handler-start latency in microseconds, for the latency section.

The payload carries ``t``, the sender's ``time.time_ns()`` just before it sent the message (same
host, same clock). The handler notes ``time.time_ns() - t`` and, once it has seen
``BENCH_EXPECT`` messages, writes them, one per line, to ``BENCH_LATENCY_FILE``. Used as
``--handler loadtest.bench.stamp:stamp`` by the worker and the subscriber, and by
:mod:`loadtest.bench.naiveloop`.
"""

from __future__ import annotations

import os
import time
from typing import Any

_seen: list[int] = []


def note(payload: Any) -> None:
    """Note one message's latency; write them all when the expected number has arrived."""
    _seen.append(time.time_ns() - payload["t"])
    if len(_seen) == int(os.environ["BENCH_EXPECT"]):
        path = os.environ["BENCH_LATENCY_FILE"]
        with open(path + ".tmp", "w") as f:
            f.write("\n".join(str(ns // 1000) for ns in _seen))
        os.replace(path + ".tmp", path)


def stamp(env: Any) -> None:
    """The handler: ``env.payload`` is ``{"t": <ns>, ...}``."""
    note(env.payload)
