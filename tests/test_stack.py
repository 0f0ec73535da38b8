"""End-to-end: `make run`'s script under honcho, and gunicorn with a worker under load."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from loadtest.harness.ports import free_port
from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import keys
from tests.conftest import QUICK_ENV
from tests.procs import ROOT, Proc, get_json, project_env, read_records

pytestmark = pytest.mark.slow


def accepts(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, session id) of a process from /proc, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[3])


def alive(pid: int) -> bool:
    """os.kill(pid, 0) succeeds and the process is not a zombie awaiting its reaper."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def stack_pids(sessions: set[int], *redis_ports: int) -> set[int]:
    """Live processes in any of ``sessions``, or a redis-server on one of ``redis_ports``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = proc_stat(pid)
        if stat is None or stat[0] == "Z":
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ours = any(f":{port}" in cmd for port in redis_ports)
        if stat[1] in sessions or ("redis-server" in cmd and ours):
            found.add(pid)
    return found


def logged_pids(log: str) -> dict[str, int]:
    """The pids in honcho's log: each Procfile process, redis-server, gunicorn's workers."""
    pids = {m[1]: int(m[2]) for m in re.finditer(r"(\w+)\.1 started \(pid=(\d+)\)", log)}
    for m in re.finditer(r"Redis version=.*?pid=(\d+)", log):
        pids["redis-server"] = int(m[1])
    for i, m in enumerate(re.finditer(r"Booting worker with pid: (\d+)", log)):
        pids[f"gunicorn-worker-{i}"] = int(m[1])
    return pids


def start_run_sh(cwd: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """`make run`'s scripts/run.sh from ``cwd``, in a session of its own (run.sh execs honcho,
    so the pid is honcho's), its output in ``log_path``."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            ["bash", "scripts/run.sh"], cwd=cwd, env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def kill_stack(honcho: subprocess.Popen, sessions: set[int], *redis_ports: int) -> None:
    """SIGKILL what a run.sh stack left: honcho's session if it still runs, then any process of
    ``sessions`` or a redis-server on one of ``redis_ports``."""
    if honcho.poll() is None:
        os.killpg(honcho.pid, signal.SIGKILL)
        honcho.wait(5)
    for pid in stack_pids(sessions, *redis_ports):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_make_run_serves_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    """scripts/run.sh: both modes deliver end to end; SIGINT to honcho leaves no process behind."""
    redis_port, web_port = free_port(), free_port()
    base = f"http://127.0.0.1:{web_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    env.update(
        RUN_REDIS_PORT=str(redis_port),
        RUN_DIR=str(tmp_path / "run"),
        BUS_WEB_BIND=f"127.0.0.1:{web_port}",
        BUS_BLOCK_TIMEOUT_S="1",
    )
    log_path = tmp_path / "run.log"
    sessions: set[int] = set()
    honcho = start_run_sh(ROOT, env, log_path)
    sessions.add(honcho.pid)
    try:

        def ready() -> bool:
            assert honcho.poll() is None, f"run.sh exited early:\n{log_path.read_text()}"
            return get_json(base + "/readyz") is not None

        wait_for(ready, 30, "/readyz to answer 200", every_s=0.2)
        assert (tmp_path / "run" / "appendonlydir").is_dir()  # Redis data went to RUN_DIR
        resp = requests.post(base + "/prodcons", json={"payload": {"via": "run"}}, timeout=5)
        assert resp.status_code == 202, resp.text

        def subscribed() -> bool:
            stats = get_json(base + "/api/stats")
            return bool(stats) and stats["channels"]["default"]["subscribers"] == 1

        wait_for(subscribed, 20, "the subscriber to subscribe", every_s=0.2)
        resp = requests.post(base + "/pubsub", json={"payload": "hi"}, timeout=5)
        assert resp.status_code == 202 and resp.json()["receivers"] == 1, resp.text

        def handled() -> bool:
            totals = (get_json(base + "/api/stats") or {}).get("totals", {})
            return (
                totals.get("worker", {}).get("handled", 0) >= 1
                and totals.get("subscriber", {}).get("handled", 0) >= 1
            )

        wait_for(handled, 20, "worker and subscriber to count a handled message", every_s=0.2)
        cmdline = Path(f"/proc/{honcho.pid}/cmdline").read_bytes()
        assert b"honcho" in cmdline  # run.sh exec'd honcho: the pid Ctrl-C reaches
        pids = logged_pids(log_path.read_text())
        assert {"redis", "web", "worker", "subscriber", "redis-server"} <= set(pids), pids
        sessions.update(pids.values())  # each Procfile process leads a session of its own
        assert all(alive(p) for p in pids.values())

        started = time.monotonic()
        os.kill(honcho.pid, signal.SIGINT)  # what Ctrl-C in honcho's terminal delivers to it
        honcho.wait(15)
        left = 15 - (time.monotonic() - started)
        wait_for(lambda: not any(alive(p) for p in pids.values()), max(left, 0.5), "no pid left")
        assert stack_pids(sessions, redis_port) == set()
        assert not accepts(redis_port) and not accepts(web_port)
        log_text = log_path.read_text()
        assert "SIGINT received" in log_text
        assert "worker.1 stopped (rc=0)" in log_text, log_text
        assert "subscriber.1 stopped (rc=0)" in log_text, log_text
    finally:
        kill_stack(honcho, sessions, redis_port)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for this test alone."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


