"""One scenario, start to finish: start the stack, run locust headless as a subprocess, apply the
faults on time, close the pub/sub streams, drain, stop everything, account by message id.

The runner never imports locust (it monkey-patches whatever imports it); it reads locust's
progress from the ledger the locustfile writes.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from loadtest import accounting, baseline, faults, records
from loadtest.scenarios import AMO_QUEUE, Fault, Scenario
from loadtest.stack import ROOT, Proc, Procs, Stack, StackError, Work, wait_until
from producer import decode, keys

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
STOP_TIMEOUT_S = 5  # locust --stop-timeout: stopping users finish the request in flight
START_WAIT_S = 30.0  # locust must start sending within this
THROUGH_EVERY_WEB_MAX = 400  # requests at most to reach every web process
SETTLE_S = 0.4  # the drain is over when nothing moved for this long


@dataclass
class Progress:
    """What the progress line shows; the runner updates it, a printer prints it."""

    label: str
    phase: str = "starting"
    elapsed_s: float = 0.0
    planned_s: float = 0.0
    rates: dict[str, float] = field(default_factory=dict)
    fault: str = ""


class Tail:
    """New whole lines of a growing ledger file, parsed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        whole = data[: data.rfind(b"\n") + 1]
        self.offset += len(whole)
        new = [json.loads(line) for line in whole.splitlines() if line]
        self.lines.extend(new)
        return new


