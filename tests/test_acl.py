"""The bus on a Redis with an ACL user per role (scripts/acl.sh, deploy/redis/users.acl): every
role does its normal work under its own user without one refused command, and each is refused
what it has no business doing."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import requests

from loadtest.harness.waits import wait_for
from loadtest.users.sending import Generator
from producer import keys
from tests.aclkit import AclRedis, generate
from tests.conftest import QUICK_ENV
from tests.procs import ROOT, Proc, get_json, project_env
from tests.webapp import start_gunicorn

pytestmark = pytest.mark.slow

PATTERN = "news.*"  # the subscriber's --pattern: PSUBSCRIBE needs it named in the ACL


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[AclRedis]:
    """A redis-server whose users are the ones `make run` generates (the default user's
    password known to nobody)."""
    acl_dir = tmp_path / "acl"
    server = AclRedis(tmp_path / "redis", acl_dir, generate(acl_dir, PATTERN)).start()
    yield server
    server.kill()


def tool(server: AclRedis, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m consumers ARGS`` as the bus-tools user."""
    env = project_env(server.url_for("tools"), **QUICK_ENV)
    return subprocess.run([sys.executable, "-m", "consumers", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def run_bus(server: AclRedis, spawn: Callable[..., Proc], tmp_path: Path) -> None:
    """The whole bus, each process under its role's user: web (push, publish, dashboard reads,
    a tracked message, priorities, messages waiting for others, a dead-letter requeue), a
    worker, a subscriber and the tools (a cancel among them)."""
    admin = server.client()
    gunicorn, base = start_gunicorn(server.url_for("web"), tmp_path / "gunicorn.log", **QUICK_ENV)
    try:
        handler = "tests.handlers_for_tests:work"
        worker = spawn("worker", server.url_for("worker"), "--name", "w1", "--handler", handler,
                       BUS_MAX_ATTEMPTS="1")  # fmt: skip
        subscriber = spawn("subscriber", server.url_for("subscriber"), "--name", "s1",
                           "--channel", "default", "--pattern", PATTERN)  # fmt: skip

        def subscribed() -> bool:
            assert worker.proc.poll() is None, worker.log()
            assert subscriber.proc.poll() is None, subscriber.log()
            stats = get_json(base + "/api/stats")
            return bool(stats) and stats["channels"]["default"]["subscribers"] == 1

        wait_for(subscribed, 20, "the subscriber to subscribe", every_s=0.1)

        def post(path: str, body: object) -> dict:
            resp = requests.post(base + path, json=body, timeout=5)
            assert resp.status_code == 202, resp.text
            return resp.json()

        tracked = post("/prodcons", {"payload": {"result": "done"}, "track": True})
        assert tracked["tracked"] is True
        post("/prodcons", {"payload": {"fail": True}, "priority": 3})  # requeued to its level
        post("/prodcons", {"payload": {"result": "later"}, "delay_s": 0.3, "priority": 9})
        post("/prodcons", {"payload": {"result": "urgent"}, "priority": 7})
        assert requests.get(base + "/prodcons", allow_redirects=False, timeout=5).status_code == 303
        assert requests.get(base + "/pubsub", allow_redirects=False, timeout=5).status_code == 303
        assert post("/pubsub", {"payload": "hi"})["receivers"] == 1
        admin.publish(keys.channel("default"), b"not an envelope")  # the subscriber's dead list

        def record() -> dict | None:
            found = get_json(f"{base}/api/messages/{tracked['id']}")
            return found if found and found.get("final") else None

        assert wait_for(record, 20, "the tracked message's final record")["state"] == "handled"
        # messages that wait for others: one released at once, one told by the worker, one
        # cancelled by the tools (its prerequisite cancelled)
        now = post("/prodcons", {"payload": {"result": "now"}, "after": [tracked["id"]]})
        first = post("/prodcons", {"payload": {"result": "first"}, "track": True})
        then = post("/prodcons", {"payload": {"result": "then"},
                                  "after": [{"queue": "default", "id": first["id"]}]})  # fmt: skip
        later = post("/prodcons", {"payload": {"result": "x"}, "track": True, "delay_s": 60})
        never = post("/prodcons", {"payload": {"result": "x"}, "after": [later["id"]]})
        assert (now["waiting_for"], never["waiting_for"]) == (0, 1)
        assert tool(server, "message", "cancel", later["id"]).returncode == 0
        assert get_json(f"{base}/api/messages/{never['id']}")["state"] == "cancelled"
        for sent in (now, then):
            wait_for(lambda s=sent: (get_json(f"{base}/api/messages/{s['id']}") or {}).get(
                "state") == "handled", 20, "a waiting message handled")  # fmt: skip

        def settled() -> dict | None:
            stats = get_json(base + "/api/stats")
            totals = (stats or {}).get("totals", {})
            done = (totals.get("worker", {}).get("handled", 0) >= 7
                    and totals.get("subscriber", {}).get("handled", 0) >= 2
                    and stats["queues"]["default"]["dead"] == 1)  # fmt: skip
            return stats if done else None

        wait_for(settled, 20, "7 handled, 1 dead letter, 2 received", every_s=0.2)
        wait_for(lambda: admin.llen(keys.channel_dead("default")) == 1, 10, "a pub/sub dead letter")
        assert get_json(base + "/api/history") is not None
        assert requests.get(base + "/metrics", timeout=5).status_code == 200
        dead = get_json(base + "/api/queues/default/dead")
        assert dead["total"] == 1, dead
        resp = requests.post(base + "/api/queues/default/dead/requeue", json={"count": 1},
                             timeout=5)  # fmt: skip
        assert resp.status_code == 200 and resp.json()["requeued"] == 1, resp.text
        wait_for(lambda: admin.llen(keys.dead("default")) == 1, 20, "the requeued one to die again")

        for args in (("status",), ("status", "--json"), ("reaper", "--once"), ("worker", "--check"),
                     ("dead", "list"), ("message", tracked["id"])):  # fmt: skip
            done = tool(server, *args)
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        assert "state:          handled" in tool(server, "message", tracked["id"]).stdout
        for proc in (worker, subscriber):
            assert proc.stop() == 0, proc.log()
        for args in (("dead", "requeue"), ("dead", "purge", "--yes")):  # no worker to fail it again
            done = tool(server, *args)
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        assert admin.llen(keys.dead("default")) == 0 and admin.llen(keys.pending("default")) == 1
    finally:
        gunicorn.stop()
    admin.close()


def test_every_role_works_under_its_own_user_and_is_refused_the_rest(
    acl_redis: AclRedis, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """The normal run refuses nothing (ACL LOG empty); the refusals are each one ACL LOG entry."""
    admin = acl_redis.client()
    assert admin.acl_log() == []
    with pytest.raises(redis.AuthenticationError):  # NOAUTH: nobody is the default user
        acl_redis.client(username=None, password=None).ping()
    run_bus(acl_redis, spawn, tmp_path)
    # locust's direct users: the load generator's Producer and its stats, as bus-locust
    generator = Generator()
    producer = generator.producer(acl_redis.url_for("locust"))
    producer.push({"n": 1})
    producer.push({"n": 2}, delay_s=30)
    producer.push({"n": 3}, track=True)
    producer.push({"n": 3.5}, priority=4)
    producer.publish({"n": 4})
    assert (
        producer.push({"n": 5}, key="k-5").envelope == producer.push({"n": 5}, key="k-5").envelope
    )
    assert producer.publish(6, key="p-6").envelope == producer.publish(6, key="p-6").envelope
    generator.flush_stats()
    # that one, and the one cancelled in run_bus (dropped when it is due)
    assert admin.keys("bus:{stats}:locust:*") and admin.zcard(keys.delayed("default")) == 2
    assert admin.acl_log() == [], admin.acl_log()

    web, worker = acl_redis.client_as("web"), acl_redis.client_as("worker")
    subscriber, tools = acl_redis.client_as("subscriber"), acl_redis.client_as("tools")
    locust = acl_redis.client_as("locust")
    refused = [
        (locust, ("LRANGE", keys.pending("default"), 0, -1)),
        (locust, ("HSET", "bus:{stats}:web:1", "pushed", 1)),
        (locust, ("DEL", keys.dead("default"))),
        (web, ("FLUSHALL",)),
        (web, ("LRANGE", keys.processing("default", "x"), 0, -1)),
        (web, ("SET", "other:key", "1")),
        (subscriber, ("LPUSH", keys.pending("default"), "x")),
        (worker, ("FLUSHDB",)),
        (worker, ("CONFIG", "SET", "maxmemory", "1")),
        (tools, ("SET", "other:key", "1")),
    ]
    for client, command in refused:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    assert len(admin.acl_log()) == len(refused)
    assert admin.dbsize() > 0 and admin.get("other:key") is None


def default_line(acl_dir: Path) -> str:
    """The generated file's ``user default`` line."""
    lines = (acl_dir / "users.acl").read_text().splitlines()
    (line,) = [x for x in lines if x.startswith("user default ")]
    return line


def test_the_default_user_cannot_be_used(acl_redis: AclRedis, tmp_path: Path) -> None:
    """The default user is on with every right (Redis 7.0 replays the AOF as it, and would
    refuse its MULTI/EXEC blocks otherwise: tests/test_restart_acl.py), yet nobody can be it: a
    connection without AUTH gets NOAUTH, AUTH default with any password (empty, another role's,
    the hash itself) fails, and its password is in no file: the file holds its SHA-256 only, a
    new one at each generation."""
    acl_dir = tmp_path / "acl"
    line = default_line(acl_dir)
    found = re.fullmatch(r"user default reset on ~\* &\* \+@all #([0-9a-f]{64})", line)
    assert found, line
    digest = found[1]
    admin = acl_redis.client()
    user = admin.acl_getuser("default")
    assert "on" in user["flags"] and "nopass" not in user["flags"], user
    assert user["passwords"] == [digest], user

    plain = acl_redis.client(username=None, password=None)  # no AUTH, and no retries
    for command in (("PING",), ("GET", "x"), ("SET", "x", "1"), ("ACL", "WHOAMI")):
        with pytest.raises(redis.AuthenticationError, match="Authentication required"):  # NOAUTH
            plain.execute_command(*command)
    guesses = ["", "default", "nopass", digest, *acl_redis.passwords.values()]
    for guess in guesses:
        for auth in (("AUTH", "default", guess), ("AUTH", guess)):  # AUTH <pw>: the default user
            if not guess and len(auth) == 2:
                continue  # AUTH "" is a syntax error, not a login
            with pytest.raises(redis.AuthenticationError, match="invalid username-password"):
                plain.execute_command(*auth)
    with pytest.raises(redis.AuthenticationError):
        acl_redis.client(username="default", password=digest).ping()
    plain.close()
    assert admin.exists("x") == 0

    stored = (acl_dir / "passwords.env").read_text()
    assert "DEFAULT" not in stored.upper().replace("ACL_PASSWORD_", "")
    hashes = {hashlib.sha256(pw.encode()).hexdigest() for pw in acl_redis.passwords.values()}
    assert digest not in hashes, "the default user shares a role's password"
    passwords = generate(acl_dir, PATTERN)  # as each `make run` does: the roles' are kept
    assert passwords == acl_redis.passwords
    again = default_line(acl_dir)
    assert again != line and again.startswith("user default reset on ~* &* +@all #"), again


def test_the_reaper_reaps_under_the_tools_user(acl_redis: AclRedis) -> None:
    """``reaper --once`` as bus-tools gives back a dead worker's list (expired heartbeat) and an
    unregistered worker's list (SCAN), and spares one whose lease is held, refusing nothing."""
    admin = acl_redis.client()
    q = "default"
    for name, n in (("stale", 2), ("unregistered", 3), ("leased", 1)):
        admin.lpush(keys.processing(q, name), *[f'{{"v":1,"id":"{name}{i}","payload":{i}}}'
                                                for i in range(n)])  # fmt: skip
    admin.zadd(keys.consumers(q), {"stale": 1})  # a heartbeat in 1970
    admin.set(keys.owner(q, "leased"), "a live worker", px=60_000)
    done = tool(acl_redis, "reaper", "--once")
    assert done.returncode == 0, done.stderr
    assert (
        "reaped stale: requeued 2" in done.stdout
        and "reaped unregistered: requeued 3" in done.stdout
    )
    assert admin.llen(keys.pending(q)) == 5 and admin.llen(keys.processing(q, "leased")) == 1
    assert admin.acl_log() == []