def test_fifty_concurrent_gets_all_delivered(
    own_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """50 concurrent GET /prodcons on production gunicorn: all 303, all 50 handled exactly once."""
    web_port = free_port()
    base = f"http://127.0.0.1:{web_port}"
    env = project_env(own_redis.url, **QUICK_ENV, BUS_WEB_BIND=f"127.0.0.1:{web_port}")
    gunicorn = Proc(
        [str(ROOT / ".venv" / "bin" / "gunicorn"), "-c", "web/gunicorn.conf.py", "web.wsgi:app"],
        env,
        tmp_path / "gunicorn.log",
    )
    try:
        worker = spawn("worker", own_redis.url, "--handler", "tests.handlers_for_tests:record",
                       "--name", "w1")  # fmt: skip

        def up() -> bool:
            assert gunicorn.proc.poll() is None, gunicorn.log()
            assert worker.proc.poll() is None, worker.log()
            return get_json(base + "/readyz") is not None

        wait_for(up, 30, "gunicorn to answer /readyz", every_s=0.1)
        barrier = threading.Barrier(50, timeout=20)

        def hit(_: int) -> int:
            barrier.wait()
            resp = requests.get(base + "/prodcons", allow_redirects=False, timeout=20)
            assert resp.headers.get("Location") == "/"
            return resp.status_code

        with ThreadPoolExecutor(max_workers=50) as pool:
            codes = list(pool.map(hit, range(50)))
        assert codes == [303] * 50

        records_path = tmp_path / "records.jsonl"
        admin = own_redis.client()
        pending, processing = keys.pending("default"), keys.processing("default", "w1")

        def drained() -> bool:
            done = [rec for rec in read_records(records_path) if rec["event"] == "handled"]
            return len(done) >= 50 and admin.llen(pending) == 0 and admin.llen(processing) == 0

        wait_for(drained, 30, "the worker to handle all 50 messages")
        records = [rec for rec in read_records(records_path) if rec["event"] == "handled"]
        assert len(records) == 50 and len({rec["id"] for rec in records}) == 50
        assert all(isinstance(rec["payload"], int) for rec in records)

        def web_counted() -> bool:
            totals = (get_json(base + "/api/stats") or {}).get("totals", {})
            return totals.get("web", {}).get("pushed") == 50

        wait_for(web_counted, 10, "the web processes' stats to count 50 pushes", every_s=0.2)
        admin.close()
    finally:
        gunicorn.stop()
