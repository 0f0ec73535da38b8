"""`make run`'s stack for the tests that run the documents' commands against it: started by
`scripts/run.sh` (what `make run` runs) in a scratch copy of the checkout on free ports, and the
helpers that check a command is shown as written before running it there (see
tests/test_readme_commands.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

import pytest
import redis

from loadtest.harness.ports import free_port
from loadtest.harness.waits import wait_for
from tests.doctext import SHELL_DOCUMENTS, all_text, sh_blocks
from tests.procs import ROOT, get_json
from tests.test_stack import kill_stack, logged_pids, start_run_sh


def in_block(env_line: str | None, *lines: str) -> bool:
    """True if one ```sh block of a document holds ``lines`` (as commands, in order, adjacent)
    after ``env_line`` (when given)."""
    for path in SHELL_DOCUMENTS:
        for cmds in sh_blocks(path.read_text(encoding="utf-8")):
            for i in range(len(cmds) - len(lines) + 1):
                if cmds[i : i + len(lines)] == list(lines) and (
                    env_line is None or env_line in cmds[:i]
                ):
                    return True
    return False


@dataclass
class Stack:
    home: Path  # the scratch checkout, cwd of every command
    env: dict[str, str]
    web_port: int
    redis_port: int
    log_path: Path
    example_port: int  # stands in for the example app's 8001 (examples/README.md)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def as_here(self, command: str) -> str:
        """``command`` with this stack's ports for the documents' 8000 and 6399."""
        command = command.replace("127.0.0.1:8000", f"127.0.0.1:{self.web_port}")
        command = command.replace("localhost:8000", f"localhost:{self.web_port}")
        command = command.replace("localhost:8001", f"localhost:{self.example_port}")
        return command.replace("-p 6399 ", f"-p {self.redis_port} ")

    def script(self, env_line: str | None, *lines: str) -> str:
        shown = all_text()
        assert in_block(env_line, *lines) or all(f"`{ln}`" in shown for ln in lines), lines
        body = "\n".join(self.as_here(line) for line in lines)
        return f"set -euo pipefail\n{env_line}\n{body}\n" if env_line else body + "\n"

    def run(self, env_line: str | None, *lines: str, timeout: float = 60) -> str:
        """Run a document's ``lines`` after ``env_line``; they must exit 0. Their stdout."""
        done = subprocess.run(
            ["bash", "-c", self.script(env_line, *lines)], cwd=self.home, env=self.env,
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        assert done.returncode == 0, (lines, done.returncode, done.stdout[-3000:], done.stderr)
        return done.stdout

    def run_each(self, env_line: str, lines: tuple[str, ...], placeholder: str,
                 value: str, timeout: float = 90) -> dict[str, str]:  # fmt: skip
        """Run each of a block's ``lines`` (shown after ``env_line``, in order) on its own after
        ``env_line``, ``placeholder`` replaced by ``value``; each must exit 0. Their stdout."""
        assert in_block(env_line, *lines), lines
        outputs = {}
        for line in lines:
            script = f"set -euo pipefail\n{env_line}\n{line.replace(placeholder, value)}\n"
            done = subprocess.run(
                ["bash", "-c", script],
                cwd=self.home, env=self.env, capture_output=True, text=True, timeout=timeout,
            )  # fmt: skip
            assert done.returncode == 0, (line, done.returncode, done.stdout, done.stderr)
            outputs[line] = done.stdout
        return outputs

    def start(self, env_line: str | None, line: str, log: Path) -> Popen:
        """Start a document's daemon command in the background (its own process group)."""
        with open(log, "wb") as out:
            return subprocess.Popen(
                ["bash", "-c", self.script(env_line, line).replace(line, exec_line(line))],
                cwd=self.home, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def stats(self) -> dict:
        return get_json(self.base + "/api/stats") or {}

    def admin(self) -> redis.Redis:
        """A client of the stack's Redis as bus-admin (its password from .run/passwords.env)."""
        lines = (self.home / ".run" / "passwords.env").read_text().splitlines()
        (password,) = [x.partition("=")[2] for x in lines if x.startswith("ACL_PASSWORD_ADMIN=")]
        return redis.Redis(port=self.redis_port, username="bus-admin", password=password,
                           decode_responses=True, socket_timeout=5)  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def stop(proc: Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    return proc.wait(timeout)


@pytest.fixture(name="stack")
def make_run_stack(tmp_path: Path) -> Iterator[Stack]:
    """`make run`'s scripts/run.sh in a scratch checkout, on free ports."""
    home = tmp_path / "checkout"
    home.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in (".run", ".git"):
            (home / entry.name).symlink_to(entry)
    redis_port, web_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUS_", "REDISCLI_"))}
    env.pop("RUN_DIR", None)
    for var in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS"):  # a user's shell, not `make test`'s: a make
        env.pop(var, None)  # inside make would print "Entering directory" into `make status | jq`
    env.update(
        PATH=f"{home / '.venv' / 'bin'}:{env['PATH']}",  # `python` as in an activated venv
        PYTHONUNBUFFERED="1",
        RUN_REDIS_PORT=str(redis_port),
        BUS_WEB_BIND=f"127.0.0.1:{web_port}",
        ACL_PATTERNS="orders.*",  # as the docs say to start it for the --pattern subscriber
    )
    log_path = tmp_path / "run.log"
    honcho = start_run_sh(home, {**env, "BUS_BLOCK_TIMEOUT_S": "1"}, log_path)
    # The commands get none of the stack's own settings: what they need is in .run/env/.
    run_env = {
        k: v for k, v in env.items() if k not in ("BUS_WEB_BIND", "RUN_REDIS_PORT", "ACL_PATTERNS")
    }
    st = Stack(home, run_env, web_port, redis_port, log_path, free_port())
    sessions = {honcho.pid}
    try:

        def ready() -> bool:
            assert honcho.poll() is None, f"run.sh exited early:\n{st.log()}"
            stats = st.stats()
            return bool(stats) and stats["channels"]["default"]["subscribers"] >= 1

        wait_for(ready, 60, "the stack to answer with its subscriber", every_s=0.2)
        sessions.update(logged_pids(st.log()).values())
        yield st
    finally:
        sessions.update(logged_pids(st.log()).values())
        if honcho.poll() is None:
            os.kill(honcho.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                honcho.wait(15)
        kill_stack(honcho, sessions, redis_port)


def exec_line(line: str) -> str:
    """``line`` run with exec (its process is the one started), through ``env`` when it sets
    variables first (``BUS_X=1 cmd``: exec takes no assignment)."""
    first = line.split(" ", 1)[0]
    return ("exec env " if "=" in first else "exec ") + line
