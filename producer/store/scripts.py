"""Every Lua script of the bus, and the one way to run one.

Each script is a file of ``lua/`` whose header names its KEYS and ARGV; ``lua/lib/`` holds the
helpers they share. A line ``--#include lib/<name>.lua`` is replaced by that file, after what it
includes itself, each file once per script; a ``#!lua`` shebang line stays first. Scripts are
what move messages, so that each move is one step for Redis: two actors can never both move one
message, and its counters and record change with it.

A script runs as ``EVALSHA``; when Redis does not have it (first use, a restart, ``SCRIPT
FLUSH``, a newly promoted primary) the answer is ``NOSCRIPT``, which means it did not run, and
it is sent once as ``EVAL``, which also caches it. On a pipeline, redis-py checks and loads the
pipeline's scripts before sending it (:class:`Script` has the ``sha`` and ``script`` it reads).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis
from redis.client import Pipeline
from redis.exceptions import NoScriptError

LUA_DIR = Path(__file__).with_name("lua")
_INCLUDE = re.compile(r"^--#include (\S+)[ \t]*$", re.MULTILINE)

Send = Callable[[tuple[Any, ...]], Any]


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


class Script:
    """One script of ``lua/``: ``script(client, keys, args)`` runs it on a client or queues it
    on a pipeline; :meth:`run` sends it through a function of one's own."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.script = source(f"{name}.lua")
        self.sha = hashlib.sha1(self.script.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"Script({self.name!r})"

    def __call__(
        self, client: redis.Redis, keys: Sequence[Any] = (), args: Sequence[Any] = ()
    ) -> Any:
        """Run on ``client``; on a pipeline, queue it (the reply comes with the others)."""
        if isinstance(client, Pipeline):
            client.scripts.add(self)  # type: ignore[arg-type]
            return client.evalsha(self.sha, len(keys), *keys, *args)
        return self.run(lambda command: client.execute_command(*command), keys, args)

    def run(self, send: Send, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        """``send`` the ``EVALSHA`` command (a tuple); on ``NOSCRIPT`` (it did not run), the
        ``EVAL`` command. The reply of the one that ran."""
        try:
            return send(("EVALSHA", self.sha, len(keys), *keys, *args))
        except NoScriptError:
            return send(("EVAL", self.script, len(keys), *keys, *args))


# A queue's moves, by a worker (consumers/lists.py)
CLAIM = Script("claim")
SETTLE = Script("settle")
SETTLE_CLAIM = Script("settle_claim")
REAP = Script("reap")
MOVE_DUE = Script("move_due")
RECORD = Script("record")
PROGRESS = Script("progress")
# at-most-once
TAKE = Script("take")
TAKEN = Script("taken")
GIVE_BACK = Script("give_back")
# a worker's name: its lease and heartbeat
HEARTBEAT = Script("heartbeat")
TAKE_NAME = Script("take_name")
RELEASE_NAME = Script("release_name")
STALE = Script("stale")
# pushes, by a producer (producer/producer.py)
PUSH = Script("push")
PUSH_IF_ROOM = Script("push_if_room")
SCHEDULE = Script("schedule")
PUSH_TRACKED = Script("push_tracked")
# reading a queue's balance; requeuing dead letters; the stats flush
BALANCE = Script("balance")
REQUEUE = Script("requeue")
FLUSH_STATS = Script("flush_stats")

ALL = (CLAIM, SETTLE, SETTLE_CLAIM, REAP, MOVE_DUE, RECORD, PROGRESS, TAKE, TAKEN, GIVE_BACK,
       HEARTBEAT, TAKE_NAME, RELEASE_NAME, STALE, PUSH, PUSH_IF_ROOM, SCHEDULE, PUSH_TRACKED,
       BALANCE, REQUEUE, FLUSH_STATS)  # fmt: skip
