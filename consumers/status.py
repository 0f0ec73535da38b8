"""``python -m consumers status``: the whole bus in a few plain-text tables, and a health probe.

The data is :func:`producer.observe.overview.read_overview`, the one behind ``/api/stats`` and the
dashboard, so every view judges liveness the same way. ``--json`` prints that overview as is.

Exit status:

- 0: healthy;
- 1: a queue of ``BUS_QUEUES`` has no live worker, a subscriber is deaf or silent past its
  deadline (``overdue``), or a live worker is stuck (``overdue``: a handler it gave up on at its
  time limit still runs, or its oldest message in hand is past its limit); one line per problem
  goes to stderr;
- 2: usage error (argparse);
- 69: Redis could not be reached, or answered an error (one line on stderr);
- 78: a bad ``BUS_*`` setting, as for every command.

With ``--watch SECONDS`` the view is redrawn until Ctrl-C, which exits with the last status.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import redis

from consumers.refusals import configuration_refused
from consumers.tables import against, bound, duration, num, per_s, seconds, seconds_up, table
from producer import Settings, make_client
from producer.errors import EXIT_OK, EXIT_UNAVAILABLE, EXIT_UNHEALTHY
from producer.observe.overview import read_overview

CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen

EPILOG = """\
Every BUS_* variable of docs/configuration.md applies (BUS_REDIS_URL, BUS_QUEUES, ...).
Exit codes:
  0  healthy
  1  unhealthy: a queue of BUS_QUEUES has no live worker (no heartbeat younger than
     BUS_HEARTBEAT_TTL_S), a subscriber is deaf or silent for longer than its deadline
     (BUS_HEALTH_CHECK_INTERVAL_S + BUS_PONG_DEADLINE_S), or a live worker is stuck (a
     handler abandoned at its time limit still runs, or its oldest message in hand is past
     its limit); one line per problem on stderr
  2  usage error
  69 Redis could not be reached or answered an error (one line on stderr)
  78 a bad BUS_* setting
  With --watch, Ctrl-C exits with the status of the last view.
examples:
  python -m consumers status
  python -m consumers status --json | jq .queues
  python -m consumers status --watch 2
