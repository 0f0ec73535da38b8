"""Where a command goes on a cluster: the key that decides it, its hash slot, and which errors
say that the slot map may be out of date (see :mod:`producer.connection.cluster`)."""

from __future__ import annotations

from typing import Any

import redis
from redis.crc import key_slot
from redis.exceptions import MovedError

Address = tuple[str, int]

STATS_TAG = "{stats}"  # the hash tag of every stats key (producer/store/keys.py)
REDIRECTS = 3  # MOVED/ASK followed per command before giving up

# Commands whose first key is not their first argument.
_NUMKEYS_AT = {"EVAL": 2, "EVALSHA": 2, "EVAL_RO": 2, "EVALSHA_RO": 2, "FCALL": 2,
               "FCALL_RO": 2, "LMPOP": 1, "ZMPOP": 1, "BLMPOP": 2, "BZMPOP": 2}  # fmt: skip
ANY_NODE = frozenset(("PING", "TIME", "ECHO"))
EVERY_PRIMARY = frozenset(("SCRIPT LOAD", "SCRIPT EXISTS", "SCRIPT FLUSH"))
# Errors after which the slot map may be out of date.
_STALE_PREFIXES = ("CLUSTERDOWN", "TRYAGAIN", "UNBLOCKED", "READONLY", "MASTERDOWN")


def slot_of(key: str | bytes) -> int:
    """The hash slot of ``key`` (its ``{tag}`` when it has one)."""
    return key_slot(key.encode() if isinstance(key, str) else key)


def _word(arg: Any) -> str:
    return (arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)).upper()


def command_key(args: tuple[Any, ...]) -> str | bytes | None:
    """The key that decides where ``args`` runs, or None for a command without one."""
    name = _word(args[0])
    rest = 1  # where the command's arguments start, after its name
    if name in ("SCRIPT", "CLIENT", "CLUSTER", "CONFIG", "MEMORY", "COMMAND", "FUNCTION",
                "PUBSUB", "OBJECT") and len(args) > 1:  # fmt: skip
        name, rest = f"{name} {_word(args[1])}", 2  # redis-py sends most as one word
    if name in _NUMKEYS_AT:
        at = _NUMKEYS_AT[name]
        return args[at + 1] if len(args) > at + 1 and int(args[at]) > 0 else None
    if name == "SCAN":  # routed by a hash tag in its MATCH pattern: the scan of one slot
        for i, arg in enumerate(args[:-1]):
            if _word(arg) == "MATCH" and "{" in _word(args[i + 1]):
                return args[i + 1]
        return None
    if name in ("MEMORY USAGE", "OBJECT ENCODING", "OBJECT FREQ", "OBJECT IDLETIME",
                "OBJECT REFCOUNT", "PUBSUB SHARDNUMSUB"):  # fmt: skip
        # The key of one, the subscribers of a sharded channel (one): on its node.
        return args[rest] if len(args) > rest else None
    if name in ANY_NODE or name in EVERY_PRIMARY or " " in name or len(args) < 2:
        return None
    if name in ("WAIT", "INFO", "DBSIZE", "KEYS", "FLUSHALL", "FLUSHDB", "RANDOMKEY",
                "MULTI", "EXEC", "DISCARD", "UNWATCH", "SAVE", "BGSAVE", "LASTSAVE"):  # fmt: skip
        return None
    return args[1]


def is_stale_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the slot map may have changed (see the module docstring)."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, MovedError)):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(_STALE_PREFIXES)
