"""The runner's processes: each started in a session of its own (so a Ctrl-C reaches only the
runner, which stops them in order), logged to a file, and tracked by pid until it is gone; and
the bound on the waits the stack starts them with.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from loadtest.harness.waits import wait_for
from producer.errors import BusError

ROOT = Path(__file__).resolve().parents[2]
READY_S = 15.0  # bound on every start-up wait


class StackError(BusError, RuntimeError):
    """A process did not start or did not become ready in time."""


def wait_until(predicate: Callable[[], object], what: str, timeout_s: float = READY_S) -> None:
    """Wait, bounded, until ``predicate`` holds (a Redis or socket error counts as "not yet");
    raise :class:`StackError` naming ``what``."""
    wait_for(predicate, timeout_s, what, ignore=(redis.RedisError, OSError), error=StackError)


@dataclass
class Proc:
    """One started process, its log, and when it was first seen gone."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    stopping: bool = False  # the runner (or a fault) ended it on purpose
    stop_signal: int = signal.SIGTERM
    exited_at: float | None = None  # wall clock when first seen exited
    is_redis: bool = False  # a redis-server: stopped after everything else

    def alive(self) -> bool:
        if self.popen.poll() is None:
            return True
        if self.exited_at is None:
            self.exited_at = time.time()
        return False

    def last_error(self) -> str:
        """The last line of its log that names an exception (for the report)."""
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        for line in reversed(lines):
            if "Error" in line or "Exception" in line:
                return line.strip()[-300:]
        return lines[-1].strip()[-300:] if lines else ""


class Procs:
    """Every process a run started, stopped by pid (and process group) whatever happens."""

    def __init__(self) -> None:
        self.all: list[Proc] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> Proc:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                cmd,
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.all.append(proc)
        with open(log.parent / "pids", "a") as pids:  # for whoever must check they are gone
            pids.write(f"{popen.pid} {name}\n")
        return proc

    def stop(self, proc: Proc, timeout_s: float = 8.0) -> None:
        """SIGTERM, wait, then SIGKILL its whole process group."""
        self.stop_many([proc], timeout_s)

    def stop_many(self, procs: list[Proc], timeout_s: float = 8.0) -> None:
        """Signal them all at once, wait for each, then SIGKILL any process group left."""
        for proc in procs:
            proc.stopping = True
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.popen.pid, signal.SIGCONT)  # a frozen process cannot exit
                    os.kill(proc.popen.pid, proc.stop_signal)
        deadline = time.monotonic() + timeout_s
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.popen.pid, signal.SIGKILL)  # gunicorn's workers, strays
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(5)

    def stop_all(self, timeout_s: float = 8.0) -> None:
        """Stop everything still running: all but Redis at once, then Redis (started first)."""
        running = [p for p in self.all if p.popen.poll() is None]
        self.stop_many([p for p in running if not p.is_redis], timeout_s)
        self.stop_many([p for p in running if p.is_redis], timeout_s)
