"""The handlers section's no-op drain: what the worker's slots cost when handlers do nothing.

One idle, connected worker process drains N no-op messages, batch 100, as
:func:`loadtest.bench.drain.ours` times it, in both delivery modes: ours with ``--concurrency 1``
and ``--concurrency 8``, beside the worker as it was before it had concurrency (commit
:data:`BEFORE`, ``git archive`` unpacked into a temporary directory and run from there with
``PYTHONPATH`` pointing at it, same venv, same command line) and beside the raw Redis limits of
:mod:`loadtest.bench.drain` (a Lua claim of 100 + an ack; ``RPOP q 100``). A checkout without
that commit (no git history) gets a row saying so instead of a figure.
"""

from __future__ import annotations

import contextlib
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from loadtest.bench import drain
from loadtest.bench.common import ROOT, Result, Scale
from loadtest.harness.server import throwaway_server

BEFORE = "cef5e7c"
TAG = "no-op drain, batch 100"
UNIT = "msg/s"
RAW = {"at-least-once": ("raw claim 100 + ack (Lua)", drain.raw_claim_ack, ">= 0.6x"),
       "at-most-once": ("raw RPOP q 100", drain.raw_rpop, ">= 0.3x")}  # fmt: skip
CONCURRENCY = (1, 8)


def before_name(delivery: str) -> str:
    return f"{TAG}: redis-bus worker before concurrency ({BEFORE}), {delivery}"


def ours_name(delivery: str, concurrency: int) -> str:
    return f"{TAG}: redis-bus worker --concurrency {concurrency}, {delivery}"


@contextlib.contextmanager
def before_checkout() -> Iterator[Path | None]:
    """The tree of commit :data:`BEFORE` in a temporary directory, or None without it."""
    with tempfile.TemporaryDirectory(prefix="bench-before-") as tmp:
        archive = Path(tmp) / "before.tar"
        with archive.open("wb") as out:
            got = subprocess.run(["git", "archive", BEFORE], cwd=ROOT, stdout=out,
                                 stderr=subprocess.DEVNULL, check=False)  # fmt: skip
        if got.returncode != 0:
            yield None
            return
        tree = Path(tmp) / "tree"
        with tarfile.open(archive) as tar:
            tar.extractall(tree, filter="data")
        yield tree


def run(scale: Scale) -> list[Result]:
    """Per delivery mode: the raw limit, the worker before concurrency, ours at 1 and 8; then
    each of ours over the one before and over the raw limit."""
    n = scale.n(100_000, 2_000)
    raws = drain.encoded(n)
    rows: list[Result] = []
    ratios: list[Result] = []
    with throwaway_server() as server, before_checkout() as before:
        for delivery, (raw_name, loop, raw_target) in RAW.items():
            raw = Result("handlers", f"{TAG}: {raw_name}", drain.reference(server, raws, loop),
                         UNIT, extra={"messages": n})  # fmt: skip
            rows.append(raw)
            if before is None:
                rows.append(Result("handlers", before_name(delivery) + ": not measured, this "
                                   "checkout has no git history", 0.0, UNIT))  # fmt: skip
            else:
                rate = drain.ours(server, delivery, 100, raws, checkout=before)
                rows.append(Result("handlers", before_name(delivery), rate, UNIT,
                                   extra={"messages": n, "commit": BEFORE}))  # fmt: skip
            for c in CONCURRENCY:
                rate = drain.ours(server, delivery, 100, raws, options=("--concurrency", str(c)))
                name = ours_name(delivery, c)
                rows.append(Result("handlers", name, rate, UNIT,
                                   ref=before_name(delivery) if before else None,
                                   target=">= 1.0x the worker before concurrency",
                                   extra={"messages": n}))  # fmt: skip
                ratios.append(Result("handlers", f"{name} / {raw_name}", rate / raw.value, "x",
                                     target=raw_target))  # fmt: skip
    return rows + ratios
