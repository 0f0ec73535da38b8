"""The shell commands the README and the docs pages show, run as written against the stack
they name (the example's README: tests/test_example_commands.py).

`scripts/run.sh` (what `make run` runs) starts the stack (tests/stackkit.py) in a scratch copy
of the checkout (a directory of symlinks to the checkout's files, with its own `.run/`), so the
documents' relative paths (`.run/env/tools.env`, `.venv/bin/...`, `make status`) work there as
they do in a checkout. Each step below is a command a document shows, copied here verbatim: the
test first checks that a document holds it (in a ```sh block, or in the prose for the few shown
inline), so a change to the documents' commands breaks this test until the step is updated. Each
step runs in `bash` from that directory, after the `set -a; . .run/env/<role>.env; set +a` line
its block shows, with a time limit, and must exit 0 and do what the text says. Only the ports
differ from the text: the stack's free ports stand in for 8000 (web) and 6399 (Redis), and
locust's `-t` is cut to a few seconds. Every command of every ```sh block (tests/doctext.py reads
them) is run here, or named in ELSEWHERE with the test that runs it, or in SKIPPED with the
reason it is not run.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from subprocess import Popen

import pytest
import requests

from loadtest.harness.waits import wait_for
from tests.doctext import all_text, commands, shown_commands, text_of
from tests.procs import ROOT
from tests.stackkit import Stack, in_block, make_run_stack, stop  # noqa: F401 (a fixture)
from tests.test_example_commands import EXAMPLE_COVERED, EXAMPLE_ELSEWHERE

pytestmark = pytest.mark.slow
WEB, WORKER, SUBSCRIBER, TOOLS, ADMIN, LOCUST = (
    f"set -a; . .run/env/{role}.env; set +a"
    for role in ("web", "worker", "subscriber", "tools", "admin", "locust")
)
LOCUST_BLOCK = ".venv/bin/locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 --headless"
# The documents' commands this test runs, verbatim (continuation lines apart).
POST = "curl -s -XPOST localhost:8000/prodcons -H 'content-type: application/json' -d '{\"payload\": 1}'"  # noqa: E501
KEYED = "curl -s -XPOST localhost:8000/prodcons -H 'content-type: application/json' -H 'Idempotency-Key: order-1042' -d '{\"payload\": {\"order\": 1042}}'"  # noqa: E501
PUBLISH = "curl -s -XPOST localhost:8000/pubsub -H 'content-type: application/json' -d '{\"payload\": {\"hi\": 2}}'"  # noqa: E501
SEED = "curl -si localhost:8000/prodcons | head -1"
STATS = "curl -s localhost:8000/api/stats"
TRACKED = (
    "curl -s localhost:8000/prodcons -H 'Content-Type: application/json' \\",
    '-d \'{"payload": {"pages": 40}, "track": true}\'',
)
RECORD = "curl -s 'localhost:8000/api/messages/5c0f...?queue=default'"  # 5c0f...: TRACKED's id
WIRE = (
    'redis-cli -p 6399 --user bus-web LPUSH \'bus:{default}:pending\' \'{"v":1,"id":"order-42","payload":{"order":42}}\'',  # noqa: E501
    'redis-cli -p 6399 --user bus-web PUBLISH bus:ch:default \'{"v":1,"id":"news-1","src":"newsroom","seq":1,"payload":"hi"}\'',  # noqa: E501
)
CUSTOM = "python -m consumers worker --queue default --handler myapp.jobs:send_mail"
HELP = ".venv/bin/python -m consumers worker --help"
DAEMONS = (
    (WORKER, ".venv/bin/python -m consumers worker --delivery at-most-once", "workers"),
    (WORKER, ".venv/bin/python -m consumers worker --concurrency 32", "workers"),
    (
        WORKER,
        ".venv/bin/python -m consumers worker --ordered --queue high --queue default",
        "workers",
    ),
    (
        WORKER,
        "BUS_SCHEDULE_FILE=deploy/schedules.example.toml .venv/bin/python -m consumers worker",
        "workers",
    ),
    (
        SUBSCRIBER,
        ".venv/bin/python -m consumers subscriber --channel default --pattern 'orders.*'",
        "subscribers",
    ),
)
TOOL_LINES = (
    ".venv/bin/python -m consumers worker --check",
    ".venv/bin/python -m consumers status",
    ".venv/bin/python -m consumers reaper --once",
    ".venv/bin/python -m consumers dead list --queue default",
    ".venv/bin/python -m consumers dead requeue --queue default",
    ".venv/bin/python -m consumers dead purge --queue default --yes",
    ".venv/bin/python -m consumers message <id>",
    ".venv/bin/python -m consumers message <id> --wait 60 --json",
)
STATUS = (
    "make status",
    'make status ARGS="--json" | jq .queues',
    TOOLS,
    ".venv/bin/python -m consumers status --watch 2",
)
REDIS_CLI = 'make redis-cli ARGS="llen bus:{default}:pending"'
LOCUST_ALL = LOCUST_BLOCK + " -u 50 -r 10 -t 30s"
LOCUST_PICK = (LOCUST_BLOCK + " \\", "-u 20 -r 20 -t 30s BusProdcons RedisPush")
LOADTEST_LIST = ".venv/bin/python -m loadtest list"
LOADTEST_REPORT = ".venv/bin/python -m loadtest report loadtest/reports/<timestamp>"
COVERED = EXAMPLE_COVERED | {
    *commands([WEB, WORKER, SUBSCRIBER, TOOLS, LOCUST]), POST, KEYED, PUBLISH, SEED, STATS,
    *commands(list(TRACKED)), RECORD, *WIRE, HELP, *(d[1] for d in DAEMONS), *TOOL_LINES,
    *STATUS, LOCUST_ALL, *commands(list(LOCUST_PICK)), LOADTEST_LIST, LOADTEST_REPORT,
}  # fmt: skip

# Commands the documents show that another test runs (as written, or as named), and which.
ELSEWHERE = EXAMPLE_ELSEWHERE | {
    ".venv/bin/python -m consumers worker --processes 2": "tests/test_supervisor.py runs "
        "`python -m consumers worker --processes N` against a Redis of its own",
    "make run": "tests/test_stack.py and the stack fixture below run scripts/run.sh, what "
        "`make run` runs after its bootstrap, on free ports",
    ".venv/bin/python -m loadtest run blackhole [--quick]":
        "tests/test_loadtest.py runs `python -m loadtest run blackhole --quick`",
    ".venv/bin/python -m loadtest run soak --duration 600":
        "tests/test_loadtest.py runs `python -m loadtest run soak --duration 20`",
    ADMIN: "tests/test_run_sentinel.py loads it before docs/sentinel.md's failover",
    "redis-cli -p 26399 --user bus-admin sentinel failover bus": "tests/test_run_sentinel.py "
        "runs it after bus-admin's env file, on its own sentinel port",
    "make loadtest-quick": "tests/test_loadtest.py runs `python -m loadtest run all --quick`, "
        "the command of make loadtest-quick",
    "curl -s -XDELETE 'localhost:8000/api/messages/5c0f...?queue=default'":
        "tests/test_cancel.py sends DELETE /api/messages/<id>?queue=default to the web app",
    ".venv/bin/python -m consumers message cancel <id>": "tests/test_cancel.py runs "
        "`python -m consumers message cancel <id>` against a Redis of its own",
}  # fmt: skip

# Commands the documents show that no test runs, and why.
SKIPPED = {
    "make test": "the test suite itself",
    "make loadtest": "every scenario and the 30-min soak (~37 min); make loadtest-quick runs "
        "every scenario but the soak, tests/test_loadtest.py the soak for 20 s",
    ".venv/bin/python -m consumers worker --queue default --handler myapp.jobs:handle":
        "myapp.jobs:handle is the reader's own handler (send_mail, from the docs, runs below)",
    ".venv/bin/locust -f loadtest/locustfile.py --host http://127.0.0.1:8000":
        "locust's interactive web UI on the fixed port 8089",
    ".venv/bin/locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 --headless "
    "-u 10 -r 10 -t 20s --tags seed": "the same users as the runs below, chosen by tag",
    ".venv/bin/locust -f loadtest/locustfile.py,loadtest/shapes/bursts.py --host "
    "http://127.0.0.1:8000 --headless -u 20 -r 20 -t 60s --burst 3 --idle 5 --stop-timeout 5":
        "a 60 s shape; the same users run in the steps",
    ".venv/bin/locust -f loadtest/locustfile.py,loadtest/shapes --class-picker "
    "--host http://127.0.0.1:8000": "interactive: a shape is chosen in the web UI",
}  # fmt: skip


def test_every_command_shown_is_run_or_accounted_for() -> None:
    """Each command of every ```sh block of the README and docs/*.md is run by a test here, run
    by the test ELSEWHERE names, or in SKIPPED with the reason; and every entry of those lists
    is still shown somewhere (a command the documents dropped leaves no stale entry)."""
    shown = shown_commands()
    accounted = COVERED | set(ELSEWHERE) | set(SKIPPED)
    for command, paths in shown.items():
        where = ", ".join(p.relative_to(ROOT).as_posix() for p in paths)
        assert command in accounted, f"{where} shows a command no test runs or skips: {command}"
    inline = all_text()
    for command in accounted:
        assert command in shown or f"`{command}`" in inline, f"no document shows {command}"
    assert set(ELSEWHERE).isdisjoint(SKIPPED) and COVERED.isdisjoint(SKIPPED)


def test_documented_commands_work_against_make_run(stack: Stack, tmp_path: Path) -> None:
    """Each documented command for `make run`'s stack exits 0 there and does what it says."""
    st = stack
    started = time.monotonic()

    # "Two commands": the web over HTTP.
    assert json.loads(st.run(None, POST))["queue"] == "default"
    first, again = (json.loads(st.run(None, KEYED)) for _ in range(2))  # a retry: sent once
    assert again == {**first, "repeat": True} and "repeat" not in first
    assert json.loads(st.run(None, PUBLISH))["receivers"] >= 1
    assert "303" in st.run(None, SEED)
    assert "queues" in json.loads(st.run(None, STATS))

    # "Wire format": redis-cli as bus-web; the stack's worker and subscriber get the messages.
    depth, receivers = (int(x) for x in st.run(WEB, *WIRE).split())
    assert depth >= 1 and receivers >= 1
    wait_for(lambda: re.search(r"worker\.1 .*id=order-42", st.log()), 20, "worker: order-42")
    wait_for(lambda: re.search(r"subscriber\.1 .*id=news-1", st.log()), 20, "subscriber: news-1")

    # "Using it from Python": the web's login, then the page's first Python block as written.
    python_page = text_of("python.md")
    send = re.search(r"\*\*Send\.\*\*.*?```python\n(.*?)```", python_page, re.S)
    assert send and in_block(None, WEB), "the Send block of python.md and its login"
    (tmp_path / "send.py").write_text(send[1])
    done = subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n{WEB}\npython {tmp_path / 'send.py'}"],
        cwd=st.home, env=st.env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0 and re.match(r"\S+ \d+\n", done.stdout), done

    # A custom worker, as bus-worker, with the page's own handler module (myapp/jobs.py).
    handlers = re.search(r"```python\n(import time\n\nfrom consumers.handlers import Reject.*?)```",
                         python_page, re.S)  # fmt: skip
    assert handlers, "the handler block of python.md"
    (st.home / "myapp").mkdir()
    (st.home / "myapp" / "jobs.py").write_text(handlers[1])
    assert f"`{WORKER}`, then\n`{CUSTOM}`" in python_page
    log = tmp_path / "custom.log"
    proc = st.start(WORKER, CUSTOM, log)
    try:

        def custom_up() -> bool:
            assert proc.poll() is None, log.read_text()
            workers = st.stats().get("workers", [])
            return any(w["alive"] and w["pid"] == proc.pid for w in workers)

        wait_for(custom_up, 30, "the custom worker's heartbeat", every_s=0.2)

        def mailed() -> bool:  # two workers share the queue: send until send_mail gets one
            requests.post(st.base + "/prodcons", json={"payload": {"to": "ada@example.com"}},
                          timeout=5)  # fmt: skip
            return "mail to ada@example.com (attempt 1)" in log.read_text()

        wait_for(mailed, 20, "send_mail to handle a message", every_s=0.3)
    finally:
        assert stop(proc) == 0, log.read_text()
    assert "NOPERM" not in log.read_text()

    # "Running consumers": daemons as bus-worker and bus-subscriber.
    assert "usage" in st.run(WORKER, HELP).lower()
    for env_line, line, rows in DAEMONS:
        log = tmp_path / f"{rows}.log"
        proc = st.start(env_line, line, log)
        try:
            state = "alive" if rows == "workers" else "listening"

            def up(
                rows: str = rows, state: str = state, proc: Popen = proc, log: Path = log
            ) -> bool:
                assert proc.poll() is None, log.read_text()
                pid = proc.pid
                return any(r["pid"] == pid and r["state"] == state for r in st.stats()[rows])

            wait_for(up, 30, f"{line} to be up", every_s=0.2)
        finally:
            assert stop(proc) == 0, log.read_text()

    # Tools, as bus-tools; the tracked message of tracked.md for `message <id>` and its record.
    tracked = json.loads(st.run(None, *TRACKED))["id"]
    assert in_block(None, RECORD)
    record = subprocess.run(
        ["bash", "-c", st.as_here(RECORD).replace("5c0f...", tracked)], cwd=st.home, env=st.env,
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert record.returncode == 0 and json.loads(record.stdout)["id"] == tracked, record
    outputs = st.run_each(TOOLS, TOOL_LINES, "<id>", tracked)
    status = outputs[".venv/bin/python -m consumers status"]
    assert f"127.0.0.1:{st.redis_port}" in status and "default" in status, status
    assert json.loads(outputs[TOOL_LINES[-1]])["state"] == "handled"

    # `consumers status`: make status, its JSON through jq, --watch until Ctrl-C.
    out = st.run(None, STATUS[0])
    assert f"127.0.0.1:{st.redis_port}" in out and "default" in out, out
    assert "default" in json.loads(st.run(None, STATUS[1]))
    assert in_block(None, *STATUS)
    log = tmp_path / "watch.log"
    proc = st.start(TOOLS, STATUS[3], log)
    wait_for(lambda: "default" in log.read_text(), 20, "a first view")
    time.sleep(2.5)  # and a redraw
    assert stop(proc, signal.SIGINT) == 0, log.read_text()

    # make redis-cli, as bus-admin (the example of make help).
    assert REDIS_CLI.removeprefix("make redis-cli ") in (ROOT / "Makefile").read_text()
    assert "`make redis-cli`" in text_of("README.md")
    assert re.fullmatch(r"\d+\n", st.run(None, REDIS_CLI))

    # Locust against make run, its direct users as bus-locust; a few seconds instead of 30.
    for lines, short in ((LOCUST_ALL,), "-t 5s"), (LOCUST_PICK, "-t 4s"):
        assert in_block(LOCUST, *lines), lines
        script = st.script(LOCUST, *lines).replace("-t 30s", short)
        done = subprocess.run(
            ["bash", "-c", script], cwd=st.home, env=st.env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=90,
        )  # fmt: skip
        out = done.stdout
        assert done.returncode == 0, out[-4000:]
        assert re.search(r"LPUSH\s+bus:\{default\}:pending\s+[1-9]\d*\s+0\(", out), out[-4000:]
        assert "AuthenticationError" not in out and "NOPERM" not in out, out[-4000:]
    assert not re.search(r"PUBLISH\s+bus:ch:default\s+[1-9]", out)  # picked: no RedisPublish
    # Their counters reached the bus's stats as role locust, and Redis refused nobody anything.
    with st.admin() as admin:
        assert admin.keys("bus:{stats}:locust:*"), admin.keys("bus:{stats}:*")
        assert admin.acl_log() == [], admin.acl_log()

    assert "NOPERM" not in st.log() and "NoPermission" not in st.log()
    print(f"the documented commands ran in {time.monotonic() - started:.1f} s")


def test_loadtest_list_and_report_as_shown(tmp_path: Path) -> None:
    """`loadtest list` names every scenario; `loadtest report <dir>` redraws a run's report (a
    copy of the saved sample stands in for loadtest/reports/<timestamp>)."""
    assert in_block(None, LOADTEST_LIST) and in_block(None, LOADTEST_REPORT)
    done = subprocess.run(["bash", "-c", LOADTEST_LIST], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and "blackhole" in done.stdout and "soak" in done.stdout, done
    run_dir = tmp_path / "20261123-204600"
    shutil.copytree(ROOT / "docs" / "reports" / "sample", run_dir)
    (run_dir / "report.md").unlink()
    command = LOADTEST_REPORT.replace("loadtest/reports/<timestamp>", str(run_dir))
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done
    assert (run_dir / "report.md").read_text().startswith("# redis-bus load test, 2026-11-23")


def test_acl_sh_shows_no_password_on_a_terminal(tmp_path: Path) -> None:
    """scripts/acl.sh url/password print the password only to a pipe ($(...)), *** to a
    terminal; its env files are mode 600 in a mode 700 directory and load into a shell."""
    acl = str(ROOT / "scripts" / "acl.sh")
    subprocess.run(["bash", acl, "generate", str(tmp_path)], check=True, timeout=30)
    subprocess.run(["bash", acl, "env", str(tmp_path)], check=True, timeout=30,
                   env={**os.environ, "RUN_REDIS_PORT": "6555"})  # fmt: skip
    password = subprocess.run(
        ["bash", acl, "password", "tools", str(tmp_path)], capture_output=True, text=True,
        check=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    assert re.fullmatch(r"[0-9a-f]{48}", password)
    for args in (["url", "tools"], ["password", "tools"]):
        primary, replica = pty.openpty()
        done = subprocess.run(["bash", acl, *args, str(tmp_path)], stdout=replica,
                              stderr=subprocess.PIPE, timeout=30)  # fmt: skip
        os.close(replica)
        shown = os.read(primary, 4096).decode()
        os.close(primary)
        assert done.returncode == 0 and "***" in shown and password not in shown, shown
        assert password not in done.stderr.decode()
    env_dir = tmp_path / "env"
    assert stat.S_IMODE(env_dir.stat().st_mode) == 0o700
    for role in ("web", "worker", "subscriber", "tools", "admin"):
        assert stat.S_IMODE((env_dir / f"{role}.env").stat().st_mode) == 0o600
    loaded = subprocess.run(
        ["bash", "-c", f"set -a; . {env_dir}/tools.env; set +a; echo $BUS_REDIS_URL"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    assert loaded == f"redis://bus-tools:{password}@127.0.0.1:6555/0"
