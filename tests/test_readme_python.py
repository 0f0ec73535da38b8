"""The Python the README and the docs pages show, run as written.

Every ```python block of the documents (tests/doctext.py reads them) is run by a test here:
"Using it from Python" (docs/python.md) in order, in one namespace, against a real
redis-server named by ``BUS_REDIS_URL`` (as a newcomer pastes them into a shell after
``export BUS_REDIS_URL=...``); the handler of "Tracked messages" with the kernel's test
context. What they print, push and report is checked. The example application's files, which
docs/example.md includes, are run by tests/test_example.py.
"""

from __future__ import annotations

import contextlib
import io
import re

import pytest
import redis

from consumers.tracking import Context
from loadtest.harness.server import RedisServer
from producer import decode, keys, new_envelope
from producer.store.tracking import read_record
from tests.doctext import DOCUMENTS, fenced, text_of

# The pages whose Python blocks the tests below run, and how many each shows.
RUN_HERE = {"python.md": 4, "tracked.md": 2, "workflows.md": 2}


INCLUDE = re.compile(r"--8<--\n(\S+)\n--8<--\n")  # a block that includes a file of the checkout


def snippets(page: str) -> list[str]:
    """The page's fenced Python blocks written in it (not included from a file), in order."""
    return [b for b in fenced(text_of(page), "python") if not INCLUDE.fullmatch(b)]


def run_blocks(page: str, blocks: list[str]) -> tuple[dict[str, object], list[str]]:
    """Run ``blocks`` of docs/``page`` in order, in one namespace, as a newcomer pastes them
    into a shell: the namespace, and the lines they printed."""
    namespace: dict[str, object] = {"__name__": "docs"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for block in blocks:
            exec(compile(block, f"docs/{page}", "exec"), namespace)
    return namespace, out.getvalue().splitlines()


def test_every_python_block_shown_is_run() -> None:
    """No document shows Python that no test runs: the pages of RUN_HERE hold the blocks written
    in a page, and every included block is a file of examples/ (tests/test_example.py,
    tests/test_example_report.py)."""
    written, included = {}, []
    for path in DOCUMENTS:
        blocks = fenced(path.read_text(encoding="utf-8"), "python")
        included += [m[1] for b in blocks if (m := INCLUDE.fullmatch(b))]
        if n := sum(not INCLUDE.fullmatch(b) for b in blocks):
            written[path.name] = n
    assert written == RUN_HERE
    assert included == ["examples/handlers.py", "examples/app.py", "examples/report.py",
                        "examples/depends_on.py"]  # fmt: skip


def test_the_python_page_has_its_snippets() -> None:
    blocks = snippets("python.md")
    assert "Producer.from_env()" in blocks[0] and "new_envelope" in blocks[3]


def test_the_python_page_runs_as_written(
    redis_server: RedisServer, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUS_REDIS_URL", redis_server.url)
    _, printed = run_blocks("python.md", snippets("python.md"))
    first_id, depth = printed[0].split()
    assert re.fullmatch(r"[0-9a-f]{32}", first_id) and depth == "1"
    assert printed[2] == "True True"  # the keyed push's retry: a repeat of the first
    assert printed[3] == "0"  # published to nobody
    assert printed[4] == "pending"  # the tracked message's record
    assert printed[5] == "mail to ada@example.com (attempt 1)"
    # 1 + 2 + the tracked 4, the 10-minute one, the keyed one (once), 5
    assert r.llen(keys.pending("default")) == 7
    limits = [decode(raw).timeout_s for raw in r.lrange(keys.pending("default"), 0, -1)]
    assert limits == [None, None, 600.0, None, None, None, None]  # newest first
    assert r.zcard(keys.delayed("default")) == 1
    assert [decode(x).payload for x in r.lrange(keys.level("default", 9), 0, -1)] == [{"n": 7}]


def test_the_tracked_page_handler_reports_progress_and_returns_its_result() -> None:
    """The handler of "Tracked messages", with ``draw`` (the reader's own work) doing nothing."""
    block = snippets("tracked.md")[0]
    drawn: list[int] = []
    namespace: dict[str, object] = {"__name__": "docs", "draw": drawn.append}
    exec(compile(block, "docs/tracked.md", "exec"), namespace)
    env = new_envelope({"pages": 4}, track=True)
    ctx = Context.for_tests(env)
    assert namespace["render"](env, ctx) == {"pages": 4}  # type: ignore[operator]
    assert drawn == [0, 1, 2, 3]
    assert ctx.reports == [(0.25, "page 1 of 4"), (0.5, "page 2 of 4"), (0.75, "page 3 of 4"),
                           (1.0, "page 4 of 4")]  # fmt: skip


def test_the_tracked_page_handler_stops_when_cancelled() -> None:
    """The cancellable handler of "Cancelling a message", with ``fetch`` doing nothing: it
    fetches every page, or stops at once (raises) once the message is cancelled."""
    block = snippets("tracked.md")[1]
    fetched: list[int] = []
    namespace: dict[str, object] = {"__name__": "docs", "fetch": fetched.append}
    exec(compile(block, "docs/tracked.md", "exec"), namespace)
    crawl = namespace["crawl"]
    env = new_envelope({"pages": 3}, track=True)
    crawl(env, Context(env, "default", "test", lambda f, t: True, lambda: False))  # type: ignore[operator]
    assert fetched == [0, 1, 2]
    with pytest.raises(RuntimeError, match="cancelled"):
        crawl(env, Context(env, "default", "test", lambda f, t: True, lambda: True))  # type: ignore[operator]
    assert fetched == [0, 1, 2]


def test_the_workflows_page_runs_as_written(
    redis_server: RedisServer, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "Chains and groups": the chain, the group and the message waiting on two queues."""
    monkeypatch.setenv("BUS_REDIS_URL", redis_server.url)
    namespace, printed = run_blocks("workflows.md", snippets("workflows.md")[:1])
    assert printed == ["5", "waiting"]
    assert [decode(x).payload for x in r.lrange(keys.pending("default"), 0, -1)] == [
        {"n": 2}, "fetch"]  # fmt: skip
    assert r.zcard(keys.waiting("default")) == 2 and r.zcard(keys.waiting("report")) == 2
    fetch = namespace["fetch"]
    record = read_record(r, "default", fetch.envelope.id)  # type: ignore[attr-defined]
    assert record is not None and record["state"] == "pending"


def test_the_workflows_page_callback_reads_the_results() -> None:
    block = snippets("workflows.md")[1]
    namespace: dict[str, object] = {"__name__": "docs"}
    exec(compile(block, "docs/workflows.md", "exec"), namespace)
    env = new_envelope({"report": "hot-repositories"}, track=True)
    pages = [{"repos": ["a", "b"]}, {"repos": ["c"]}, {"repos": []}]
    ctx = Context.for_tests(env, results=pages)
    assert namespace["report"](env, ctx) == {"rows": 3}  # type: ignore[operator]
