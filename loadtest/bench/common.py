"""What every bench section shares: result rows, a private redis-server, waiting, processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent.parent
PYTHON = sys.executable


@dataclass
class Result:
    """One measured figure. ``ref`` names the row of the same section it is compared to (the
    table prints value / ref's value); ``higher_is_better`` orients that ratio; ``target``
    states the goal in words, when there is one; ``extra`` keeps details for the JSON."""

    section: str
    name: str
    value: float
    unit: str
    ref: str | None = None
    higher_is_better: bool = True
    target: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Scale:
    """How big each section's run is: the full bench, or a smoke run of seconds."""

    smoke: bool = False

    def n(self, full: int, smoke: int) -> int:
        return smoke if self.smoke else full

    def s(self, full: float, smoke: float) -> float:
        return smoke if self.smoke else full


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 300,
             every_s: float = 0.005) -> None:  # fmt: skip
    """Poll ``predicate`` until true; raise after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(every_s)


class RedisServer:
    """A throwaway redis-server on a free loopback port, no persistence."""

    def __init__(self, *options: str) -> None:
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("redis-server is not installed (make bootstrap installs it)")
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="bench-redis-")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self._dir.name, *options],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        self.url = f"redis://127.0.0.1:{self.port}/0"
        client = self.client()

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}") from None
                return False

        wait_for(answers, "redis-server", timeout_s=10)

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db)

    def db_url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def close(self) -> None:
        stop(self.proc)
        self._dir.cleanup()


@contextlib.contextmanager
def redis_server(*options: str) -> Iterator[RedisServer]:
    server = RedisServer(*options)
    try:
        yield server
    finally:
        server.close()


def clean_env(**bus: str) -> dict[str, str]:
    """The environment for a child: ours without any ``BUS_*``, plus ``bus``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    env.update(bus)
    return env


def spawn(args: Sequence[str], env: dict[str, str] | None = None,
          quiet: bool = True) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start a child in its own session (so stopping it stops its children)."""
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(list(args), env=env, cwd=ROOT, stdout=out, stderr=out,
                            start_new_session=True)  # fmt: skip


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    """SIGTERM the child's session (started by :func:`spawn`), SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    _signal(proc, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        _signal(proc, signal.SIGKILL)
        proc.wait(5)


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:  # not a session leader, or gone
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)


def rss_kib(pid: int) -> int:
    """A process's resident set, KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
