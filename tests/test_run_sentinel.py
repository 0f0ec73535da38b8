"""`make run-sentinel`: the stack behind Sentinel under honcho serves, follows a failover, and
Ctrl-C stops every process; every process logs in as its own ACL user (replication and the
sentinels included), on the servers and on the sentinels, and neither refuses anything, before
or after the failover; a sentinel refuses anyone who does not log in, and a role a failover."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from loadtest.harness.ports import free_port, free_ports_in_a_row
from loadtest.harness.waits import wait_for
from tests.aclkit import ROLES
from tests.procs import ROOT, get_json
from tests.test_stack import alive, logged_pids, stack_pids

pytestmark = pytest.mark.slow


# A client's name (CLIENT SETNAME) -> the user it must be logged in as.
USER_BY_NAME = (
    ("bus:producer:web-", "bus-web"),
    ("bus:worker:", "bus-worker"),
    ("bus:subscriber:", "bus-subscriber"),
    ("sentinel-", "bus-sentinel"),
)


def passwords(run_dir: Path) -> dict[str, str]:
    """role -> password, from RUN_DIR/passwords.env (scripts/acl.sh generate)."""
    found = {}
    for line in (run_dir / "passwords.env").read_text().splitlines():
        name, _, value = line.partition("=")
        found[name.removeprefix("ACL_PASSWORD_").lower()] = value
    return found


def as_admin(port: int, run_dir: Path) -> redis.Redis:
    """A client of the server on ``port`` logged in as bus-admin."""
    return redis.Redis(port=port, username="bus-admin", password=passwords(run_dir)["admin"],
                       decode_responses=True, socket_timeout=2,
                       socket_connect_timeout=1)  # fmt: skip


def users_of_clients(port: int, run_dir: Path) -> set[str]:
    """The users of the server's clients (the one asking aside), each checked against its
    name: a web, worker, subscriber or sentinel connection under its role's user, a daemon's
    admin connection (bus:admin:<name>) under its worker's or subscriber's, a replica's link
    under bus-replica, nobody as the default user."""
    with as_admin(port, run_dir) as admin:
        me = admin.client_id()
        found: list[dict[str, Any]] = [c for c in admin.client_list() if int(c["id"]) != me]
    daemons = {c["name"].split(":", 2)[2]: c["user"] for c in found
               if c["name"].startswith(("bus:worker:", "bus:subscriber:"))}  # fmt: skip
    users = set()
    for client in found:
        name, user, flags = client["name"], client["user"], client["flags"]
        assert user != "default", client
        if "M" in flags:  # this replica's link to its primary: Redis's own
            continue
        expected = {want for prefix, want in USER_BY_NAME if name.startswith(prefix)}
        if name.startswith("bus:admin:"):
            daemon = daemons.get(name.removeprefix("bus:admin:"))
            expected = {daemon} if daemon else {"bus-worker", "bus-subscriber", "bus-tools"}
        if "S" in flags:
            expected = {"bus-replica"}
        assert expected and user in expected, (port, client)
        users.add(user)
    return users


def refusals(port: int, run_dir: Path) -> list[Any]:
    """The server's ACL LOG: what it refused anyone, failed logins included."""
    with as_admin(port, run_dir) as admin:
        return list(admin.acl_log())


def nobody_is_default(port: int) -> None:
    """A connection without AUTH is refused (NOAUTH): the default user has a password nobody
    has."""
    with (
        redis.Redis(port=port, socket_timeout=2) as plain,
        pytest.raises(redis.AuthenticationError),
    ):
        plain.ping()


def check_files(run_dir: Path, *paths: str) -> None:
    """RUN_DIR/env/<role>.env and ``paths`` (relative to RUN_DIR) exist, readable by their
    owner only (they hold passwords)."""
    files = [*sorted((run_dir / "env").glob("*.env")), *(run_dir / p for p in paths)]
    assert len(files) == len(ROLES) + len(paths), files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def servers_refused_the_rest(port: int, run_dir: Path, *users: str) -> None:
    """bus-replica and bus-sentinel (``users``), logged in with the passwords the stack wrote
    for the servers, are refused any key and FLUSHALL (each refusal an ACL LOG entry)."""
    texts = {
        "bus-replica": (run_dir / "replication.conf", r"^masterauth (\S+)$"),
        "bus-sentinel": (run_dir / "sentinel-auth.conf", r"^sentinel auth-pass bus (\S+)$"),
    }
    for user in users:
        path, pattern = texts[user]
        found = re.search(pattern, path.read_text(), re.M)
        assert found, path
        with redis.Redis(port=port, username=user, password=found[1], socket_timeout=2) as c:
            assert c.ping()
            for command in (("GET", "bus:{default}:pending"), ("SET", "x", "1"), ("FLUSHALL",)):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    c.execute_command(*command)


def sentinels_refuse_the_rest(port: int, run_dir: Path) -> None:
    """A sentinel asks everyone to log in (NOAUTH without, default refused), and a role's user
    may ask where the primary is but not order a failover (one ACL LOG entry)."""
    with (
        redis.Redis(port=port, socket_timeout=2) as plain,
        pytest.raises(redis.AuthenticationError),
    ):
        plain.ping()
    with (
        redis.Redis(
            port=port, username="default", password="x", protocol=2, socket_timeout=2
        ) as default,  # fmt: skip
        pytest.raises(redis.AuthenticationError),
    ):
        default.ping()
    tools = passwords(run_dir)["tools"]
    with redis.Redis(port=port, username="bus-tools", password=tools, socket_timeout=2) as c:
        assert c.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", "bus")
        with pytest.raises(redis.exceptions.NoPermissionError):
            c.execute_command("SENTINEL FAILOVER", "bus")


