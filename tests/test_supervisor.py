"""``python -m consumers worker --processes N``: N worker processes under one supervisor.

Child i is a plain worker named ``<name>-i`` (its own lease, processing list and heartbeat). A
child that dies is started again under its name, and takes back what it had in hand; one that
asks to be recycled (76) comes back at once; a configuration error (78) ends them all with 78.
SIGTERM stops every child cleanly (exit 0); the children die with a supervisor killed by
SIGKILL. Real processes and real redis-server processes on 127.0.0.1 throughout.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from consumers.supervisor import child_args
from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import decode
from tests.ledger import Ledger, account, assert_at_least_once
from tests.procs import Proc, project_env, read_records, run_cli
from tests.queuekit import CONSUMERS, PENDING, SLOW, processing_lists, wait_drained, wait_started
from tests.test_stack import alive

pytestmark = pytest.mark.slow

BURN = "tests.handlers_for_tests:burn"
EXIT_ON_FIRST = "tests.handlers_for_tests:exit_on_first"
ONE_AT_A_TIME = {"BUS_BATCH_SIZE": "1"}  # with --concurrency 1: one message in hand per child
STOP_TIMEOUT_S = 3.0


def start_supervisor(spawn: Callable[..., Proc], url: str, n: int, *args: str, **env: str) -> Proc:
    """``python -m consumers worker --processes n args...``, one message in hand per child."""
    return spawn("worker", url, "--processes", str(n), "--concurrency", "1", *args,
                 **{**ONE_AT_A_TIME, "BUS_STOP_TIMEOUT_S": str(STOP_TIMEOUT_S), **env})  # fmt: skip


def children(supervisor: Proc) -> dict[str, int]:
    """The supervisor's live children: their --name -> pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(ppid) == supervisor.pid and state != "Z" and b"--name" in argv:
            found[argv[argv.index(b"--name") + 1].decode()] = int(entry.name)
    return found


def wait_registered(r: redis.Redis, supervisor: Proc, names: set[str]) -> dict[str, int]:
    """Wait until exactly ``names`` run under the supervisor and are in the queue's registry."""

    def up() -> dict[str, int] | None:
        assert supervisor.proc.poll() is None, supervisor.log()
        kids = children(supervisor)
        registered = {m.decode() for m in r.zrange(CONSUMERS, 0, -1)}
        return kids if set(kids) == names and registered == names else None

    return wait_for(up, 15, f"workers {sorted(names)} registered", every_s=0.05)


def test_help_and_usage_errors() -> None:
    """--help explains the option; a bad N, --processes with --check, or on the subscriber:
    exit 2 (argparse's usage error)."""
    help_text = run_cli("worker", "--help").stdout
    for words in ("--processes N", "<name>-i", "restarted under its name", "76", "78", "GIL"):
        assert words in help_text, words
    for args in (["0"], ["65"], ["two"], ["2", "--check"]):
        done = run_cli("worker", "--processes", *args)
        assert done.returncode == 2 and "--processes" in done.stderr, (args, done.stderr)
    assert run_cli("subscriber", "--processes", "2").returncode == 2


def test_children_get_the_same_options_but_processes_and_name() -> None:
    """However they were written (``--opt=value``, an abbreviation the parser took)."""
    argv = ["worker", "--queue", "a", "--proc=3", "--na", "x", "--log-level=DEBUG", "--queue", "b"]
    assert child_args(argv) == ["worker", "--queue", "a", "--log-level=DEBUG", "--queue", "b"]


def test_children_register_under_the_supervisors_name(
    spawn: Callable[..., Proc], redis_server: RedisServer, r: redis.Redis
) -> None:
    """Without --name the supervisor is <host>-<pid> and child i <host>-<pid>-i: each a worker
    in the registry and in `status --json`, each a child in a process group of its own."""
    supervisor = start_supervisor(spawn, redis_server.url, 3)
    base = f"{socket.gethostname()}-{supervisor.pid}"
    names = {f"{base}-{i}" for i in (1, 2, 3)}
    kids = wait_registered(r, supervisor, names)
    assert all(os.getpgid(pid) == pid for pid in kids.values())  # Ctrl-C reaches only the parent
    status = run_cli("status", "--json", env=project_env(redis_server.url))
    shown = {w["name"] for w in json.loads(status.stdout)["workers"]}
    assert names <= shown, status.stdout


