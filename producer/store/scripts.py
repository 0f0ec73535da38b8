"""Every Lua script of the bus, by name: ``scripts.CLAIM(client, keys, args)``.

Each script is a file of ``lua/`` whose header names its KEYS and ARGV; ``lua/lib/`` holds the
helpers they share. A line ``--#include lib/<name>.lua`` is replaced by that file, after what it
includes itself, each file once per script; a ``#!lua`` shebang line stays first. Scripts are
what move messages, so that each move is one step for Redis: two actors can never both move one
message, and its counters and record change with it. How a script is sent (EVALSHA, EVAL
after NOSCRIPT, on a pipeline): :mod:`producer.connection.scripting`.
"""

from __future__ import annotations

import re
from pathlib import Path

from producer.connection.scripting import Script

LUA_DIR = Path(__file__).with_name("lua")
_INCLUDE = re.compile(r"^--#include (\S+)[ \t]*$", re.MULTILINE)


def source(path: str) -> str:
    """The text Redis runs for ``lua/<path>``: its includes expanded, its shebang first."""
    text = _expand(path, set())
    if any(line.startswith("#!") for line in text.splitlines()[1:]):
        raise ValueError(f"lua/{path}: a #! line is allowed as a script's first line only")
    return text


def _expand(path: str, seen: set[str]) -> str:
    seen.add(path)
    text = (LUA_DIR / path).read_text()
    shebang = ""
    if text.startswith("#!"):
        shebang, text = text.split("\n", 1)
        shebang += "\n"

    def include(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in seen:
            return ""
        if not (LUA_DIR / name).is_file():
            raise FileNotFoundError(f"lua/{path} includes {name}: no such file in {LUA_DIR}")
        return _expand(name, seen)

    return shebang + _INCLUDE.sub(include, text)


def load(name: str) -> Script:
    """The script of ``lua/<name>.lua``."""
    return Script(name, source(f"{name}.lua"))


# A queue's moves, by a worker (consumers/lists.py)
CLAIM = load("claim")
SETTLE = load("settle")
SETTLE_CLAIM = load("settle_claim")
REAP = load("reap")
MOVE_DUE = load("move_due")
FIRE = load("fire")
CANCEL = load("cancel")
RECORD = load("record")
PROGRESS = load("progress")
# at-most-once
TAKE = load("take")
TAKEN = load("taken")
GIVE_BACK = load("give_back")
# a worker's name: its lease and heartbeat
HEARTBEAT = load("heartbeat")
TAKE_NAME = load("take_name")
RELEASE_NAME = load("release_name")
STALE = load("stale")
# pushes, by a producer (producer/producer.py)
PUSH = load("push")
PUSH_LEVEL = load("push_level")
PUSH_IF_ROOM = load("push_if_room")
SCHEDULE = load("schedule")
PUSH_TRACKED = load("push_tracked")
PUSH_ONCE = load("push_once")
PUBLISH_ONCE = load("publish_once")
# reading a queue's balance; requeuing dead letters; the stats flush
BALANCE = load("balance")
LEVELS = load("levels")
REQUEUE = load("requeue")
FLUSH_STATS = load("flush_stats")
# messages that wait for others (producer/store/after.py)
WAIT = load("wait")
LINK = load("link")
RESOLVE = load("resolve")
DUE_WAITS = load("due_waits")

ALL = (CLAIM, SETTLE, SETTLE_CLAIM, REAP, MOVE_DUE, RECORD, PROGRESS, TAKE, TAKEN, GIVE_BACK,
       HEARTBEAT, TAKE_NAME, RELEASE_NAME, STALE, PUSH, PUSH_LEVEL, PUSH_IF_ROOM, SCHEDULE,
       PUSH_TRACKED, PUSH_ONCE, PUBLISH_ONCE, BALANCE, LEVELS, REQUEUE, FLUSH_STATS, FIRE,
       CANCEL, WAIT, LINK, RESOLVE, DUE_WAITS)  # fmt: skip
