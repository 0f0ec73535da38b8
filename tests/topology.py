"""What the Redis Cluster and Sentinel topologies of the tests share (:mod:`tests.cluster_topology`,
:mod:`tests.sentinel_topology`): ports picked ahead, bounded waits, a failover's timing, and
:class:`Node`, a redis-server of its own directory on 127.0.0.1 (kill -9, SIGSTOP/SIGCONT,
restart on the same port and data).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.redisproc import RedisServer, free_port

HOST = "127.0.0.1"
SLOTS = 16384
CHECK_ERRORS = (redis.RedisError, OSError)


def redis_cli_binary() -> str | None:
    """Path of redis-cli, or None."""
    return shutil.which("redis-cli")


class PortPicker:
    """Free loopback ports, none handed out twice (a cluster needs 12 at once)."""

    def __init__(self) -> None:
        self.taken: set[int] = set()

    def take(self) -> int:
        for _ in range(100):
            port = free_port()
            if port not in self.taken:
                self.taken.add(port)
                return port
        raise RuntimeError("no distinct free port found")


def wait_until(check: Callable[[], list[str]], timeout_s: float, what: str) -> None:
    """Poll ``check`` (the problems still in the way) until it returns none; fail after
    ``timeout_s`` naming ``what`` and the last problems seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        problems = check()
        if not problems:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}: {problems}")
        time.sleep(0.05)


@dataclass
class FailoverTiming:
    """How long a failover took: until the new primary said so, and until all agreed."""

    promoted_s: float
    total_s: float

    def __str__(self) -> str:
        return f"promoted {self.promoted_s:.3f}s, converged {self.total_s:.3f}s"


class Node(RedisServer):
    """A redis-server of a topology: tracks SIGSTOP so checks skip it instead of hanging."""

    def __init__(self, workdir: Path, port: int, *args: str, appendonly: bool = True) -> None:
        # A primary waits repl-diskless-sync-delay (5 s by default) for more replicas before a
        # full sync; no replica here comes that late.
        more = ("--repl-diskless-sync-delay", "0") if appendonly else ()
        super().__init__(workdir, *more, *args, appendonly=appendonly)
        self.port = port
        self.paused = False

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.proc

    @property
    def alive(self) -> bool:
        """Running and not stopped by SIGSTOP."""
        return self.proc is not None and self.proc.poll() is None and not self.paused

    def admin(self) -> redis.Redis:
        """A client with short timeouts that decodes replies."""
        return self.client(decode_responses=True, socket_timeout=2, socket_connect_timeout=1)

    @property
    def role(self) -> str | None:
        """ROLE as the node itself says (``master``, ``slave``, ``sentinel``); None when down."""
        if not self.alive:
            return None
        try:
            with self.admin() as c:
                return str(c.execute_command("ROLE")[0])
        except CHECK_ERRORS:
            return None

    def replication(self) -> dict[str, Any]:
        with self.admin() as c:
            return dict(c.info("replication"))

    def pause(self) -> None:
        super().pause()
        self.paused = True

    def resume(self) -> None:
        super().resume()
        self.paused = False

    def start(self) -> Node:
        self.paused = False
        super().start()
        return self

    def kill(self) -> None:
        super().kill()
        self.paused = False

    def stop(self) -> None:
        try:
            super().stop()
        except subprocess.TimeoutExpired:
            super().kill()
        self.paused = False


def end_all(nodes: Iterable[Node], graceful: bool) -> None:
    """Stop (SIGTERM) or kill (SIGKILL) every node, each tried even when another fails."""
    errors: list[BaseException] = []
    for node in nodes:
        try:
            node.stop() if graceful else node.kill()
        except BaseException as e:
            errors.append(e)
            try:
                node.kill()
            except BaseException as again:
                errors.append(again)
    if errors:
        raise errors[0]


@dataclass
class Timer:
    """Seconds since creation, for printing what a step took."""

    started: float = field(default_factory=time.monotonic)

    def __call__(self) -> float:
        return time.monotonic() - self.started
