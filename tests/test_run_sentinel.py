"""`make run-sentinel`: the stack behind Sentinel under honcho serves, follows a failover, and
Ctrl-C stops every process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis
import requests

from tests.procs import ROOT, get_json, wait_for
from tests.redisproc import free_port
from tests.test_stack import alive, logged_pids, stack_pids

pytestmark = pytest.mark.slow


def free_ports_in_a_row(n: int) -> int:
    """The first of ``n`` consecutive ports free on 127.0.0.1 (the script numbers them so)."""
    for _ in range(100):
        first = free_port()
        rest = []
        for port in range(first + 1, first + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    break
            rest.append(port)
        if len(rest) == n - 1:
            return first
    raise AssertionError(f"no {n} free ports in a row")


def failover(sentinel: redis.Redis) -> bool:
    """SENTINEL FAILOVER; False while no replica qualifies yet (NOGOODSLAVE)."""
    try:
        sentinel.execute_command("SENTINEL FAILOVER", "bus")
    except redis.ResponseError as exc:
        if "NOGOODSLAVE" in str(exc):
            return False
        raise
    return True


def master_port(sentinel: redis.Redis) -> int:
    reply = sentinel.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", "bus")
    return int(reply[1])


def handled(base: str, msg_id: str) -> bool:
    record = get_json(f"{base}/api/messages/{msg_id}") or {}
    return record.get("state") == "handled"


def push(base: str, payload: object, within_s: float) -> str:
    """POST a tracked message until a 202 (503s are expected while a failover settles)."""
    deadline = time.monotonic() + within_s
    while True:
        resp = requests.post(f"{base}/prodcons", json={"payload": payload, "track": True},
                             timeout=5)  # fmt: skip
        if resp.status_code == 202:
            return str(resp.json()["id"])
        assert resp.status_code == 503, resp.text
        assert time.monotonic() < deadline, f"no 202 within {within_s} s: {resp.text}"
        time.sleep(0.2)


def test_run_sentinel_serves_follows_a_failover_and_stops(tmp_path: Path) -> None:
    primary, sentinel_port, web = free_ports_in_a_row(2), free_ports_in_a_row(3), free_port()
    base = f"http://127.0.0.1:{web}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    env.update(RUN_REDIS_PORT=str(primary), RUN_SENTINEL_PORT=str(sentinel_port),
               RUN_DIR=str(tmp_path / "run"), BUS_WEB_BIND=f"127.0.0.1:{web}",
               BUS_BLOCK_TIMEOUT_S="1", BUS_BACKOFF_CAP_S="0.5")  # fmt: skip
    ports = (primary, primary + 1, sentinel_port, sentinel_port + 1, sentinel_port + 2)
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        honcho = subprocess.Popen(
            ["bash", "scripts/run-sentinel.sh"], cwd=ROOT, env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    sessions = {honcho.pid}
    try:
        wait_for(lambda: get_json(base + "/readyz") is not None, 30, "/readyz", every_s=0.2)
        first = push(base, "before", 20)  # WAIT 1: the replica must be in sync first
        wait_for(lambda: handled(base, first), 20, "handled before the failover", every_s=0.2)
        sentinel = redis.Redis(port=sentinel_port, decode_responses=True)
        # The sentinels learn of each other and of the replica's sync within their INFO period.
        wait_for(lambda: failover(sentinel), 30, "the sentinels to accept a failover", every_s=0.5)
        wait_for(lambda: master_port(sentinel) == primary + 1, 20, "the replica promoted",
                 every_s=0.2)  # fmt: skip
        after = push(base, "after", 20)
        wait_for(lambda: handled(base, after), 20, "handled after the failover", every_s=0.2)
        pids = logged_pids(log_path.read_text())
        sessions.update(pids.values())
        os.kill(honcho.pid, signal.SIGINT)
        honcho.wait(15)
        wait_for(lambda: not any(alive(p) for p in pids.values()), 10, "no pid left")
        assert stack_pids(sessions, *ports) == set()
    finally:
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait(5)
        for pid in stack_pids(sessions, *ports):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
