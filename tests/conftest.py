"""Fixtures: real redis-server processes on free loopback ports, settings, daemon processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient

from loadtest.harness.server import RedisServer, redis_binary
from producer import Settings
from tests.procs import Proc, daemon_cmd, project_env
from tests.webapp import MakeApp, apps


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session (tests that break Redis start their own)."""
    if redis_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing on CI: the bootstrap must install it")
        pytest.skip("redis-server not installed (run `make test`, which installs it); not on CI")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def r(redis_server: RedisServer) -> redis.Redis:
    """An admin client on an emptied session server."""
    client = redis_server.client()
    client.flushall()
    return client


@pytest.fixture
def fresh_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, with AOF on (for restarts, kills, black holes)."""
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    yield server
    server.kill()


def quick_settings(url: str, **overrides: object) -> Settings:
    """Settings with short deadlines so fault tests finish in seconds."""
    values: dict[str, object] = {
        "redis_url": url, "block_timeout_s": 1.0, "worker_read_timeout_s": 2.0,
        "backoff_base_s": 0.05, "backoff_cap_s": 0.5, "health_check_interval_s": 1.0,
        "pong_deadline_s": 1.0, "heartbeat_interval_s": 0.5, "heartbeat_ttl_s": 3.0,
        "stats_interval_s": 0.1, "connect_timeout_s": 1.0,
    }  # fmt: skip
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


QUICK_ENV = {
    "BUS_BLOCK_TIMEOUT_S": "1", "BUS_WORKER_READ_TIMEOUT_S": "2", "BUS_BACKOFF_BASE_S": "0.05",
    "BUS_BACKOFF_CAP_S": "0.5", "BUS_HEALTH_CHECK_INTERVAL_S": "1", "BUS_PONG_DEADLINE_S": "1",
    "BUS_HEARTBEAT_INTERVAL_S": "0.5", "BUS_HEARTBEAT_TTL_S": "3", "BUS_STATS_INTERVAL_S": "0.1",
    "BUS_CONNECT_TIMEOUT_S": "1",
}  # fmt: skip


@pytest.fixture
def settings(r: redis.Redis, redis_server: RedisServer) -> Settings:
    """Quick settings pointing at the (emptied) session server."""
    return quick_settings(redis_server.url)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start ``python -m consumers KIND ARGS`` against a URL; every one is stopped at teardown.

    The handler's record file is ``tmp_path / "records.jsonl"``; extra env entries override;
    ``module`` runs another entry point with the same arguments (``tests.skewed_clock``)."""
    procs: list[Proc] = []

    def start(kind: str, url: str, *args: str, module: str = "consumers", **env: str) -> Proc:
        full_env = project_env(url, **QUICK_ENV, TEST_BUS_RECORD=str(tmp_path / "records.jsonl"))
        full_env.update(env)
        log_path = tmp_path / f"{kind}-{len(procs)}.log"
        proc = Proc(daemon_cmd(kind, *args, module=module), full_env, log_path)
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        p.stop()


@pytest.fixture
def make_app() -> Iterator[MakeApp]:
    """Build web apps; each one's stats thread and pool are closed at teardown."""
    yield from apps()


@pytest.fixture
def client(make_app: MakeApp, settings: Settings) -> FlaskClient:
    """A test client of a web app on the emptied session server."""
    return make_app(settings).test_client()
