"""Real redis-server processes for tests: start, stop, kill -9, restart, SIGSTOP/SIGCONT."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str | None:
    """Path of redis-server, or None."""
    return shutil.which("redis-server")


class RedisServer:
    """One redis-server on a free loopback port, its data and log in ``workdir``."""

    def __init__(self, workdir: Path, *args: str, appendonly: bool = False) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.args = list(args)
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = redis_binary()
        assert binary, "redis-server is not installed"
        cmd = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always", "--logfile", "redis.log", *self.args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.client().ping():
                    return
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def client(self, **kwargs: object) -> redis.Redis:
        """An admin client for the test itself (short timeouts, no retries)."""
        opts: dict[str, object] = {
            "socket_timeout": 5, "socket_connect_timeout": 2, "retry": Retry(NoBackoff(), 0),
        }  # fmt: skip
        opts.update(kwargs)
        return redis.Redis(host="127.0.0.1", port=self.port, protocol=2, **opts)  # type: ignore[arg-type]

    def stop(self) -> None:
        """SIGTERM and wait (Redis fsyncs the AOF on the way out)."""
        if self.proc and self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
            self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL: no goodbye."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        """Stop and start again on the same port with the same data directory."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the black hole. Connections stay open, nothing answers."""
        assert self.proc
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
