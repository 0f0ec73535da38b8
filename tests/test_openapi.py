"""``/openapi.json`` describes every route of the app and nothing else, and schemathesis, run
against the app under gunicorn on a live Redis, finds every answer conforming to it: the
documented status codes, content types, headers and bodies, no unexpected 5xx, what the
description calls invalid refused with a 4xx and what it calls valid accepted."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from loadtest.harness.server import RedisServer
from producer import Settings
from tests.procs import ROOT
from tests.webapp import start_gunicorn
from web import create_app
from web.openapi import describe

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
TOKEN = "fuzz-token-0123456789abcdef"
# Every check but the two that need links between operations (none is described); examples,
# boundaries (coverage) and random fuzzing; a fixed seed, so a finding can be replayed.
ARGS = ("--checks", "all", "--exclude-checks", "use_after_free,ensure_resource_availability",
        "--phases", "examples,coverage,fuzzing", "--max-examples", "40", "--workers", "2",
        "--seed", "1", "--request-timeout", "10", "--no-color")  # fmt: skip


def routes() -> set[tuple[str, str]]:
    """(OpenAPI path, method) of every route the Flask app serves."""
    app = create_app(Settings())
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        found |= {(path, m.lower()) for m in (rule.methods or set()) & METHODS}
    return found


def test_the_description_names_every_route_and_nothing_else() -> None:
    spec = describe(Settings(queues=("default", "jobs"), channels=("default",)))
    described = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert described == routes()
    assert spec["openapi"].startswith("3.1")
    body = spec["paths"]["/prodcons"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["properties"]["queue"]["enum"] == ["default", "jobs"]


@pytest.mark.slow
@pytest.mark.parametrize("token", ["", TOKEN], ids=["open", "token"])
def test_schemathesis_finds_every_answer_conforming(tmp_path: Path, token: str) -> None:
    """Every operation, examples, boundaries and fuzzing; every check schemathesis has. With
    BUS_API_TOKEN set it sends the token, and also checks that the guarded operations refuse
    a request without it (ignored_auth)."""
    cli = [str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "tests" / "schemathesis_cli.py")]
    auth = ("-H", f"Authorization: Bearer {token}") if token else ()
    server = RedisServer(tmp_path / "redis").start()
    try:
        web, base = start_gunicorn(server.url, tmp_path / "gunicorn.log", BUS_API_TOKEN=token,
                                   BUS_QUEUES="default,jobs", BUS_WEB_WORKERS="2")  # fmt: skip
        try:
            done = subprocess.run(
                [*cli, "run", f"{base}/openapi.json", *ARGS, *auth],
                capture_output=True,
                text=True,
                timeout=300,
                cwd=tmp_path,
            )
        finally:
            web.stop()
        report = done.stdout + done.stderr
        (tmp_path / "schemathesis.txt").write_text(report)
        print(report[-3000:])
        assert done.returncode == 0, report[-6000:]
        log = (tmp_path / "gunicorn.log").read_text()
        assert "Traceback" not in log
        assert not token or token not in log + report.replace(f"Bearer {token}", "")
    finally:
        server.kill()
