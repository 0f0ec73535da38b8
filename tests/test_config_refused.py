"""What Redis refuses on a daemon's first connection is a setting to fix, not an outage.

A login Redis refuses (a wrong password, an unknown or disabled user, a password the server
does not expect), a user not allowed what connecting needs, and a client name Redis refuses stop
a worker or a subscriber that never connected with exit 78, naming the setting (never the
password), as a certificate the CA did not sign does. An invalid ``--name`` is refused before
connecting. A password that stops working after the first connection is retried (it may be
being rotated), and the daemon carries on once it works again. The tools say it in one line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from consumers import daemon as daemons
from consumers.daemon import Daemon
from consumers.subscriber import Subscriber
from consumers.worker import Worker
from loadtest.harness.ports import free_port
from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import Producer, Settings, keys, make_client
from tests.conftest import quick_settings
from tests.procs import Proc, project_env, read_records, run_cli

pytestmark = pytest.mark.slow

PASSWORD = "right-Passw0rd-4242"
WRONG = "wrong-Passw0rd-9876"
NEW = "rotated-Passw0rd-1717"
HANDLER = "tests.handlers_for_tests:record"


@pytest.fixture
def acl_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of its own with ACL users: ``bus`` (may do anything), ``sleeper``
    (disabled) and ``mute`` (may do anything but CLIENT, so not CLIENT SETNAME)."""
    server = RedisServer(tmp_path / "redis").start()
    admin = server.client()
    for user, rules in (
        ("bus", ["on", "+@all"]),
        ("sleeper", ["off", "+@all"]),
        ("mute", ["on", "+@all", "-client"]),
    ):
        admin.execute_command("ACL", "SETUSER", user, f">{PASSWORD}", "~*", "&*", *rules)
    yield server
    server.kill()


def url(server: RedisServer, user: str, password: str) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


def assert_no_password(text: str) -> None:
    for secret in (PASSWORD, WRONG, NEW):
        assert secret not in text, f"a password is shown:\n{text}"


# (case, user, password, what the message must name)
REFUSED = [
    ("wrong password", "bus", WRONG, "BUS_REDIS_URL"),
    ("unknown user", "nobody", PASSWORD, "BUS_REDIS_URL"),
    ("disabled user", "sleeper", PASSWORD, "BUS_REDIS_URL"),
    ("unexpected password", "", WRONG, "BUS_REDIS_URL"),
    ("no right to connect", "mute", PASSWORD, "ACL"),
]


@pytest.mark.parametrize("kind", ["worker", "subscriber"])
def test_a_refused_login_or_user_exits_78_naming_the_setting(
    kind: str, acl_server: RedisServer, spawn: Callable[..., Proc]
) -> None:
    """Each refusal stops the daemon at its first connection with exit 78 and one
    configuration error naming what to fix; no retry loop, no traceback, no password."""
    procs = {
        case: spawn(kind, url(acl_server, user, password), "--name", "n1", "--handler", HANDLER)
        for case, user, password, _ in REFUSED
    }
    deadline = time.monotonic() + 20
    for case, _, _, named in REFUSED:
        proc = procs[case]
        assert proc.wait(max(0.1, deadline - time.monotonic())) == 78, f"{case}:\n{proc.log()}"
        text = proc.log()
        assert "configuration error" in text and named in text, f"{case}:\n{text}"
        assert "reconnect attempt" not in text and "Traceback" not in text, f"{case}:\n{text}"
        assert_no_password(text)


@pytest.mark.parametrize("name", ["a b", "", "tab\there", "new\nline", "caf\u00e9", "bell\x07"])
def test_an_invalid_name_is_refused_before_connecting(name: str) -> None:
    """A name Redis would refuse as a client name (CLIENT SETNAME takes printable ASCII without
    spaces) is a configuration error at once, before any connection: nothing listens on the
    URL's port, so a daemon that tried to connect would retry forever."""
    env = project_env(f"redis://127.0.0.1:{free_port()}/0")
    for kind in ("worker", "subscriber"):
        done = run_cli(kind, "--name", name, env=env)
        assert done.returncode == 78, done.stderr
        assert "--name" in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1, done.stderr