def test_cpu_bound_messages_are_spread_over_the_children_each_handled_once(
    spawn: Callable[..., Proc], redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    """40 messages of 50 ms CPU each on 2 children: every one handled exactly once, and both
    children handled some."""
    supervisor = start_supervisor(spawn, redis_server.url, 2, "--name", "cpu", "--handler", BURN)
    kids = wait_registered(r, supervisor, {"cpu-1", "cpu-2"})
    ledger = Ledger(redis_server)
    ledger.push_many(40, cpu_s=0.05)
    records = wait_drained(r, tmp_path / "records.jsonl", ledger, n_workers=2)
    handled = Counter(x["id"] for x in records if x["event"] == "handled")
    assert set(handled) == set(ledger.accepted) and set(handled.values()) == {1}
    by_pid = Counter(x["pid"] for x in records if x["event"] == "handled")
    assert set(by_pid) == set(kids.values()), f"handled by {by_pid}, children {kids}"


def test_a_killed_child_comes_back_under_its_name_and_takes_back_its_message(
    spawn: Callable[..., Proc], redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    """kill -9 of a child in the middle of a message: the supervisor logs the signal and the
    delay and starts it again under the same name; the message comes back (attempt 2, from
    the list the name left), and every message is handled."""
    supervisor = start_supervisor(spawn, redis_server.url, 2, "--name", "k", "--handler", SLOW)
    kids = wait_registered(r, supervisor, {"k-1", "k-2"})
    ledger = Ledger(redis_server)
    first = ledger.push(sleep_s=2.0)
    ledger.push_many(6, sleep_s=0.2)
    victim = wait_started(tmp_path / "records.jsonl", first)["pid"]
    name = next(n for n, pid in kids.items() if pid == victim)
    os.kill(victim, signal.SIGKILL)
    again = wait_for(lambda: (p := children(supervisor).get(name)) not in (None, victim) and p,
                     5, f"{name} started again")  # fmt: skip
    records = wait_drained(r, tmp_path / "records.jsonl", ledger, n_workers=2)
    assert_at_least_once(account(records, ledger), 1, "one message in the killed child's hand")
    assert again in wait_registered(r, supervisor, {"k-1", "k-2"}).values()
    assert any(x["id"] == first and x["event"] == "handled" and x["attempt"] == 2 for x in records)
    assert f"worker {name} (pid {victim}) ended (killed by SIGKILL)" in supervisor.log()
    assert "restart 1 in" in supervisor.log()


def test_a_child_asking_to_be_recycled_comes_back_at_once(
    spawn: Callable[..., Proc], redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    """A child that exits 76 is started again without a backoff, under its name."""
    supervisor = start_supervisor(spawn, redis_server.url, 1, "--name", "rc",
                                  "--handler", EXIT_ON_FIRST)  # fmt: skip
    before = wait_registered(r, supervisor, {"rc-1"})["rc-1"]
    ledger = Ledger(redis_server)
    ledger.push(exit=76)
    records = wait_drained(r, tmp_path / "records.jsonl", ledger)
    assert [x["attempt"] for x in records if x["event"] == "handled"] == [2]
    assert f"worker rc-1 (pid {before}) asks to be recycled (exit code 76): restarting it now" in (
        supervisor.log()
    )
    assert "restart 1 in" not in supervisor.log()


def test_sigterm_stops_every_child_cleanly_and_exits_0(
    spawn: Callable[..., Proc], redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    """SIGTERM while each child has a message in hand: each finishes it and exits, the
    supervisor exits 0; no processing list, no registered worker, no message lost."""
    supervisor = start_supervisor(spawn, redis_server.url, 3, "--name", "t", "--handler", SLOW)
    kids = wait_registered(r, supervisor, {"t-1", "t-2", "t-3"})
    ledger = Ledger(redis_server)
    ledger.push_many(9, sleep_s=1.0)
    wait_for(lambda: len({x["pid"] for x in read_records(tmp_path / "records.jsonl")}) == 3,
             5, "a message in each child's hand")  # fmt: skip
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(STOP_TIMEOUT_S + 5) == 0, supervisor.log()
    assert not any(alive(pid) for pid in kids.values())
    assert processing_lists(r) == {} and r.zcard(CONSUMERS) == 0
    handled = {x["id"] for x in read_records(tmp_path / "records.jsonl") if x["event"] == "handled"}
    waiting = {decode(raw).id for raw in r.lrange(PENDING, 0, -1)}
    assert len(handled) >= 3 and handled | waiting == set(ledger.accepted)
    assert not handled & waiting


def test_a_child_still_busy_past_the_stop_timeout_does_not_hold_the_supervisor(
    spawn: Callable[..., Proc], redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    """SIGTERM while a child is in a 30 s handler, BUS_STOP_TIMEOUT_S=1: the child waits that
    long for the handler, then exits with the message back in the queue with attempt + 1, as
    after a crash; the supervisor exits 0 within the timeout and its 2 s of slack."""
    supervisor = start_supervisor(spawn, redis_server.url, 1, "--name", "late", "--handler",
                                  SLOW, BUS_STOP_TIMEOUT_S="1")  # fmt: skip
    kids = wait_registered(r, supervisor, {"late-1"})
    mid = Ledger(redis_server).push(sleep_s=30.0)
    wait_started(tmp_path / "records.jsonl", mid)
    started = time.monotonic()
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(1 + 2 + 3) == 0, supervisor.log()
    assert time.monotonic() - started < 1 + 2 + 1.5
    assert not alive(kids["late-1"])
    assert processing_lists(r) == {}
    assert [(e.id, e.attempt) for e in map(decode, r.lrange(PENDING, 0, -1))] == [(mid, 2)]


def test_a_childs_configuration_error_ends_the_supervisor_with_78(
    spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """A login Redis refuses: the children exit 78, the supervisor too, within seconds and
    without starting any again. A bad setting: 78 before any child starts."""
    server = RedisServer(tmp_path / "acl").start()
    try:
        server.client().execute_command("ACL", "SETUSER", "bus", "on", ">right-Passw0rd-1",
                                         "~*", "&*", "+@all")  # fmt: skip
        wrong = f"redis://bus:wrong-Passw0rd-2@127.0.0.1:{server.port}/0"
        started = time.monotonic()
        supervisor = start_supervisor(spawn, wrong, 2, "--name", "cf")
        assert supervisor.wait(15) == 78, supervisor.log()
        assert time.monotonic() - started < 10
        log = supervisor.log()
        assert log.count(" started (pid ") == 2 and "configuration error" in log, log
        assert "wrong-Passw0rd" not in log
    finally:
        server.kill()
    bad = project_env(server.url, BUS_BLOCK_TIMEOUT_S="nope")
    done = run_cli("worker", "--processes", "2", env=bad)
    assert done.returncode == 78 and "BUS_BLOCK_TIMEOUT_S" in done.stderr
    assert " started (pid " not in done.stderr


def test_children_die_with_a_supervisor_killed_by_sigkill(
    spawn: Callable[..., Proc], redis_server: RedisServer, r: redis.Redis
) -> None:
    """kill -9 of the supervisor: its children get SIGTERM from the kernel, stop and leave the
    registry within a few seconds."""
    supervisor = start_supervisor(spawn, redis_server.url, 2, "--name", "orphan")
    kids = wait_registered(r, supervisor, {"orphan-1", "orphan-2"})
    supervisor.signal(signal.SIGKILL)
    wait_for(lambda: not any(alive(pid) for pid in kids.values()), 5, "no child left")
    assert r.zcard(CONSUMERS) == 0


def test_a_second_signal_kills_the_children_and_exits_130(
    spawn: Callable[..., Proc], redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    """SIGTERM while a child is in a 30 s handler, then SIGINT: the children are killed at
    once, exit 130; the message stays in the child's processing list for the next start."""
    supervisor = start_supervisor(spawn, redis_server.url, 2, "--name", "s2", "--handler", SLOW)
    kids = wait_registered(r, supervisor, {"s2-1", "s2-2"})
    mid = Ledger(redis_server).push(sleep_s=30.0)
    wait_started(tmp_path / "records.jsonl", mid)
    supervisor.signal(signal.SIGTERM)
    wait_for(lambda: "SIGTERM to s2-1, s2-2" in supervisor.log(), 5, "the first signal passed on")
    supervisor.signal(signal.SIGINT)
    assert supervisor.wait(5) == 130, supervisor.log()
    wait_for(lambda: not any(alive(pid) for pid in kids.values()), 3, "no child left")
    assert sum(processing_lists(r).values()) == 1
