"""One scenario, start to finish: start the stack, run locust headless as a subprocess, apply the
faults on time, close the pub/sub streams, drain, stop everything, account by message id.

The runner never imports locust (it monkey-patches whatever imports it); it reads locust's
progress from the ledger the locustfile writes.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from loadtest.ledger import records
from loadtest.report import accounting
from loadtest.runner import faults, gather, inhand, loadgen, memwatch, streams
from loadtest.runner.procs import Proc, Procs, StackError
from loadtest.runner.scenarios import AMO_QUEUE
from loadtest.runner.spec import Fault, Scenario
from loadtest.runner.stack import Stack, Work

SETTINGS = {  # redis-bus's deadlines in the load test: short, so faults resolve in seconds
    "BUS_BLOCK_TIMEOUT_S": "1",
    "BUS_WORKER_READ_TIMEOUT_S": "2",
    "BUS_HEALTH_CHECK_INTERVAL_S": "1",
    "BUS_PONG_DEADLINE_S": "1",
    "BUS_BACKOFF_BASE_S": "0.05",
    "BUS_BACKOFF_CAP_S": "0.5",
    "BUS_CONNECT_TIMEOUT_S": "1",
    "BUS_SOCKET_TIMEOUT_S": "1",
    "BUS_HEARTBEAT_INTERVAL_S": "0.5",
    "BUS_HEARTBEAT_TTL_S": "2",
    "BUS_REAPER_INTERVAL_S": "0.5",
    "BUS_STATS_INTERVAL_S": "0.5",
    "BUS_WEB_WORKERS": "4",
    "BUS_LOG_LEVEL": "INFO",
    "BUS_MAX_PAYLOAD_BYTES": "131072",
}
STOPPER = "stop-"  # name prefix of the threads that stop a scenario's processes


@dataclass
class Progress:
    """What the progress line shows; the runner updates it, a printer prints it."""

    label: str
    phase: str = "starting"
    elapsed_s: float = 0.0
    planned_s: float = 0.0
    rates: dict[str, float] = field(default_factory=dict)
    fault: str = ""


def fresh_logs(out: Path, name: str) -> Path:
    """The scenario's log directory under ``out``, emptied: its processes append to their logs
    (one restarted within the run goes on in the same file), and its checks read them, so an
    ``--out`` reused from an earlier run must not add that run's lines."""
    logs = out / "logs" / name
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    return logs


