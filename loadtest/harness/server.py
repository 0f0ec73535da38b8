"""One redis-server on 127.0.0.1: its command line, and :class:`RedisServer`, a process of its
own directory (start, stop, kill -9, restart on the same port and data, SIGSTOP/SIGCONT)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from loadtest.harness.ports import HOST, free_port
from loadtest.harness.procs import stop
from loadtest.harness.waits import wait_for

CHECK_ERRORS = (redis.RedisError, OSError)  # what a check of a server that may be down meets
READY_S = 10.0  # bound on a start: the server answers PING
# A primary waits repl-diskless-sync-delay (5 s by default) for more replicas before a full sync;
# no replica of the harness comes that late.
NO_SYNC_DELAY = ("--repl-diskless-sync-delay", "0")


def redis_binary() -> str | None:
    """Path of redis-server, or None."""
    return shutil.which("redis-server")


def redis_cli_binary() -> str | None:
    """Path of redis-cli, or None."""
    return shutil.which("redis-cli")


def server_command(
    port: int,
    workdir: Path,
    *options: str,
    appendonly: bool = False,
    appendfsync: str = "always",
    logfile: str = "redis.log",
) -> list[str]:
    """redis-server on ``port`` of 127.0.0.1, data in ``workdir``, no RDB snapshots, AOF on with
    ``appendonly``; ``options`` last, so they override."""
    binary = redis_binary()
    if not binary:
        raise RuntimeError("redis-server is not installed (make bootstrap installs it)")
    return [
        binary, "--port", str(port), "--bind", HOST, "--dir", str(workdir), "--save", "",
        "--appendonly", "yes" if appendonly else "no", "--appendfsync", appendfsync,
        "--logfile", logfile, *options,
    ]  # fmt: skip


class RedisServer:
    """One redis-server on a loopback port (free, unless given), its data and log in
    ``workdir``; tracks SIGSTOP so that checks skip it instead of hanging."""

    def __init__(self, workdir: Path, *args: str, appendonly: bool = False,
                 port: int | None = None) -> None:  # fmt: skip
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.args = list(args)
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return self.db_url(0)

    def db_url(self, db: int) -> str:
        return f"redis://{HOST}:{self.port}/{db}"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        """The process id of the server started last."""
        assert self.proc, "the server was never started"
        return self.proc.pid

    @property
    def alive(self) -> bool:
        """Running and not stopped by SIGSTOP."""
        return self.proc is not None and self.proc.poll() is None and not self.paused

    def command(self) -> list[str]:
        return server_command(self.port, self.workdir, *self.args, appendonly=self.appendonly)

    def start(self) -> Self:
        """Start it (in a session of its own) and wait, bounded, until it answers."""
        self.paused = False
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = READY_S) -> None:
        """Wait until it answers PING; fail at once if it exited."""
        with self.client() as client:

            def answers() -> bool:
                try:
                    return bool(client.ping())
                except CHECK_ERRORS:
                    if self.proc is not None and self.proc.poll() is not None:
                        raise RuntimeError(f"redis-server on port {self.port} exited with "
                                           f"{self.proc.returncode}") from None  # fmt: skip
                    return False

            wait_for(answers, timeout_s, f"redis-server on port {self.port}")

    def client(self, **kwargs: object) -> redis.Redis:
        """An admin client (short timeouts, no retries); ``kwargs`` override."""
        opts: dict[str, object] = {
            "socket_timeout": 5, "socket_connect_timeout": 2, "retry": Retry(NoBackoff(), 0),
        }  # fmt: skip
        opts.update(kwargs)
        return redis.Redis(host=HOST, port=self.port, protocol=2, **opts)  # type: ignore[arg-type]

    def plain_client(self, db: int = 0) -> redis.Redis:
        """A client with redis-py's defaults (no socket timeout: what a user's code gets)."""
        return redis.Redis(host=HOST, port=self.port, db=db)

    def admin(self) -> redis.Redis:
        """A client with short timeouts that decodes replies."""
        return self.client(decode_responses=True, socket_timeout=2, socket_connect_timeout=1)

    @property
    def role(self) -> str | None:
        """ROLE as the server itself says (``master``, ``slave``, ``sentinel``); None when down."""
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

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM and wait (Redis fsyncs the AOF on the way out); SIGKILL if it lingers."""
        if self.proc and self.proc.poll() is None:
            self.resume()
            stop(self.proc, timeout_s, whole_session=False)
        self.paused = False

    def kill(self) -> None:
        """SIGKILL: no goodbye."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.paused = False

    def restart(self) -> None:
        """Stop and start again on the same port with the same data directory."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the black hole. Connections stay open, nothing answers."""
        assert self.proc
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False


@contextlib.contextmanager
def throwaway_server(*options: str) -> Iterator[RedisServer]:
    """A redis-server without persistence in a temporary directory, gone on leaving."""
    with tempfile.TemporaryDirectory(prefix="redis-") as tmp:
        server = RedisServer(Path(tmp), *options).start()
        try:
            yield server
        finally:
            server.stop()


class Topology:
    """Servers that start, stop and die together (a Sentinel set-up, a cluster); as a context
    manager, started on entry and killed on leaving."""

    def servers(self) -> list[RedisServer]:
        """Every server, in the order they are ended."""
        raise NotImplementedError

    def start(self, timeout_s: float = 30.0) -> Self:
        """Start every server and wait, bounded, until they work together; on any failure kill
        what was started."""
        try:
            self.bring_up(timeout_s)
        except BaseException:
            self.kill()
            raise
        return self

    def bring_up(self, timeout_s: float) -> None:
        """Start every server and wait, bounded, until they work together."""
        raise NotImplementedError

    def stop(self) -> None:
        """SIGTERM every server (SIGKILL when one does not go)."""
        end_all(self.servers(), graceful=True)

    def kill(self) -> None:
        """SIGKILL every server."""
        end_all(self.servers(), graceful=False)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.kill()


def end_all(servers: Iterable[RedisServer], graceful: bool) -> None:
    """Stop (SIGTERM) or kill (SIGKILL) every server, each tried even when another fails."""
    errors: list[BaseException] = []
    for server in servers:
        try:
            server.stop() if graceful else server.kill()
        except BaseException as e:
            errors.append(e)
            try:
                server.kill()
            except BaseException as again:
                errors.append(again)
    if errors:
        raise errors[0]