def status_as_tools(run_dir: Path) -> subprocess.CompletedProcess[str]:
    """``python -m consumers status --json`` after loading RUN_DIR/env/tools.env, as the
    README says."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUS_", "REDISCLI_"))}
    script = (f"set -a; . {run_dir}/env/tools.env; set +a; "
              "exec .venv/bin/python -m consumers status --json")  # fmt: skip
    return subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


# docs/sentinel.md's failover, as the operator: bus-admin's env file, then redis-cli.
FAILOVER = ("set -a; . .run/env/admin.env; set +a",
            "redis-cli -p 26399 --user bus-admin sentinel failover bus")  # fmt: skip


def failover(run_dir: Path, port: int) -> bool:
    """docs/sentinel.md's commands as written, from a directory whose .run is RUN_DIR, on the
    test's sentinel port; False while no replica qualifies yet (NOGOODSLAVE)."""
    here = run_dir.parent / "operator"
    if not here.exists():
        here.mkdir()
        (here / ".run").symlink_to(run_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUS_", "REDISCLI_"))}
    script = "\n".join(FAILOVER).replace("26399", str(port))
    done = subprocess.run(["bash", "-c", script], cwd=here, env=env, capture_output=True,
                          text=True, timeout=10)  # fmt: skip
    if "NOGOODSLAVE" in done.stdout:
        return False
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "OK", ""), done
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
    base, run_dir = f"http://127.0.0.1:{web}", tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUS_", "REDISCLI_"))}
    env.update(RUN_REDIS_PORT=str(primary), RUN_SENTINEL_PORT=str(sentinel_port),
               RUN_DIR=str(run_dir), BUS_WEB_BIND=f"127.0.0.1:{web}",
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
        assert users_of_clients(primary, run_dir) >= {"bus-web", "bus-worker", "bus-replica"}
        nobody_is_default(primary)
        sentinels_refuse_the_rest(sentinel_port, run_dir)
        sentinel = as_admin(sentinel_port, run_dir)
        # The sentinels learn of each other and of the replica's sync within their INFO period.
        wait_for(lambda: failover(run_dir, sentinel_port), 30, "the sentinels to accept a failover",
                 every_s=0.5)  # fmt: skip
        wait_for(lambda: master_port(sentinel) == primary + 1, 20, "the replica promoted",
                 every_s=0.2)  # fmt: skip
        after = push(base, "after", 20)
        wait_for(lambda: handled(base, after), 20, "handled after the failover", every_s=0.2)
        # The sentinels turn the old primary into a replica about 10 s after the promotion:
        # it logs in to the new primary as bus-replica.
        new = primary + 1

        def replicating() -> bool:
            with as_admin(primary, run_dir) as old:
                info = old.info("replication")
            link = info.get("master_port"), info.get("master_link_status")
            return info["role"] == "slave" and link == (new, "up")

        wait_for(replicating, 30, "the old primary to replicate the new one", every_s=0.5)
        every_role = {"bus-web", "bus-worker", "bus-subscriber", "bus-sentinel", "bus-replica"}
        wait_for(lambda: users_of_clients(new, run_dir) == every_role, 20,
                 "every role on the new primary, each as its own user", every_s=0.5)  # fmt: skip
        assert users_of_clients(primary, run_dir) >= {"bus-sentinel"}
        # The env files follow the failover; status is clean once the subscriber, back from
        # the old primary, has written its stats again.
        wait_for(lambda: status_as_tools(run_dir).returncode == 0, 30,
                 "status as bus-tools to exit 0", every_s=1)  # fmt: skip
        for port in (primary, new):
            assert refusals(port, run_dir) == [], (port, refusals(port, run_dir))
            nobody_is_default(port)
        # The sentinels refused only the test's own tries, every role's question answered.
        assert [(e["username"], e["object"]) for e in refusals(sentinel_port, run_dir)] == [
            ("bus-tools", "sentinel|failover"), ("default", "AUTH")]  # fmt: skip
        for port in ports[3:]:
            assert refusals(port, run_dir) == [], (port, refusals(port, run_dir))
        check_files(run_dir, "passwords.env", "users.acl", "sentinel-users.acl", "replication.conf",
                    *(f"sentinel-{p}/sentinel.conf" for p in ports[2:]))  # fmt: skip
        servers_refused_the_rest(new, run_dir, "bus-replica", "bus-sentinel")
        assert len(refusals(new, run_dir)) == 6
        pids = logged_pids(log_path.read_text())
        sessions.update(pids.values())
        os.kill(honcho.pid, signal.SIGINT)
        honcho.wait(15)
        wait_for(lambda: not any(alive(p) for p in pids.values()), 10, "no pid left")
        assert stack_pids(sessions, *ports) == set()
    finally:  # honcho starts each process in a session of its own: the log names them
        sessions.update(logged_pids(log_path.read_text()).values())
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait(5)
        for pid in stack_pids(sessions, *ports):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