def run_scenario(
    scn: Scenario, quick: bool, work: Path, out: Path, show: Callable[[Progress], None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``scn``; returns its summary entry and its series. Every process it started is
    stopped before it returns or raises."""
    planned = scn.duration_s(quick)
    progress = Progress(scn.name, planned_s=planned)
    procs = Procs()
    stack = Stack(procs, work, fresh_logs(out, scn.name), bus_env(scn), shards=scn.cluster_shards,
                  redis_options=redis_options(scn))  # fmt: skip
    started = time.time()
    own_ledger = work / "records" / "runner.jsonl"
    watch: memwatch.MemWatch | None = None
    memory: memwatch.Samples | None = None
    hands: inhand.InHandWatch | None = None
    try:
        _start(stack, scn)
        tails = {c.who: records.Tail(c.ledger) for c in stack.consumers}
        streams.open_streams(scn, stack, tails, own_ledger)
        windows = [faults.apply(stack, Fault(kind, 0.0)) for kind in scn.setup]
        sent = records.Tail(work / "records" / "locust.jsonl")
        locust = procs.start(
            "locust",
            loadgen.command(scn, quick, stack, out),
            stack.env(**loadgen.env(stack, sent.path)),
            stack.logs / "locust.log",
        )
        t0 = loadgen.wait_sending(sent, locust.popen, stack.logs / "locust.log")
        for w in windows:
            w.start = w.end = t0
        if scn.memory_every_s:
            watch = memwatch.MemWatch(stack, memwatch.every_s(scn.memory_every_s, planned), t0)
        if scn.inhand_every_s:
            stats_s = float(SETTINGS["BUS_STATS_INTERVAL_S"])
            hands = inhand.InHandWatch(stack, scn.inhand_every_s, stats_s, t0)
        _traffic(scn, stack, locust, t0, planned, sent, tails, windows, progress, show)
        if watch is not None:
            memory = watch.finish()
        traffic_end = max((s["t1"] for s in sent.lines if s["k"] == "sent"), default=t0)
        # Drain, then close the pub/sub streams (a subscriber still busy with a backlog could
        # lose the closing message too), then let the closing messages arrive.
        progress.phase, progress.fault = "draining", ""

        def waiting_now(n: int) -> None:
            progress.phase = f"draining ({n} in lists)"
            show(progress)

        drain_end = gather.drain(stack, tails, quick, waiting_now, scn.drain_s)
        if streams.close_streams(scn, stack, sent.lines, own_ledger):
            drain_end = gather.drain(stack, tails, quick, waiting_now, scn.drain_s)
        in_hand = hands.finish() if hands is not None else None
        exits = gather.exits(stack)
        # The consumers first, while Redis is up: workers put back what they hold and every
        # daemon writes its last counters. The webs only need to go; they shut down while the
        # next scenario starts (the traffic is over and drained).
        procs.stop_many(
            [p for p in procs.all if not p.is_redis and p.name not in ("web", "baseline-web")]
        )
        leftovers, dead, stats = gather.read_redis(stack)
        stack.stop_redis()
        restarts = gather.restarts(stack)
    finally:
        if watch is not None:
            watch.stopping.set()
        if hands is not None:
            hands.stopping.set()
        # Whatever is still running is stopped in a thread that the interpreter waits for
        # before it exits, so nothing outlives the runner, even on Ctrl-C.
        threading.Thread(target=procs.stop_all, name=f"{STOPPER}{scn.name}").start()
    obs = accounting.Observed(
        t0=t0,
        traffic_end=traffic_end,
        drain_end=drain_end,
        sent=[s for s in sent.lines + gather.all_lines(own_ledger) if s["k"] == "sent"],
        got={
            c.who: [g for g in gather.all_lines(c.ledger) if g["k"] == "got"]
            for c in stack.consumers
        },
        doomed=[
            d for c in stack.consumers for d in gather.all_lines(c.ledger) if d["k"] == "doomed"
        ],
        consumers=stack.consumers,
        leftovers=leftovers,
        dead=dead,
        stats=stats,
        exits=exits,
        faults=[w for w in windows if w.kind not in scn.setup],
    )
    amo = (AMO_QUEUE,) if scn.at_most_once_queue else ()
    rows, series = accounting.account(obs, amo, scn.queues if len(scn.queues) > 1 else ())
    for w in windows:  # what became of the messages killed workers had in their hands
        if "in_hand" in w.detail:
            w.detail["in_hand_deliveries"] = {
                who: sum(1 for lines in obs.got.values() for g in lines if g.get("lid") == lid)
                for who, lid in w.detail["in_hand"].items()
            }
    fault_list = [gather.fault_entry(w, t0) for w in windows]
    entry = {
        "name": scn.name,
        "title": scn.title,
        "description": scn.description,
        "modes": list(scn.modes),
        "shape": scn.shape,
        "baseline": scn.baseline,
        "cluster_shards": scn.cluster_shards,
        "traffic_s": round(traffic_end - t0, 2),
        "elapsed_s": round(time.time() - started, 2),
        "faults": fault_list,
        "locust": gather.locust_figures(out, scn.name),
        "untracked_deliveries": accounting.untracked(obs),
        "rows": rows,
    }
    bins = len(next(iter(series.values()))["accepted"]) if series else 0
    times = [round(i * accounting.BIN_S, 2) for i in range(bins)]
    scenario_series: dict[str, Any] = {"faults": fault_list, "t": times, "rows": series}
    if scn.redis_timeout_s:
        entry["redis_timeout_s"] = scn.redis_timeout_s
    if memory is not None:
        entry["memory"] = memory.summary(memwatch.fit_from_s(planned))
        scenario_series["memory"] = memory.series()
    if scn.processes:
        entry["processes"] = scn.processes
        entry["restarts"] = restarts
    if in_hand is not None:
        entry["inhand"] = in_hand.summary()
        died = sorted(round(d["t"] - t0, 2) for d in obs.doomed if d.get("fate") == "die")
        scenario_series["inhand"] = {**in_hand.series(), "process_ends_s": died}
    return entry, scenario_series


def wait_stopped() -> None:
    """Return once every process of every scenario run so far is stopped."""
    for thread in threading.enumerate():
        if thread.name.startswith(STOPPER):
            thread.join()


def _traffic(
    scn: Scenario,
    stack: Stack,
    locust: Proc,
    t0: float,
    planned: float,
    sent: records.Tail,
    tails: dict[str, records.Tail],
    windows: list[faults.Window],
    progress: Progress,
    show: Callable[[Progress], None],
) -> None:
    """While locust runs: start each fault on time (in a thread), show progress; bounded."""
    progress.phase = "traffic"
    pending = sorted(scn.faults_for(planned), key=lambda f: f.at)
    threads: list[threading.Thread] = []
    hard_stop = t0 + planned + loadgen.STOP_TIMEOUT_S + 30
    while locust.popen.poll() is None:
        now = time.time()
        while pending and now - t0 >= pending[0].at * planned:
            fault = pending.pop(0)
            threads.append(_in_thread(stack, fault, fault.hold(planned), windows, progress))
        _tick(progress, now - t0, sent, tails, stack)
        show(progress)
        if now > hard_stop:
            raise StackError("locust did not stop on time")
        time.sleep(0.25)
    for t in threads:
        t.join(30)
    sent.poll()


def bus_env(scn: Scenario) -> dict[str, str]:
    """redis-bus's settings for ``scn``."""
    queues = ",".join(scn.queues) + (f",{AMO_QUEUE}" if scn.at_most_once_queue else "")
    return {**SETTINGS, **dict(scn.bus_settings), "BUS_QUEUES": queues, "BUS_CHANNELS": "default"}


def redis_options(scn: Scenario) -> tuple[str, ...]:
    """redis-server options of ``scn`` (kept across restarts: a CONFIG SET would not be)."""
    return ("--timeout", str(scn.redis_timeout_s)) if scn.redis_timeout_s else ()


# --------------------------------------------------------------------------------------------


def _start(stack: Stack, scn: Scenario) -> None:
    stack.start_redis()
    stack.start_webs(with_baseline=scn.baseline)
    work = Work(scn.handler_sleep_s)
    if "prodcons" in scn.modes:
        if len(scn.queues) > 1:  # one worker a queue
            for queue in scn.queues:
                stack.start_bus_worker(f"bus-w-{queue}", queue, "at-least-once", work)
        else:
            for i in (1, 2):
                stack.start_bus_worker(f"bus-w{i}", scn.queues[0], "at-least-once", work,
                                       scn.processes)  # fmt: skip
                if scn.at_most_once_queue:
                    stack.start_bus_worker(f"bus-amo-w{i}", AMO_QUEUE, "at-most-once", work)
        # As many naive workers as redis-bus has, for the same total load (the baseline has
        # one list, whatever queue the producer names).
        naive = 4 if scn.at_most_once_queue else 2
        for i in range(1, naive + 1 if scn.baseline else 1):
            stack.start_baseline(f"baseline-w{i}", "prodcons", work)
    if "pubsub" in scn.modes:
        slow = Work(scn.slow_subscriber_sleep_s, windowed=True)
        for i in (1, 2):
            sub_work = slow if i == 2 and slow.sleep_s else work
            stack.start_bus_subscriber(f"bus-s{i}", sub_work)
            if scn.baseline:
                stack.start_baseline(f"baseline-s{i}", "pubsub", sub_work)
    stack.wait_ready()


def _in_thread(
    stack: Stack, fault: Fault, hold_s: float, windows: list, progress: Progress
) -> threading.Thread:
    def run() -> None:
        progress.fault = fault.kind + (f" {fault.arg}" if fault.arg else "")
        try:
            windows.append(faults.apply(stack, fault, hold_s))
        except (redis.RedisError, OSError, StackError) as exc:
            print(f"\nfault {fault.kind} failed: {exc}", file=sys.stderr)
        finally:
            progress.fault = ""

    thread = threading.Thread(target=run, name=f"fault-{fault.kind}", daemon=True)
    thread.start()
    return thread


def _tick(
    progress: Progress,
    elapsed: float,
    sent: records.Tail,
    tails: dict[str, records.Tail],
    stack: Stack,
) -> None:
    """Update the rates of the progress line over the last few seconds."""
    sent.poll()
    for t in tails.values():
        t.poll()
    for c in stack.consumers:
        c.proc.alive()  # notes the exit time of one that died
    progress.elapsed_s = elapsed
    window_start = time.time() - 2.0
    recent = [s for s in sent.lines[-4000:] if s["k"] == "sent" and s["t0"] >= window_start]
    progress.rates = {
        sys_: sum(1 for s in recent if s["sys"] == sys_ and s["out"] == "accepted") / 2.0
        for sys_ in records.SYSTEMS
    }
    progress.rates["handled"] = (
        sum(
            sum(1 for g in t.lines[-2000:] if g.get("t", 0) >= window_start) for t in tails.values()
        )
        / 2.0
    )
