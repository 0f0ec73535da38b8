"""Project processes for tests: the daemons (``python -m consumers``) and gunicorn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from loadtest.harness.procs import stop

ROOT = Path(__file__).resolve().parent.parent


def project_env(redis_url: str, **extra: str) -> dict[str, str]:
    """The environment a project process gets in tests: this one, minus stray BUS_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    env.update({"BUS_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)})
    env.update(extra)
    return env


class Proc:
    """A subprocess with its output in a log file; always stopped at teardown."""

    def __init__(self, cmd: list[str], env: dict[str, str], log_path: Path) -> None:
        self.cmd = cmd
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in wait())
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout_s)
        finally:
            if self.proc.poll() is not None:
                self._log.close()

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL the whole session if it does not go."""
        code = stop(self.proc, timeout_s, whole_session=False)
        self._log.close()
        return code


def daemon_cmd(kind: str, *args: str, module: str = "consumers") -> list[str]:
    """``python -m consumers <kind> args...`` with this interpreter (or another module)."""
    return [sys.executable, "-m", module, kind, *args]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m consumers args...`` run to its end (30 s at the most), its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "consumers", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env=env,
    )


def read_records(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines written by tests.handlers_for_tests so far.

    A handler may be writing while the test reads, and Linux lets a read see part of a write: a
    last line without its newline is not written yet, so it is left for the next read."""
    if not path.exists():
        return []
    complete = path.read_text().rpartition("\n")[0]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def get_json(url: str) -> Any:
    """The JSON of a 200 answer, or None (not up yet, not ready, refused)."""
    try:
        resp = requests.get(url, timeout=2)
    except requests.RequestException:
        return None
    return resp.json() if resp.status_code == 200 else None
