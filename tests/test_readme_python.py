"""The README's "Using it from Python" section, run as written: its Python snippets, in order,
in one namespace, against a real redis-server named by ``BUS_REDIS_URL`` (as a newcomer pastes
them into a shell after ``export BUS_REDIS_URL=...``). What they print and push is checked."""

from __future__ import annotations

import contextlib
import io
import re

import pytest
import redis

from producer import keys
from tests.procs import ROOT
from tests.redisproc import RedisServer

SECTION = "## Using it from Python"


def snippets() -> list[str]:
    """The section's fenced Python blocks, in order."""
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.DOTALL)


def test_the_section_has_its_snippets() -> None:
    blocks = snippets()
    assert len(blocks) == 4
    assert "Producer.from_env()" in blocks[0] and "new_envelope" in blocks[3]


def test_the_snippets_run_as_written(
    redis_server: RedisServer, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUS_REDIS_URL", redis_server.url)
    namespace: dict[str, object] = {"__name__": "readme"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for block in snippets():
            exec(compile(block, "README.md", "exec"), namespace)
    printed = out.getvalue().splitlines()
    first_id, depth = printed[0].split()
    assert re.fullmatch(r"[0-9a-f]{32}", first_id) and depth == "1"
    assert printed[2] == "0"  # published to nobody
    assert printed[3] == "pending"  # the tracked message's record
    assert printed[4] == "mail to ada@example.com (attempt 1)"
    assert r.llen(keys.pending("default")) == 5  # 1 + 2 + the tracked 4 and 5
    assert r.zcard(keys.delayed("default")) == 1
