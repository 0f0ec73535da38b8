"""The Lua scripts: every one a file of producer/store/lua/, its header naming each KEYS and ARGV
it reads, loaded by producer/store/scripts.py and run one way (EVALSHA, EVAL after NOSCRIPT).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import redis

from producer.connection.scripting import Script
from producer.observe import totals
from producer.store import scripts
from producer.store.scripts import LUA_DIR
from tests.procs import ROOT

KEY = "bus:{t}:pending"
GATE = "bus:{t}:levels"


def test_every_file_of_lua_is_a_script_of_the_store_and_every_lib_is_used() -> None:
    files = {p.stem for p in LUA_DIR.glob("*.lua")}
    assert files == {s.name for s in scripts.ALL}
    libs = {f"lib/{p.name}" for p in (LUA_DIR / "lib").glob("*.lua")}
    included = set()
    for path in LUA_DIR.rglob("*.lua"):
        included |= set(re.findall(r"^--#include (\S+)$", path.read_text(), re.MULTILINE))
    assert included == libs


def test_no_lua_outside_lua_files() -> None:
    """No Python module of the packages carries a script: ``redis.call(`` is only in .lua."""
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()  # fmt: skip
    packages = ("producer", "consumers", "web", "loadtest")
    shipped = [p for p in tracked if p.split("/")[0] in packages]
    assert shipped
    assert [p for p in shipped if "redis.call(" in (ROOT / p).read_text()] == []


@pytest.mark.parametrize("script", scripts.ALL, ids=lambda s: s.name)
def test_each_header_names_every_key_and_argument_the_script_reads(script: Script) -> None:
    """A script's own file documents ``-- KEYS[n]`` and ``-- ARGV[n]`` (or ``[n..]``, or all of
    ``ARGV``) for each one its body and its helpers read."""
    header = "\n".join(
        line for line in (LUA_DIR / f"{script.name}.lua").read_text().splitlines()
        if line.startswith("--")
    )  # fmt: skip
    body = "\n".join(line.split("--")[0] for line in script.script.splitlines())
    for table in ("KEYS", "ARGV"):
        documented = set(map(int, re.findall(rf"^-- {table}\[(\d+)\]", header, re.MULTILINE)))
        open_from = re.findall(rf"^-- {table}\[(\d+)\.\.\]", header, re.MULTILINE)
        whole = re.search(rf"^-- {table}\s", header, re.MULTILINE) is not None
        for n in map(int, re.findall(rf"{table}\[(\d+)\]", body)):
            assert whole or n in documented or (open_from and n >= int(open_from[0])), (
                f"{script.name}.lua reads {table}[{n}] and its header does not say what it is"
            )
        if re.search(rf"#{table}\b|{table}\[[a-z]", body):  # indexed by a variable
            assert whole or open_from, f"{script.name}.lua walks {table}; its header must too"


@pytest.mark.parametrize("script", scripts.ALL, ids=lambda s: s.name)
def test_each_script_compiles_in_redis_with_its_sha(r: redis.Redis, script: Script) -> None:
    assert r.script_load(script.script) == script.sha


def test_helpers_are_included_once_before_the_body() -> None:
    text = scripts.SETTLE_CLAIM.script
    assert text.count("local function now_ms()") == 1
    assert text.count("local function rec_write(") == 1
    assert text.index("local function claim(") < text.rindex("return out")
    assert "--#include" not in text


def test_a_shebang_stays_the_first_line() -> None:
    assert scripts.HEARTBEAT.script.startswith("#!lua flags=allow-oom\n")
    assert scripts.HEARTBEAT.script.count("#!") == 1


def test_a_missing_include_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken.lua").write_text("--#include lib/nowhere.lua\nreturn 1\n")
    monkeypatch.setattr(scripts, "LUA_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"broken.lua includes lib/nowhere.lua"):
        scripts.source("broken.lua")


def test_after_script_flush_a_script_runs_again_on_a_client_and_a_pipeline(
    r: redis.Redis,
) -> None:
    r.delete(KEY)
    r.script_flush()
    assert scripts.PUSH(r, (KEY, GATE), [b"a"]) == 1  # NOSCRIPT, then EVAL
    assert r.script_exists(scripts.PUSH.sha) == [True]  # EVAL cached it
    r.script_flush()
    pipe = r.pipeline(transaction=False)
    scripts.PUSH(pipe, (KEY, GATE), [b"b"])
    scripts.PUSH(pipe, (KEY, GATE), [b"c"])
    assert pipe.execute() == [2, 3]  # redis-py loaded it before sending the pipeline


def test_run_sends_evalsha_then_eval_only_when_redis_lacks_the_script(r: redis.Redis) -> None:
    sent: list[str] = []

    def send(command: tuple[object, ...]) -> object:
        sent.append(str(command[0]))
        return r.execute_command(*command)

    r.delete(KEY)
    r.script_flush()
    scripts.PUSH.run(send, (KEY, GATE), [b"a"])
    scripts.PUSH.run(send, (KEY, GATE), [b"b"])
    assert sent == ["EVALSHA", "EVAL", "EVALSHA"]
    assert r.llen(KEY) == 2  # NOSCRIPT ran nothing: each push once


def test_the_history_series_are_the_flush_scripts() -> None:
    listed = re.search(r"local series = \{(.*?)\}", scripts.FLUSH_STATS.script, re.DOTALL)
    assert listed is not None
    assert tuple(re.findall(r"'(\w+)'", listed.group(1))) == totals.HISTORY_SERIES
