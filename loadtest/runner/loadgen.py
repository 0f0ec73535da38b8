"""The load generator of a scenario: locust, headless, as a subprocess (the runner never imports
locust, which monkey-patches whatever imports it): its command line and environment, and the
wait until it starts sending (read from the ledger the locustfile writes)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from loadtest.ledger import records
from loadtest.runner.procs import StackError
from loadtest.runner.scenarios import AMO_QUEUE
from loadtest.runner.spec import Scenario
from loadtest.runner.stack import Stack

STOP_TIMEOUT_S = 5  # locust --stop-timeout: stopping users finish the request in flight
START_WAIT_S = 30.0  # locust must start sending within this


def command(scn: Scenario, quick: bool, stack: Stack, out: Path) -> list[str]:
    """locust, headless, with this scenario's users, shape, rate and report files."""
    users = str(scn.users_per_class * len(scn.users))
    planned = scn.duration_s(quick)
    (out / "locust").mkdir(parents=True, exist_ok=True)
    files = f"loadtest/locustfile.py,loadtest/shapes/{scn.shape}.py"
    run = ["--headless", "--only-summary", "-u", users, "-r", users]
    run += ["-t", f"{planned:g}s", "--stop-timeout", str(STOP_TIMEOUT_S)]
    targets = ["--host", stack.bus_url, "--baseline-host", stack.baseline_url]
    targets += ["--redis-url", stack.redis_url, "--queue", ",".join(scn.queues)]
    targets += ["--channel", "default"]
    if scn.at_most_once_queue:
        targets += ["--queue", AMO_QUEUE]
    load = ["--rate", f"{scn.rate:g}", "--payload-bytes", str(scn.payload_bytes)]
    if scn.hang_share or scn.die_share:
        load += ["--hang-share", f"{scn.hang_share:g}", "--die-share", f"{scn.die_share:g}"]
    load += ["--bus-stats-interval", "0"]  # the runner accounts by id itself: locust quits at once
    report = ["--csv", str(out / "locust" / scn.name)]
    report += ["--html", str(out / "locust" / f"{scn.name}.html")]
    shape = list(scn.shape_args_for(planned))
    if scn.shape == "step":  # four steps, whatever the suite's duration
        shape += ["--step-users", str(int(users) // 4), "--step-s", f"{planned / 4:g}"]
    cmd = [sys.executable, "-m", "locust", "-f", files, *run, *targets, *load, *report]
    return [*cmd, *shape, *scn.users]


def env(stack: Stack, ledger: Path) -> dict[str, str]:
    """The environment locust gets beside the stack's: its ledger and the baseline's URL."""
    return {records.ENV_FILE: str(ledger), "LOADTEST_BASELINE_HOST": stack.baseline_url}


def wait_sending(tail: records.Tail, locust: Any, log: Path) -> float:
    """The wall-clock time locust's test started, from its ledger (bounded); fails with the end
    of its log if it does not start sending."""
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        for line in tail.poll():
            if line["k"] == "phase" and line["what"] == "start":
                return float(line["t"])
        if locust.poll() is not None:
            break
        time.sleep(0.05)
    text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise StackError(f"locust did not start sending; the end of its log:\n{text}")
