"""Ending a child process that leads a session of its own (``start_new_session=True``), so that
what it started (gunicorn's workers, a shell's children) ends with it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def signal_session(proc: subprocess.Popen[bytes], sig: int) -> None:
    """``sig`` to the session ``proc`` leads, or to ``proc`` alone when it leads none; nothing
    when it is gone."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:  # not a session leader, or gone
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0, *,
         whole_session: bool = True) -> int | None:  # fmt: skip
    """SIGTERM to its whole session (or to ``proc`` alone, without ``whole_session``), wait up to
    ``timeout_s``, then SIGKILL the whole session; its exit code."""
    if proc.poll() is None:
        if whole_session:
            signal_session(proc, signal.SIGTERM)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            signal_session(proc, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode
