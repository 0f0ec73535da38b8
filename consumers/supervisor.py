"""``python -m consumers worker --processes N``: N worker processes under one supervisor.

Each child is a plain ``python -m consumers worker`` with the supervisor's own arguments but
``--processes`` and ``--name``: it is named ``<name>-1`` .. ``<name>-N`` after the supervisor
(``<host>-<pid>`` by default), so each holds its own lease, processing list and heartbeat, and a
restarted child takes back, under its name, what its previous process left in hand.

Restarts: a child that exits when the supervisor did not ask it to is started again under the
same name after a capped exponential backoff with full jitter, reset once a child has lived
:data:`STABLE_S`. Exit 76 (the worker gave up on stuck handlers and asks to be recycled) is
restarted at once; exit 78 (a bad setting, or what Redis refused on a first connection) is
not retried: the supervisor stops the other children and exits 78 itself.

Stopping: :meth:`Supervisor.stop` sends every child SIGTERM and waits for them up to
``stop_timeout_s`` + :data:`STOP_SLACK_S`, then SIGKILLs what is left. :meth:`Supervisor.kill`
SIGKILLs them at once. A child dies with the supervisor even when the supervisor is killed with
SIGKILL: it is started with ``PR_SET_PDEATHSIG`` set to SIGTERM (Linux), so it stops as on a
signal. Each child runs in a process group of its own: Ctrl-C in a terminal reaches the
supervisor alone, which passes it on once (twice would stop a child at once).

The supervisor is single-threaded: ``PR_SET_PDEATHSIG`` fires when the *thread* that started the
child ends, so every child is started from the thread that runs :meth:`Supervisor.run`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from producer import Backoff
from producer.errors import EXIT_CONFIG, EXIT_OK, EXIT_RECYCLE

log = logging.getLogger(__name__)

MAX_PROCESSES = 64  # --processes
RESTART_BASE_S = 0.5  # the first restart waits up to this long (full jitter)
RESTART_CAP_S = 30.0  # ... and none longer than this
STABLE_S = 30.0  # a child that lived this long starts its backoff afresh
STOP_SLACK_S = 2.0  # past the children's own stop timeout, before they are SIGKILLed
POLL_S = 0.1  # how often the supervisor looks at its children
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def child_names(name: str, processes: int) -> list[str]:
    """The children's names: ``<name>-1`` .. ``<name>-<processes>``."""
    return [f"{name}-{i}" for i in range(1, processes + 1)]


def child_args(argv: Sequence[str]) -> list[str]:
    """``argv`` (``worker ...``) without ``--processes`` and ``--name``, however they were
    written (``--name=x``, an abbreviation the worker's parser took): the children's own."""
    strip = argparse.ArgumentParser(add_help=False)
    strip.add_argument("--processes")
    strip.add_argument("--name")
    return strip.parse_known_args(list(argv))[1]