def run_until_finished(daemon: Daemon, timeout_s: float = 10.0) -> BaseException | None:
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        assert daemon.finished.wait(timeout_s), f"{daemon.role} still running"
    finally:
        daemon.stop()
        thread.join(10)
    return daemon.failure


def test_a_name_redis_refuses_stops_the_daemon_with_a_configuration_error(
    redis_server: RedisServer, r: redis.Redis
) -> None:
    """The library path (a name given in code, or the host's name by default): Redis refuses
    the client name on the first connection; the daemon stops with ConfigurationRefused
    (exit 78 from the CLI) instead of reconnecting forever."""
    settings = quick_settings(redis_server.url)
    for daemon in (
        Worker(settings, "default", "a b", print),
        Subscriber(settings, ["default"], [], "a b", print),
    ):
        failure = run_until_finished(daemon)
        assert isinstance(failure, daemons.ConfigurationRefused), failure
        assert "client name" in str(failure) and "--name" in str(failure), failure
        assert daemon.stats.get("reconnects") == 0


def connected(kind: str, r: redis.Redis) -> bool:
    if kind == "worker":
        return r.zscore(keys.consumers("default"), "n1") is not None
    return int(r.pubsub_numsub(keys.channel("default"))[0][1]) == 1


@pytest.mark.parametrize("kind", ["worker", "subscriber"])
def test_a_password_that_stops_working_later_is_retried(
    kind: str, acl_server: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """Connected once, the daemon keeps retrying when its password stops working (a rotation
    in progress): it logs each refusal naming the setting, does not exit, and carries on once
    the password works again."""
    admin = acl_server.client()
    proc = spawn(kind, url(acl_server, "bus", PASSWORD), "--name", "n1", "--handler", HANDLER)
    wait_for(lambda: connected(kind, admin), 15, f"{kind} connected")
    admin.execute_command("ACL", "SETUSER", "bus", "resetpass", f">{NEW}")
    admin.execute_command("CLIENT", "KILL", "USER", "bus")
    wait_for(lambda: proc.log().count("refused the login") >= 3, 15, "three refused retries")
    assert proc.proc.poll() is None, proc.log()
    admin.execute_command("ACL", "SETUSER", "bus", f">{PASSWORD}")  # works again
    wait_for(lambda: "reconnected after" in proc.log(), 15, "reconnected")
    producer = Producer(make_client(Settings(redis_url=url(acl_server, "bus", NEW)), "producer"))
    wait_for(lambda: connected(kind, admin), 15, f"{kind} connected again")
    sent = producer.push({"n": 1}) if kind == "worker" else producer.publish({"n": 1})
    records = tmp_path / "records.jsonl"
    wait_for(lambda: read_records(records), 15, "the message handled")
    assert [x["id"] for x in read_records(records)] == [sent.envelope.id]
    assert proc.stop() == 0, proc.log()
    text = proc.log()
    assert "BUS_REDIS_URL" in text and "Traceback" not in text, text
    assert_no_password(text)


TOOLS = [["status"], ["worker", "--check"], ["reaper", "--once"], ["dead", "list"],
         ["message", "some-id"]]  # fmt: skip


def test_the_tools_say_a_refused_login_in_one_line(acl_server: RedisServer) -> None:
    """Every tool answers a wrong password with exit 69 and one line naming the login as the
    problem and where Redis is, without the password or a traceback."""
    env = project_env(url(acl_server, "bus", WRONG))
    for args in TOOLS:
        done = run_cli(*args, env=env)
        assert done.returncode == 69, (args, done.stderr)
        assert done.stderr.count("\n") == 1, (args, done.stderr)
        assert "refused the login" in done.stderr, (args, done.stderr)
        assert f"127.0.0.1:{acl_server.port}" in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr, (args, done.stderr)
        assert_no_password(done.stderr)
