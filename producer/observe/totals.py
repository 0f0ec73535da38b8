"""The bus-wide totals: ``bus:{stats}:totals`` and its history, written by every process's stats
flush (one idempotent script, :data:`FLUSH`) and read by the overview, ``/api/history`` and
``/metrics``.

A field of the totals is ``<counter>|<label>=<value>|...`` with URL-quoted values
(:func:`series_field`); :func:`parse_totals` gives them back as dicts. At most once a second
the flush also appends a sample of the :data:`HISTORY_SERIES` sums to ``bus:{stats}:history``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote

import redis

from producer.store import keys

HISTORY_LEN = 360  # samples of bus:{stats}:history, one a second at most
HISTORY_SERIES = ("pushed", "handled", "published", "published_zero", "received", "lost",
                  "dead_lettered")  # fmt: skip
APPLIED_TTL_S = 86400
RATE_WINDOW_MS = 5000  # /api/stats "rates": over the history's last five seconds or so
GAP_MS = 3000  # history samples further apart than this: the chart breaks its line


# KEYS: the stats hash, the index, the applied hash, the totals, the history, its tick.
# ARGV: TTL ms, updated ms, applied TTL ms, history length, 2n, n hash field/value pairs,
# then the totals' field/value pairs (this run's absolute values).
FLUSH = """
local ttl, updated = tonumber(ARGV[1]), tonumber(ARGV[2])
local n = tonumber(ARGV[5])
for i = 6, 5 + n, 200 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 199, 5 + n)))
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], updated, KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (updated - ttl))
for i = 6 + n, #ARGV, 2 do
  local field, value = ARGV[i], tonumber(ARGV[i + 1])
  local old = tonumber(redis.call('HGET', KEYS[3], field) or '0')
  if value > old then
    redis.call('HINCRBY', KEYS[4], field, value - old)
    redis.call('HSET', KEYS[3], field, value)
  end
end
if #ARGV > 5 + n then redis.call('PEXPIRE', KEYS[3], ARGV[3]) end
if redis.call('SET', KEYS[6], '1', 'PX', 1000, 'NX') then
  local now = redis.call('TIME')
  local sample = {t = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)}
  local series = {@SERIES@}
  for _, name in ipairs(series) do sample[name] = 0 end
  local all = redis.call('HGETALL', KEYS[4])
  for i = 1, #all, 2 do
    local f = all[i]
    local counter = string.match(f, '^([^|]+)')
    if sample[counter] and counter ~= 't' and
       (counter ~= 'handled' or string.find(f, '|role=worker', 1, true)) then
      sample[counter] = sample[counter] + tonumber(all[i + 1])
    end
  end
  redis.call('RPUSH', KEYS[5], cjson.encode(sample))
  redis.call('LTRIM', KEYS[5], -tonumber(ARGV[4]), -1)
end
return 1
""".replace("@SERIES@", ", ".join(f"'{name}'" for name in HISTORY_SERIES))


def series_field(counter: str, labels: Mapping[str, str]) -> str:
    """A field of ``bus:{stats}:totals``: ``counter|label=value|...``, values URL-quoted."""
    return "|".join((counter, *(f"{k}={quote(v, safe='')}" for k, v in labels.items())))


# A Script needs a client only for its encoder: this one never connects. On a pipeline, redis-py
# runs it as EVALSHA and loads it first when Redis lacks it (a restart, SCRIPT FLUSH).
flush_script = redis.Redis().register_script(FLUSH)


def read_history(client: redis.Redis) -> dict[str, Any]:
    """The bus-wide rates (messages per second) between consecutive samples of
    ``bus:{stats}:history``, oldest first: ``{"series", "points": [{"t", <series>...}]}``.
    A point further than :data:`GAP_MS` from the one before starts a new line (``"gap"``)."""
    raw: list[bytes] = client.lrange(keys.STATS_HISTORY, 0, -1)  # type: ignore[assignment]
    samples = [parse_sample(x) for x in raw]
    points = []
    for before, after in itertools.pairwise(samples):
        dt = after["t"] - before["t"]
        if dt <= 0:
            continue
        point: dict[str, Any] = {"t": after["t"], "gap": dt > GAP_MS}
        for name in HISTORY_SERIES:
            point[name] = round(max(0, after.get(name, 0) - before.get(name, 0)) * 1000 / dt, 2)
        points.append(point)
    return {"series": list(HISTORY_SERIES), "points": points}


def parse_totals(raw: Any) -> list[dict[str, Any]]:
    """``bus:{stats}:totals`` as ``[{"counter", "labels", "value"}]``, sorted."""
    out = []
    for field, value in raw.items():
        counter, *pairs = field.decode().split("|")
        labels = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
        out.append(
            {"counter": counter, "labels": {k: unquote(v) for k, v in labels.items()},
             "value": int(value)}
        )  # fmt: skip
    out.sort(key=lambda c: (c["counter"], sorted(c["labels"].items())))
    return out


def sum_counters(counters: Iterable[dict[str, Any]], counter: str, **labels: str) -> int:
    """The sum of ``counter`` over the totals whose labels include ``labels``."""
    return sum(
        c["value"]
        for c in counters
        if c["counter"] == counter and all(c["labels"].get(k) == v for k, v in labels.items())
    )


def parse_sample(raw: bytes) -> dict[str, int]:
    try:
        data = json.loads(raw)
        return {k: int(v) for k, v in data.items()}
    except (ValueError, TypeError, AttributeError):
        return {"t": 0}


def recent_rates(samples: list[dict[str, int]]) -> dict[str, float | None]:
    """Per second between the newest sample and the oldest of the last few seconds."""
    samples = [s for s in samples if s.get("t")]
    if len(samples) < 2 or samples[-1]["t"] <= samples[0]["t"]:
        return dict.fromkeys(HISTORY_SERIES)
    first, last = samples[0], samples[-1]
    dt = last["t"] - first["t"]
    return {
        n: round(max(0, last.get(n, 0) - first.get(n, 0)) * 1000 / dt, 2) for n in HISTORY_SERIES
    }