"""


def run(settings: Settings, as_json: bool = False, watch_s: float | None = None) -> int:
    """Print the bus once, or every ``watch_s`` seconds until Ctrl-C; the exit status."""
    client = make_client(settings, "admin", "status")
    code = EXIT_OK
    try:
        while True:
            if watch_s and sys.stdout.isatty():
                print(CLEAR, end="")
            code = show(client, settings, as_json, one_line=watch_s is not None)
            if watch_s is None:
                return code
            if not as_json:
                print(flush=True)
            time.sleep(watch_s)
    except KeyboardInterrupt:
        return code
    finally:
        client.close()


def show(client: redis.Redis, settings: Settings, as_json: bool, one_line: bool = False) -> int:
    """Read the overview, print it (tables or JSON) and its problems; the exit status."""
    try:
        overview = read_overview(client, settings)
    except redis.RedisError as exc:
        print(f"python -m consumers status: {describe_error(exc, settings)}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if as_json:
        print(json.dumps(overview, indent=None if one_line else 2), flush=True)
    else:
        print(render(overview, settings.redis_url_redacted), flush=True)
    found = problems(overview, settings)
    for line in found:
        print(line, file=sys.stderr, flush=True)
    return EXIT_UNHEALTHY if found else EXIT_OK


def describe_error(exc: redis.RedisError, settings: Settings) -> str:
    """One line saying what went wrong with Redis."""
    refused = configuration_refused(exc, settings, "python -m consumers status")
    if refused:
        return refused
    detail = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, redis.AuthenticationError):  # a ConnectionError for redis-py
        return f"Redis at {settings.redis_url_redacted} refused the login: {detail}"
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return f"cannot reach Redis at {settings.redis_url_redacted}: {detail}"
    return f"Redis at {settings.redis_url_redacted} answered an error: {detail}"


def problems(overview: dict[str, Any], settings: Settings) -> list[str]:
    """One line per reason to call the bus unhealthy (empty: healthy): a queue of the
    settings with no live worker, a subscriber deaf or silent past its deadline, a live
    worker stuck (``overdue``)."""
    found = []
    for q in settings.queues:
        queue = overview["queues"].get(q, {})
        if queue.get("workers_alive"):
            continue
        ages = [w["heartbeat_age_ms"] for w in overview["workers"]
                if w["queue"] == q and w["heartbeat_age_ms"] is not None]  # fmt: skip
        why = f"last heartbeat {seconds_up(min(ages))} s ago" if ages else "no heartbeat"
        why += f", TTL {settings.heartbeat_ttl_s:g} s"
        if queue.get("depth"):
            why += f"; {queue['depth']} messages waiting"
        found.append(f"queue {q!r}: no live worker ({why})")
    for s in overview["subscribers"]:
        if not s["overdue"]:
            continue
        cause = (
            "its stats stopped coming (frozen, killed or cut off)"
            if s["state"] == "silent"
            else "it lost its link to Redis"
        )
        found.append(
            f"subscriber {s['name']!r}: {s['state']} for {seconds_up(s['deaf_for_ms'])} s "
            f"(deadline {seconds(s['deaf_after_ms'])} s): {cause}"
        )
    found.extend(_stuck(w) for w in overview["workers"] if w.get("overdue"))
    return found


def _stuck(w: dict[str, Any]) -> str:
    """Why a live worker is overdue, in one line."""
    why = []
    if w["abandoned"]:
        n = w["abandoned"]
        why.append(f"{n} handler{'s' if n > 1 else ''} given up on at the time limit still run")
    if w["oldest_age_ms"] > w["oldest_limit_ms"]:
        why.append(f"oldest message in hand for {seconds_up(w['oldest_age_ms'])} s "
                   f"(limit {seconds(w['oldest_limit_ms'])} s)")  # fmt: skip
    return f"worker {w['name']!r} on queue {w['queue']!r}: stuck: {'; '.join(why)}"


def render(overview: dict[str, Any], source: str = "") -> str:
    """The overview as aligned plain-text tables (about 120 columns at most)."""
    at = datetime.fromtimestamp(overview["redis_ms"] / 1000, UTC)
    stamp = f"{at:%Y-%m-%d %H:%M:%S} UTC (Redis clock)"
    sections = [" ".join(x for x in ("redis-bus", source, stamp) if x)]
    sections += [text for section in SECTIONS if (text := section(overview))]
    return "\n\n".join(sections)


def _rates(o: dict[str, Any]) -> str:
    rates = o.get("rates") or {}
    heads = [">" + RATE_NAMES.get(k, k) for k in rates]
    return table(
        "RATES (messages/s, last few seconds)", heads, [[per_s(v) for v in rates.values()]]
    )


def _queues(o: dict[str, Any]) -> str:
    heads = ["queue", ">depth", ">scheduled", ">waiting", ">in flight", ">dead", ">oldest",
             ">handled", ">handled/s", ">workers alive", ">unaccounted"]  # fmt: skip
    rows = [[q, num(v["depth"]), num(v.get("scheduled")), num(v.get("waiting")),
             num(v["in_flight"]), num(v["dead"]),
             duration(v["oldest_age_ms"]),
             num(v.get("handled_total")), per_s(v["handled_per_s"]), num(v["workers_alive"]),
             num(v["balance"]["unaccounted"]) if "balance" in v else "-"]
            for q, v in o["queues"].items()]  # fmt: skip
    return table("QUEUES", heads, rows)


def _schedules(o: dict[str, Any]) -> str:
    """The periodic schedules the workers fire (no table when there is none)."""
    now = o["redis_ms"]

    def at(ms: int | None) -> str:
        if ms is None:
            return "-"
        when = f"{datetime.fromtimestamp(ms / 1000, UTC):%Y-%m-%d %H:%M:%S}"
        return (
            f"{when} (in {duration(ms - now)})"
            if ms >= now
            else f"{when} ({duration(now - ms)} ago)"
        )

    def next_tick(ms: int | None) -> str:  # passed: the next mover pass sends it
        return at(ms) if ms is None or ms >= now else at(ms) + ", due now"

    rows = [[q, name, s["spec"], next_tick(s["next_ms"]), at(s["last_tick_ms"])]
            for q, v in o["queues"].items()
            for name, s in v.get("schedules", {}).items()]  # fmt: skip
    heads = ["queue", "schedule", "fires", "next tick", "last tick"]
    return table("SCHEDULES (fired by the queue's workers)", heads, rows) if rows else ""


def _workers(o: dict[str, Any]) -> str:
    heads = ["queue", "name", "delivery", "state", ">heartbeat/TTL", ">handled", ">/s",
             ">retried", ">reconnects"]  # fmt: skip
    rows = [[w["queue"], w["name"], w["delivery"] or "-", w["state"],
             against(w["heartbeat_age_ms"], w["heartbeat_ttl_ms"]), num(w["handled"]),
             per_s(w["handled_per_s"]), num(w["retried"]), num(w["reconnects"])]
            for w in o["workers"]]  # fmt: skip
    return table("WORKERS", heads, rows)


def _handlers(o: dict[str, Any]) -> str:
    """What live workers' handlers hold (workers that say so; no table when none does)."""
    heads = ["queue", "name", ">busy", ">oldest/limit", ">abandoned", ">timed out", "overdue"]
    rows = [[w["queue"], w["name"], f"{w['busy']}/{w['slots']}",
             against(w["oldest_age_ms"], w["oldest_limit_ms"]) if w["oldest_age_ms"] else "-",
             num(w["abandoned"]), num(w["timed_out"]),
             "OVERDUE" if w["overdue"] else "no"]
            for w in o["workers"] if "slots" in w]  # fmt: skip
    return table("HANDLERS (live workers)", heads, rows) if rows else ""


