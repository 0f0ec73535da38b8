"""What each library the project depends on for speed buys, measured in this process: orjson
against the standard library's json for the envelope, msgspec's decode of this bus's own
envelopes (checked in C) against the reference path (orjson, then the checks in Python), and
hiredis against redis-py's own (pure Python) reply parser for the batched pops the worker lives
on.
"""

from __future__ import annotations

import json
import time
import timeit
from collections.abc import Callable

import orjson
import redis
from redis._parsers import _HiredisParser, _RESP2Parser

from loadtest.bench.common import Result, Scale
from loadtest.harness.server import throwaway_server
from producer.store import envelope, keys

SECTION = "libraries"


def _best_us(fn: Callable[[], object], number: int, repeat: int = 7) -> float:
    """µs per call, the best of ``repeat`` runs (the least disturbed by other processes)."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def _drain_rate(port: int, parser: type, raws: list[bytes]) -> float:
    pool = redis.ConnectionPool(host="127.0.0.1", port=port, parser_class=parser)
    client = redis.Redis(connection_pool=pool, single_connection_client=True)
    key = keys.pending("libs")
    client.lpush(key, *raws)
    started, done = time.perf_counter(), 0
    while done < len(raws):
        done += len(client.rpop(key, 100) or [])
    elapsed = time.perf_counter() - started
    client.close()
    return len(raws) / elapsed


def run(scale: Scale) -> list[Result]:
    n = scale.n(20_000, 500)
    env = envelope.new({"order": 12345, "items": ["a", "b"]}, src="bench", seq=7, mode="prodcons")
    raw = env.encode()
    stdlib = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    obj = json.loads(raw)
    std_dec, std_enc = "decode, the standard library's json", "encode, the standard library's json"
    reference = "envelope.decode's reference path (orjson, the checks, the object)"

    def timed(name: str, fn: Callable[[], object], ref: str | None = None) -> Result:
        return Result(SECTION, name, _best_us(fn, n), "µs", ref=ref, higher_is_better=False)

    rows = [
        timed(std_dec, lambda: json.loads(raw)),
        timed("decode, orjson", lambda: orjson.loads(raw), std_dec),
        timed(reference, lambda: envelope._decode_checked(raw, "prodcons"), std_dec),
        timed("envelope.decode (msgspec, the ranges, the object)", lambda: envelope.decode(raw),
              reference),
        timed(std_enc, lambda: stdlib.encode(obj).encode()),
        timed("encode, orjson", lambda: orjson.dumps(obj), std_enc),
        timed("envelope.encode", env.encode, std_enc),
    ]  # fmt: skip
    raws = [raw] * scale.n(200_000, 2_000)
    python_parser = "RPOP q 100, redis-py's Python parser"
    with throwaway_server() as server:
        pure = max(_drain_rate(server.port, _RESP2Parser, raws) for _ in range(2))
        fast = max(_drain_rate(server.port, _HiredisParser, raws) for _ in range(2))
    rows += [
        Result(SECTION, python_parser, pure, "msg/s"),
        Result(SECTION, "RPOP q 100, hiredis", fast, "msg/s", ref=python_parser),
    ]
    return rows
