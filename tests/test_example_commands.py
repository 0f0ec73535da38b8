"""The example's commands (examples/README.md), run as written against `make run`'s stack:
`make example` beside it, a job sent with curl and followed to its record and its image, then
the tools as bus-tools, as the example's README shows them.

The stack is tests/stackkit.py's (scripts/run.sh in a scratch checkout, on free ports). Only the
ports differ from the text: ``RUN_REDIS_PORT`` says where the stack's Redis is (the README's
"RUN_DIR and RUN_REDIS_PORT follow make run's"), and ``EXAMPLE_BIND`` moves the app from 8001.
``EXAMPLE_OUT`` keeps the image out of the checkout, ``EXAMPLE_STEP_S`` makes the job short.
tests/test_readme_commands.py checks that every command the example's README shows is here,
or named in EXAMPLE_ELSEWHERE.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from loadtest.harness.waits import wait_for
from tests.doctext import commands
from tests.stackkit import Stack, in_block, make_run_stack, stop  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow
EXAMPLE = "make example"
POST = (
    "curl -s -XPOST localhost:8001/render -H 'content-type: application/json' \\",
    '-d \'{"name": "cat", "size": 64}\'',
)
GET = "curl -s localhost:8001/render/18e6..."  # 18e6...: POST's id
TOOLS = "export BUS_REDIS_URL=$(scripts/acl.sh url tools .run)"
TOOL_LINES = (
    ".venv/bin/python -m consumers message <id> --queue renders",
    ".venv/bin/python -m consumers dead list --queue renders",
    ".venv/bin/python -m consumers status",
)
REPORT = "make example-report"
DEPENDS_ON = "make example-depends-on"
EXAMPLE_COVERED = {EXAMPLE, *commands(list(POST)), GET, TOOLS, *TOOL_LINES, REPORT, DEPENDS_ON}
EXAMPLE_ELSEWHERE = {
    ".venv/bin/pytest tests/test_example.py": "make test runs tests/test_example.py, its slow "
    "end-to-end tests too",
}


def test_the_examples_commands_work_against_make_run(stack: Stack, tmp_path: Path) -> None:
    """`make example` next to `make run`: the app answers, the curl job is queued (202 JSON with
    its id), its record goes to `handled` with the image's path and size, the image is there,
    and the tools show its record, no dead letters, and the queue; Ctrl-C stops both."""
    out = tmp_path / "out"
    env = {**stack.env, "RUN_REDIS_PORT": str(stack.redis_port), "EXAMPLE_OUT": str(out),
           "EXAMPLE_BIND": f"127.0.0.1:{stack.example_port}", "EXAMPLE_STEP_S": "0.02"}  # fmt: skip
    st = dataclasses.replace(stack, env=env)
    log = tmp_path / "example.log"
    proc = st.start(None, EXAMPLE, log)
    try:

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                app = requests.get(f"http://127.0.0.1:{st.example_port}/", timeout=2)
            except requests.ConnectionError:
                return False
            workers = st.stats().get("workers", [])
            return app.status_code == 200 and any(
                w["alive"] and w.get("queue") == "renders" for w in workers
            )

        wait_for(up, 60, "the example app and its worker", every_s=0.3)
        job = json.loads(st.run(None, *POST))
        assert job["queue"] == "renders" and job["status_url"] == f"/render/{job['id']}", job
        assert in_block(None, GET)

        def record() -> dict[str, Any]:
            got = subprocess.run(
                ["bash", "-c", st.as_here(GET).replace("18e6...", job["id"])], cwd=st.home,
                env=st.env, capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert got.returncode == 0, got
            return dict(json.loads(got.stdout))

        done = wait_for(lambda: (r := record())["state"] == "handled" and r, 30, "the job handled")
        assert done["progress"] == 1.0, done
        image = Path(done["result"]["path"])
        assert image == out / "cat-64.pgm" and image.stat().st_size == done["result"]["bytes"]

        shown = st.run_each(TOOLS, TOOL_LINES, "<id>", job["id"])
        assert job["id"] in shown[TOOL_LINES[0]] and "handled" in shown[TOOL_LINES[0]]
        assert "renders" in shown[TOOL_LINES[2]]
    finally:
        code = stop(proc, signal.SIGINT)  # Ctrl-C: the whole foreground group gets it
    text = log.read_text()
    # make itself ends as a Ctrl-C ends it; the app and the worker stop cleanly.
    assert code in (0, -signal.SIGINT) and "Traceback" not in text, text[-3000:]
    assert "worker.1 stopped (rc=0)" in text and "app.1 stopped (rc=0)" in text, text[-3000:]
    assert "NOPERM" not in text


def test_the_report_workflow_and_the_depends_on_pair_run_against_make_run(
    stack: Stack, tmp_path: Path
) -> None:
    """`make example-report` next to `make run`: the stand-in's first report ends in its CSV
    (the API's and the worker's users: bus-web and bus-worker, nothing refused), Ctrl-C stops
    both; `make example-depends-on` pushes its pair, prints both handled, and exits 0."""
    out = tmp_path / "out"
    env = {**stack.env, "RUN_REDIS_PORT": str(stack.redis_port), "REPORT_OUT": str(out),
           "REPORT_API_URL": f"http://127.0.0.1:{stack.example_port}"}  # fmt: skip
    st = dataclasses.replace(stack, env=env)
    log = tmp_path / "report.log"
    assert in_block(None, "make run", REPORT)
    proc = st.start(None, REPORT, log)
    try:

        def written() -> list[Path]:
            assert proc.poll() is None, log.read_text()
            return list(out.glob("hot-repositories-*.csv")) if out.exists() else []

        (csv_file,) = wait_for(written, 60, "the first report's CSV", every_s=0.3)
        lines = csv_file.read_text().splitlines()
        assert lines[0] == "rank,name,stars,language" and len(lines) == 11, lines
    finally:
        code = stop(proc, signal.SIGINT)
    text = log.read_text()
    assert code in (0, -signal.SIGINT) and "Traceback" not in text, text[-3000:]
    assert "worker.1 stopped (rc=0)" in text and "api.1 stopped" in text, text[-3000:]
    assert "NOPERM" not in text
    printed = st.run(None, DEPENDS_ON)
    assert printed.count(": handled {") == 2 and "'sent_to': 'ops@example.com'" in printed
    with st.admin() as admin:
        assert admin.acl_log() == []