def _subscribers(o: dict[str, Any]) -> str:
    heads = ["name", "channels", "state", ">deaf for/deadline", ">received", ">lost",
             ">duplicates", ">reconnects"]  # fmt: skip
    rows = [[s["name"], ",".join(s["channels"] + s["patterns"]), s["state"],
             against(s["deaf_for_ms"] if s["deaf"] else None, s["deaf_after_ms"]),
             num(s["received"]), num(s["lost"]), num(s["duplicates"]), num(s["reconnects"])]
            for s in o["subscribers"]]  # fmt: skip
    return table("SUBSCRIBERS", heads, rows)


def _channels(o: dict[str, Any]) -> str:
    heads = ["channel", ">subscribers", ">published", ">to nobody", ">received", ">lost",
             ">duplicates"]  # fmt: skip
    rows = [[c, num(v["subscribers"]), *(num(v.get(f"{k}_total")) for k in
             ("published", "published_zero", "received", "lost", "duplicates"))]
            for c, v in o["channels"].items()]  # fmt: skip
    return table("CHANNELS", heads, rows)


def _producers(o: dict[str, Any]) -> str:
    counts = ("pushed", "published", "published_zero", "unconfirmed", "refused_full",
              "unavailable")  # fmt: skip
    heads = ["role", "name", ">pushed", ">published", ">to nobody", ">unconfirmed",
             ">refused full", ">unavailable"]  # fmt: skip
    rows = [[p["role"], p["name"], *(num(p[k]) for k in counts)] for p in o["producers"]]
    return table("PRODUCERS", heads, rows)


def _latency(o: dict[str, Any]) -> str:
    heads = ["mode", ">messages", ">p50 ms", ">p95 ms", ">p99 ms"]
    rows = [[mode, num(v["count"]), *(bound(v, p) for p in ("p50", "p95", "p99"))]
            for mode, v in o["latency_ms"].items()]  # fmt: skip
    return table("LATENCY", heads, rows)


SECTIONS = (
    _rates,
    _queues,
    _schedules,
    _workers,
    _handlers,
    _subscribers,
    _channels,
    _producers,
    _latency,
)
RATE_NAMES = {"published_zero": "to nobody", "dead_lettered": "dead-lettered"}
