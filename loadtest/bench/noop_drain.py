"""The handlers section's no-op drain: what the worker's slots cost when handlers do nothing.

One idle, connected worker process drains N no-op messages, batch 100, as
:func:`loadtest.bench.drain.ours` times it (each figure the median of three interleaved rounds),
in both delivery modes: ours with ``--concurrency 1``
and ``--concurrency 8``, beside the worker as it was before it had concurrency (commit
:data:`BEFORE`, ``git archive`` unpacked into a temporary directory and run from there with
``PYTHONPATH`` pointing at it, same venv, same command line) and beside the raw Redis limits of
:mod:`loadtest.bench.drain` (a Lua claim of 100 + an ack; ``RPOP q 100``). A checkout without
that commit (no git history) gets a row saying so instead of a figure.
"""

from __future__ import annotations

import contextlib
import statistics
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
ROUNDS = 3


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
    """Per delivery mode: the raw limit, the worker before concurrency, ours at 1 and 8, each
    the median of :data:`ROUNDS` interleaved rounds (a single drain of this size moves by about
    10% from one run to the next on a shared machine); then each of ours over the one before
    and over the raw limit."""
    n = scale.n(100_000, 2_000)
    raws = drain.encoded(n)
    rates: dict[tuple[str, str], list[float]] = {}
    with throwaway_server() as server, before_checkout() as before:
        for _ in range(ROUNDS):
            for delivery, (_, loop, _) in RAW.items():
                rates.setdefault((delivery, "raw"), []).append(drain.reference(server, raws, loop))
                if before is not None:
                    rates.setdefault((delivery, "before"), []).append(
                        drain.ours(server, delivery, 100, raws, checkout=before)
                    )
                for c in CONCURRENCY:
                    rates.setdefault((delivery, str(c)), []).append(
                        drain.ours(server, delivery, 100, raws,
                                   options=("--concurrency", str(c))))  # fmt: skip
    rows: list[Result] = []
    ratios: list[Result] = []

    def measured(name: str, got: list[float], ref: str | None = None, target: str = "") -> Result:
        return Result("handlers", name, statistics.median(got), UNIT, ref=ref, target=target,
                      extra={"messages": n, "rounds": [round(x) for x in got]})  # fmt: skip

    for delivery, (raw_name, _, raw_target) in RAW.items():
        raw = measured(f"{TAG}: {raw_name}", rates[(delivery, "raw")])
        rows.append(raw)
        if before is None:
            rows.append(Result("handlers", before_name(delivery) + ": not measured, this "
                               "checkout has no git history", 0.0, UNIT))  # fmt: skip
        else:
            rows.append(measured(before_name(delivery), rates[(delivery, "before")]))
        for c in CONCURRENCY:
            name = ours_name(delivery, c)
            row = measured(name, rates[(delivery, str(c))],
                           ref=before_name(delivery) if before else None,
                           target=">= 1.0x the worker before concurrency")  # fmt: skip
            rows.append(row)
            ratios.append(Result("handlers", f"{name} / {raw_name}", row.value / raw.value, "x",
                                 target=raw_target))  # fmt: skip
    return rows + ratios
