"""The faults, applied from the runner's own admin connection or by signals to redis-server and
to consumers. Each returns what happened and when (wall clock), for the report."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.harness import slots
from loadtest.runner.procs import StackError
from loadtest.runner.scenarios import SLOW_LIMIT
from loadtest.runner.spec import Fault
from loadtest.runner.stack import Consumer, Stack
from producer import keys

IDLE_TIMEOUT_S = 2
DEFAULT_BUFFER_LIMIT = "pubsub 32mb 8mb 60"  # Redis's default
IN_HAND_WAIT_S = 3.0  # how long worker-crash waits for a victim to hold a message


@dataclass
class Window:
    """A fault as it happened: wall-clock start and end, a label, and details."""

    kind: str
    label: str
    start: float
    end: float
    detail: dict[str, Any] = field(default_factory=dict)


def apply(stack: Stack, fault: Fault, hold_s: float = 0.0) -> Window:
    """Apply ``fault`` now; returns when it is over (after ``hold_s`` for a lasting one)."""
    r = stack.admin()
    start = time.time()
    if fault.kind == "idle-timeout":
        r.config_set("timeout", IDLE_TIMEOUT_S)
        return Window(fault.kind, f"CONFIG SET timeout {IDLE_TIMEOUT_S}", start, start)
    if fault.kind == "slow-subscriber":
        flag = stack.work / "slow.flag"
        r.config_set("client-output-buffer-limit", SLOW_LIMIT)
        flag.touch()
        try:
            time.sleep(hold_s)
        finally:
            flag.unlink(missing_ok=True)
            r.config_set("client-output-buffer-limit", DEFAULT_BUFFER_LIMIT)
        return Window(fault.kind, "slow subscribers, buffer limit", start, time.time())
    if fault.kind == "client-kill":  # arg: a client type, or several ("normal,pubsub")
        types = fault.arg.split(",")
        killed = sum(int(r.client_kill_filter(_type=t, skipme=True)) for t in types)
        label = f"CLIENT KILL TYPE {' + '.join(types)}"
        return Window(fault.kind, label, start, start, {"killed": killed})
    if fault.kind == "restart":
        stack.stop_redis()
        stack.start_redis()
        return Window(fault.kind, "Redis restarted", start, time.time())
    if fault.kind == "blackhole":
        stack.signal_redis(signal.SIGSTOP)
        try:
            time.sleep(hold_s)
        finally:
            stack.signal_redis(signal.SIGCONT)
        return Window(fault.kind, f"SIGSTOP {hold_s:g}s", start, time.time())
    if fault.kind == "idle":  # nothing to do: the load shape is silent; mark the window
        time.sleep(hold_s)
        return Window(fault.kind, f"{hold_s:g} s without a message", start, time.time())
    if fault.kind == "worker-crash":
        return _crash_workers(stack, start)
    if fault.kind == "cluster-failover":  # the shard that holds queue ``arg``
        try:
            detail = slots.failover(stack.node_ports, keys.pending(fault.arg))
        except slots.ClusterError as exc:
            raise StackError(str(exc)) from exc
        label = f"CLUSTER FAILOVER of {fault.arg}'s shard"
        return Window(fault.kind, label, start, time.time(), detail)
    raise ValueError(f"unknown fault {fault.kind!r}")


def _crash_workers(stack: Stack, start: float) -> Window:
    """SIGKILL the first worker of each kind (at-least-once, at-most-once, naive), each while
    a message is in its hands if that happens within a few seconds; all at once."""
    victims: list[Consumer] = []
    for kind in ("at-least-once", "at-most-once", "naive"):
        workers = [c for c in stack.consumers if c.mode == "prodcons" and c.delivery == kind]
        if len(workers) > 1:
            victims.append(workers[0])
    in_hand: dict[str, str | None] = {}
    threads = [threading.Thread(target=_kill_in_hand, args=(v, in_hand)) for v in victims]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    detail = {
        "killed": [v.who for v in victims],
        "in_hand": in_hand,
        "queues": {v.who: v.dest for v in victims},
    }
    return Window("worker-crash", "worker kill -9", start, time.time(), detail)


def _kill_in_hand(victim: Consumer, in_hand: dict[str, str | None]) -> None:
    """Freeze the victim, look at its ledger: holding a message, kill it; otherwise thaw it and
    look again a moment later (no race with the handler finishing meanwhile)."""
    pid = victim.proc.popen.pid
    victim.proc.stopping = True
    deadline = time.monotonic() + IN_HAND_WAIT_S
    while True:
        os.kill(pid, signal.SIGSTOP)
        _wait_stopped(pid)
        held = _holding(victim)
        if held is not None or time.monotonic() > deadline:
            break
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    victim.proc.popen.wait(5)
    in_hand[victim.who] = held  # the message it held when it died (None: nothing)


def _wait_stopped(pid: int) -> None:
    """Until the kernel shows ``pid`` stopped (a signal is delivered asynchronously)."""
    for _ in range(1000):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        if stat[stat.rindex(")") + 2] in "Tt":
            return
        time.sleep(0.0005)


def _holding(victim: Consumer) -> str | None:
    """The lid of the message ``victim`` started and has not finished, from its ledger."""
    try:
        with open(victim.ledger, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - 4096))
            tail = f.read()
    except OSError:
        return None
    lines = tail.split(b"\n")[:-1]  # whole lines only: the last element follows the last \n
    if size > len(tail):
        lines = lines[1:]  # the first one may be cut
    if not lines:
        return None
    entry = json.loads(lines[-1])
    return entry.get("lid") if entry.get("k") == "start" else None