def describe_exit(returncode: int) -> str:
    """``exit code 1`` or ``killed by SIGKILL``, from a Popen returncode."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGTERM when its parent dies (Linux
    ``prctl(PR_SET_PDEATHSIG)``); None where there is no such call."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, not in it
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl: no signal will come
            os._exit(1)

    return preexec


@dataclass
class Child:
    """One slot: its name, its current process, when it may start again."""

    name: str
    backoff: Backoff = field(default_factory=lambda: Backoff(RESTART_BASE_S, RESTART_CAP_S))
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    start_at: float | None = 0.0  # None: not to be started again (stopping)


class Supervisor:
    """Runs ``python -m consumers <args> --name <name>-i`` for each i, restarting the ones
    that die, until :meth:`stop`."""

    def __init__(
        self,
        args: Sequence[str],
        name: str,
        processes: int,
        stop_timeout_s: float,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.args = list(args)
        self.environ = None if environ is None else dict(environ)  # None: this process's
        self.name = name
        self.children = [Child(n) for n in child_names(name, processes)]
        self.stop_timeout_s = stop_timeout_s
        self._stopping = False  # asked to stop: SIGTERM to every child, no more starts
        self._stop_deadline: float | None = None  # when what is left gets SIGKILLed
        self.exit_code = EXIT_OK
        self._preexec = die_with_parent()

    def stop(self) -> None:
        """Ask every child to stop (SIGTERM: finish the messages in hand); :meth:`run` then
        returns once they are gone (safe from a signal handler: the loop does the work)."""
        self._stopping = True

    def kill(self) -> None:
        """SIGKILL every child now (safe from a signal handler: system calls only)."""
        for child in self.children:
            if child.proc is not None and child.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.proc.pid, signal.SIGKILL)

    def run(self) -> int:
        """Start the children and supervise them until stopped; the exit status."""
        log.info("supervisor %s: starting worker processes %s", self.name,
                 ", ".join(c.name for c in self.children))  # fmt: skip
        while True:
            now = time.monotonic()
            for child in self.children:
                if child.proc is not None and child.proc.poll() is not None:
                    self._exited(child, child.proc.returncode, now)
            if self._stopping:
                if self._stop_step(now):
                    return self.exit_code
            else:
                for child in self.children:
                    if child.proc is None and child.start_at is not None and now >= child.start_at:
                        self._start(child, now)
            time.sleep(POLL_S)

    def _start(self, child: Child, now: float) -> None:
        cmd = [sys.executable, "-m", "consumers", *self.args, "--name", child.name]
        try:
            child.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                env=self.environ,
                preexec_fn=self._preexec,
                process_group=0,
            )
        except OSError as exc:  # out of processes or memory: as if it had died at once
            delay = child.backoff.next_delay_s()
            child.start_at = now + delay
            log.error("worker %s: could not start (%s); next attempt in %.2fs", child.name, exc,
                      delay)  # fmt: skip
            return
        child.started_at = now
        log.info("worker %s started (pid %d)", child.name, child.proc.pid)

    def _exited(self, child: Child, code: int, now: float) -> None:
        assert child.proc is not None
        pid, child.proc = child.proc.pid, None
        what = describe_exit(code)
        if self._stopping:
            log.info("worker %s (pid %d) stopped: %s", child.name, pid, what)
            return
        if code == EXIT_CONFIG:
            log.error(
                "worker %s (pid %d) ended with a configuration error (%s): not restarted; "
                "stopping the other workers, then exiting %d",
                child.name, pid, what, EXIT_CONFIG,
            )  # fmt: skip
            self.exit_code = EXIT_CONFIG
            self.stop()
            return
        if code == EXIT_RECYCLE:
            child.start_at = now
            log.warning("worker %s (pid %d) asks to be recycled (%s): restarting it now",
                        child.name, pid, what)  # fmt: skip
            return
        if now - child.started_at >= STABLE_S:
            child.backoff.reset()
        delay = child.backoff.next_delay_s()
        child.start_at = now + delay
        log.warning(
            "worker %s (pid %d) ended (%s) after %.1fs: restart %d in %.2fs",
            child.name, pid, what, now - child.started_at, child.backoff.failures, delay,
        )  # fmt: skip

    def _stop_step(self, now: float) -> bool:
        """One step of stopping: SIGTERM to every child (once), SIGKILL past the deadline; True
        once no child is left."""
        live = [c for c in self.children if c.proc is not None]
        if self._stop_deadline is None:
            self._stop_deadline = now + self.stop_timeout_s + STOP_SLACK_S
            names = ", ".join(c.name for c in live) or "no worker (none running)"
            log.info("supervisor %s: SIGTERM to %s", self.name, names)
            for child in self.children:
                child.start_at = None
                if child.proc is not None:
                    with contextlib.suppress(ProcessLookupError):
                        child.proc.send_signal(signal.SIGTERM)
        if not live:
            log.info("supervisor %s stopped", self.name)
            return True
        if now >= self._stop_deadline:
            waited_s = self.stop_timeout_s + STOP_SLACK_S
            names = ", ".join(c.name for c in live)
            log.warning("supervisor %s: %s still running after %.1fs: SIGKILL", self.name, names,
                        waited_s)  # fmt: skip
            self.kill()
            for child in live:
                assert child.proc is not None
                child.proc.wait()
                child.proc = None
        return False