def run_scenario(
    scn: Scenario, quick: bool, work: Path, out: Path, show: Callable[[Progress], None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``scn``; returns its summary entry and its series. Every process it started is
    stopped before it returns or raises."""
    planned = scn.duration_s(quick)
    progress = Progress(scn.name, planned_s=planned)
    procs = Procs()
    stack = Stack(procs, work, out / "logs" / scn.name, bus_env(scn))
    started = time.time()
    own_ledger = work / "records" / "runner.jsonl"
    try:
        _start(stack, scn)
        tails = {c.who: Tail(c.ledger) for c in stack.consumers}
        _open_streams(scn, stack, tails, own_ledger)
        windows = [faults.apply(stack, Fault(kind, 0.0)) for kind in scn.setup]
        sent = Tail(work / "records" / "locust.jsonl")
        locust = procs.start(
            "locust",
            locust_cmd(scn, quick, stack, out),
            stack.env(**locust_env(stack, sent.path)),
            stack.logs / "locust.log",
        )
        t0 = _wait_start(sent, locust.popen, stack.logs / "locust.log")
        for w in windows:
            w.start = w.end = t0
        _traffic(scn, stack, locust, t0, planned, sent, tails, windows, progress, show)
        traffic_end = max((s["t1"] for s in sent.lines if s["k"] == "sent"), default=t0)
        # Drain, then close the pub/sub streams (a subscriber still busy with a backlog could
        # lose the closing message too), then let the closing messages arrive.
        progress.phase, progress.fault = "draining", ""
        drain_end = _drain(stack, tails, progress, show, quick)
        if _close_streams(scn, stack, sent.lines, own_ledger):
            drain_end = _drain(stack, tails, progress, show, quick)
        exits = _exits(stack)
        # Everything but Redis, which stays up while workers put back what they hold and every
        # daemon writes its last counters.
        procs.stop_many([p for p in procs.all if p is not stack.redis_proc])
        leftovers, dead, stats = _read_redis(stack)
        stack.stop_redis()
    finally:
        procs.stop_all()
    obs = accounting.Observed(
        t0=t0,
        traffic_end=traffic_end,
        drain_end=drain_end,
        sent=[s for s in sent.lines + _all_lines(own_ledger) if s["k"] == "sent"],
        got={c.who: [g for g in _all_lines(c.ledger) if g["k"] == "got"] for c in stack.consumers},
        consumers=stack.consumers,
        leftovers=leftovers,
        dead=dead,
        stats=stats,
        exits=exits,
        faults=[w for w in windows if w.kind not in scn.setup],
    )
    rows, series = accounting.account(obs, (AMO_QUEUE,) if scn.at_most_once_queue else ())
    for w in windows:  # what became of the messages killed workers had in their hands
        if "in_hand" in w.detail:
            w.detail["in_hand_deliveries"] = {
                who: sum(1 for lines in obs.got.values() for g in lines if g.get("lid") == lid)
                for who, lid in w.detail["in_hand"].items()
            }
    fault_list = [_fault_entry(w, t0) for w in windows]
    entry = {
        "name": scn.name,
        "title": scn.title,
        "description": scn.description,
        "modes": list(scn.modes),
        "shape": scn.shape,
        "traffic_s": round(traffic_end - t0, 2),
        "elapsed_s": round(time.time() - started, 2),
        "faults": fault_list,
        "locust": _locust_figures(out, scn.name),
        "untracked_deliveries": accounting.untracked(obs),
        "rows": rows,
    }
    bins = len(next(iter(series.values()))["accepted"]) if series else 0
    times = [round(i * accounting.BIN_S, 2) for i in range(bins)]
    return entry, {"faults": fault_list, "t": times, "rows": series}


def _traffic(
    scn: Scenario,
    stack: Stack,
    locust: Proc,
    t0: float,
    planned: float,
    sent: Tail,
    tails: dict[str, Tail],
    windows: list[faults.Window],
    progress: Progress,
    show: Callable[[Progress], None],
) -> None:
    """While locust runs: start each fault on time (in a thread), show progress; bounded."""
    progress.phase = "traffic"
    pending = sorted(scn.faults, key=lambda f: f.at)
    threads: list[threading.Thread] = []
    hard_stop = t0 + planned + STOP_TIMEOUT_S + 30
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
    queues = "default" + (f",{AMO_QUEUE}" if scn.at_most_once_queue else "")
    return {**SETTINGS, "BUS_QUEUES": queues, "BUS_CHANNELS": "default"}


def locust_cmd(scn: Scenario, quick: bool, stack: Stack, out: Path) -> list[str]:
    """locust, headless, with this scenario's users, shape, rate and report files."""
    users = str(scn.users_per_class * len(scn.users))
    planned = scn.duration_s(quick)
    (out / "locust").mkdir(parents=True, exist_ok=True)
    files = f"loadtest/locustfile.py,loadtest/shapes/{scn.shape}.py"
    run = ["--headless", "--only-summary", "-u", users, "-r", users]
    run += ["-t", f"{planned:g}s", "--stop-timeout", str(STOP_TIMEOUT_S)]
    targets = ["--host", stack.bus_url, "--baseline-host", stack.baseline_url]
    targets += ["--redis-url", stack.redis_url, "--queue", "default", "--channel", "default"]
    if scn.at_most_once_queue:
        targets += ["--queue", AMO_QUEUE]
    load = ["--rate", f"{scn.rate:g}", "--payload-bytes", str(scn.payload_bytes)]
    load += ["--bus-stats-interval", "0"]  # the runner accounts by id itself: locust quits at once
    report = ["--csv", str(out / "locust" / scn.name)]
    report += ["--html", str(out / "locust" / f"{scn.name}.html")]
    shape = list(scn.shape_args)
    if scn.shape == "step":  # four steps, whatever the suite's duration
        shape += ["--step-users", str(int(users) // 4), "--step-s", f"{planned / 4:g}"]
    cmd = [sys.executable, "-m", "locust", "-f", files, *run, *targets, *load, *report]
    return [*cmd, *shape, *scn.users]


def locust_env(stack: Stack, ledger: Path) -> dict[str, str]:
    return {records.ENV_FILE: str(ledger), "LOADTEST_BASELINE_HOST": stack.baseline_url}


# --------------------------------------------------------------------------------------------


def _start(stack: Stack, scn: Scenario) -> None:
    stack.start_redis()
    stack.start_webs()
    work = Work(scn.handler_sleep_s)
    if "prodcons" in scn.modes:
        for i in (1, 2):
            stack.start_bus_worker(f"bus-w{i}", "default", "at-least-once", work)
            if scn.at_most_once_queue:
                stack.start_bus_worker(f"bus-amo-w{i}", AMO_QUEUE, "at-most-once", work)
        # As many naive workers as redis-bus has, for the same total load (the baseline has
        # one list, whatever queue the producer names).
        naive = 4 if scn.at_most_once_queue else 2
        for i in range(1, naive + 1):
            stack.start_baseline(f"baseline-w{i}", "prodcons", work)
    if "pubsub" in scn.modes:
        slow = Work(scn.slow_subscriber_sleep_s, windowed=True)
        for i in (1, 2):
            sub_work = slow if i == 2 and slow.sleep_s else work
            stack.start_bus_subscriber(f"bus-s{i}", sub_work)
            stack.start_baseline(f"baseline-s{i}", "pubsub", sub_work)
    stack.wait_ready()


def _wait_start(tail: Tail, locust: Any, log: Path) -> float:
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
    progress: Progress, elapsed: float, sent: Tail, tails: dict[str, Tail], stack: Stack
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


def _open_streams(scn: Scenario, stack: Stack, tails: dict[str, Tail], ledger: Path) -> None:
    """Before any traffic, one message from every web process to every subscriber: a gap
    counter takes a producer's first message as its baseline, so a subscriber cut off before it
    ever heard from a producer would not count those first losses."""
    if "pubsub" not in scn.modes:
        return
    lines = _through_every_web(stack, "open", None, ledger)
    lids = {line["lid"] for line in lines if line["out"] == "accepted"}
    subscribers = [c.who for c in stack.consumers if c.sys == "bus" and c.mode == "pubsub"]

    def heard_by_all() -> bool:
        for who in subscribers:
            tails[who].poll()
        return all(lids <= {g.get("lid") for g in tails[who].lines} for who in subscribers)

    wait_until(heard_by_all, "every subscriber to hear from every web process", 10)


def _close_streams(
    scn: Scenario, stack: Stack, lines: list[dict[str, Any]], ledger: Path
) -> list[dict[str, Any]]:
    """After the drain, one more message from every web process that published, so each
    subscriber's gap counter sees every loss (it counts a gap when a later message arrives)."""
    if "pubsub" not in scn.modes:
        return []
    srcs = {
        s["src"]
        for s in lines
        if s.get("k") == "sent" and s["sys"] == "bus" and s["mode"] == "pubsub" and s.get("src")
    }
    return _through_every_web(stack, "close", srcs, ledger)


def _through_every_web(
    stack: Stack, via: str, srcs: set[str] | None, ledger_path: Path
) -> list[dict[str, Any]]:
    """POST /pubsub on new connections until each web process in ``srcs`` (None: as many as
    gunicorn runs) has answered one; bounded. Every attempt goes to the ledger."""
    want = int(stack.bus_env["BUS_WEB_WORKERS"]) if srcs is None else len(srcs)
    ledger, lids = records.Ledger(ledger_path), records.Lids(f"{via}-")
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(seen & srcs if srcs is not None else seen) < want:
        if len(out) >= THROUGH_EVERY_WEB_MAX or time.monotonic() > deadline:
            break
        lid, t0 = lids.next(), records.now()
        status, body = _post(stack.bus_port, "/pubsub", {"payload": records.payload(lid)})
        ok = status == 202
        line = {
            "k": "sent",
            "sys": "bus",
            "mode": "pubsub",
            "via": via,
            "dest": "default",
            "lid": lid,
            "t0": t0,
            "t1": records.now(),
            "st": status,
            "out": "accepted" if ok else "unknown",
            "id": body.get("id"),
            "src": body.get("src"),
            "seq": body.get("seq"),
            "rc": body.get("receivers"),
            "err": None if ok else str(body.get("error", "no answer")),
        }
        ledger.write(**line)
        out.append(line)
        if ok:
            seen.add(body["src"])
    ledger.close()
    return out


def _post(port: int, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:  # a new connection each time, so the requests spread over gunicorn's workers
        conn.request(
            "POST",
            path,
            json.dumps(body),
            {"Content-Type": "application/json", "Connection": "close"},
        )
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    except (OSError, ValueError) as exc:
        return 0, {"error": str(exc)}
    finally:
        conn.close()


def _drain(
    stack: Stack,
    tails: dict[str, Tail],
    progress: Progress,
    show: Callable[[Progress], None],
    quick: bool,
) -> float:
    """Wait until the lists are empty (or have no live consumer) and no consumer handled
    anything for a while; bounded."""
    r = stack.admin()
    deadline = time.monotonic() + (8.0 if quick else 15.0)
    last_total, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        for t in tails.values():
            t.poll()
        total = sum(len(t.lines) for t in tails.values())
        if total != last_total:
            last_total, quiet_since = total, time.monotonic()
        waiting = _waiting(stack, r)
        progress.phase = f"draining ({waiting} in lists)"
        show(progress)
        if waiting == 0 and time.monotonic() - quiet_since >= SETTLE_S:
            break
        time.sleep(0.1)
    return time.time()


def _waiting(stack: Stack, r: redis.Redis) -> int:
    """Messages in lists that a live consumer could still take."""
    n = 0
    for queue in {c.dest for c in stack.consumers if c.sys == "bus" and c.mode == "prodcons"}:
        n += int(r.llen(keys.pending(queue)))
        for key in r.scan_iter(match=keys.processing_prefix(queue) + "*"):
            n += int(r.llen(key))
    if any(c.proc.alive() for c in stack.consumers if c.sys == "baseline" and c.mode == "prodcons"):
        n += int(r.llen(baseline.QUEUE))
    return n


def _exits(stack: Stack) -> dict[str, tuple[float | None, int, str]]:
    """Consumers that ended before the runner stopped them (a crash, or the fault's kill)."""
    out = {}
    for c in stack.consumers:
        if not c.proc.alive():
            code = c.proc.popen.returncode
            error = (
                "killed with SIGKILL by the fault"
                if c.proc.stopping
                else c.proc.last_error() or "no error printed"
            )
            out[c.who] = (c.proc.exited_at, code, error)
    return out


def _read_redis(stack: Stack) -> tuple[set[str], set[str], dict[str, dict[str, int]]]:
    """Lids still in lists, lids dead-lettered, and redis-bus consumers' final counters."""
    r = stack.admin()
    leftovers: set[str] = set()
    dead: set[str] = set()
    for queue in {c.dest for c in stack.consumers if c.sys == "bus" and c.mode == "prodcons"}:
        lists = [keys.pending(queue), *r.scan_iter(match=keys.processing_prefix(queue) + "*")]
        for key in lists:
            for raw in r.lrange(key, 0, -1):
                leftovers.add(_lid_of_envelope(raw))
        for entry in r.lrange(keys.dead(queue), 0, -1):
            dead.add(_lid_of_envelope(json.loads(entry).get("raw", "").encode()))
    leftovers.update(records.lid_of(raw) or "" for raw in r.lrange(baseline.QUEUE, 0, -1))
    stats = {}
    for c in stack.consumers:
        if c.sys == "bus":
            role = "worker" if c.mode == "prodcons" else "subscriber"
            ident = f"{c.dest}:{c.who}" if role == "worker" else c.who
            raw_stats = r.hgetall(keys.stats(role, ident))
            stats[c.who] = {_text(k): int(v) for k, v in raw_stats.items() if _text(v).isdigit()}
    return leftovers - {""}, dead - {""}, stats


def _lid_of_envelope(raw: bytes | str) -> str:
    try:
        return records.lid_of(decode(raw).payload) or ""
    except ValueError:
        return ""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _all_lines(path: Path) -> list[dict[str, Any]]:
    return list(records.read(path)) if path.exists() else []


def _fault_note(w: faults.Window) -> str:
    """The fault's details in a sentence, for the report."""
    d = w.detail
    if "killed" in d and "in_hand" in d:
        fates = []
        for who in d["killed"]:
            held, deliveries = d["in_hand"].get(who), d.get("in_hand_deliveries", {}).get(who)
            if held is None:
                fates.append(f"{who} (holding nothing)")
            else:
                fate = "then handled by another worker" if deliveries else "lost with it"
                fates.append(f"{who} (the message in its hands: {fate})")
        return "killed " + ", ".join(fates)
    if "killed" in d:
        return f"{d['killed']} connections closed"
    return ""


def _fault_entry(w: faults.Window, t0: float) -> dict[str, Any]:
    return {
        "kind": w.kind,
        "label": w.label,
        "start_s": round(w.start - t0, 2),
        "end_s": round(w.end - t0, 2),
        **({"detail": w.detail, "note": _fault_note(w)} if w.detail else {}),
    }


def _locust_figures(out: Path, name: str) -> dict[str, Any]:
    """Requests, failures and rate from locust's own CSV (its Aggregated row)."""
    figures: dict[str, Any] = {"html": f"locust/{name}.html"}
    path = out / "locust" / f"{name}_stats.csv"
    try:
        import csv

        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("Name") == "Aggregated":
                    figures.update(
                        requests=int(row["Request Count"]),
                        failures=int(row["Failure Count"]),
                        rps=round(float(row["Requests/s"]), 1),
                    )
    except (OSError, KeyError, ValueError):
        figures.update(requests=None, failures=None, rps=None)
    return figures


__all__ = ["ROOT", "Progress", "bus_env", "run_scenario", "wait_until"]
