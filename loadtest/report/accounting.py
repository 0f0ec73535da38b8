"""Exact accounting of one scenario, by load-test id, from the ledgers and what Redis still held.

A row is one system in one mode on one destination (``redis-bus`` prodcons on ``default``...).
Every message its producers attempted ends in exactly one producer outcome (accepted, rejected,
unknown). Every accepted message then ends in exactly one consumer outcome:

* list mode: ``delivered`` (handled at least once), ``dead_lettered``, ``stranded`` (still in a
  list of Redis after the drain: not delivered, not lost either), or ``lost`` (none of those:
  gone from Redis without being handled);
* pub/sub, per subscriber: delivered or lost (``expected`` = accepted x subscribers).

Extra deliveries are ``duplicated``; deliveries of a message the producer said it refused are
``phantom`` (a lie the producer must never tell). redis-bus's subscribers also count their own
losses from sequence gaps: ``counted_lost`` must equal ``missed``, the messages sent (accepted or
unknown with its sequence number spent) that a subscriber did not receive.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from loadtest import baseline
from loadtest.report import fates, rows, timing
from loadtest.runner.faults import Window
from loadtest.runner.stack import Consumer

BIN_S = 0.5
BASELINE_DEST = {"prodcons": baseline.QUEUE, "pubsub": baseline.CHANNEL}


@dataclass
class Observed:
    """Everything the runner gathered about one scenario, wall-clock times throughout."""

    t0: float  # traffic start
    traffic_end: float  # the last answer to a producer
    drain_end: float
    sent: list[dict[str, Any]]
    got: dict[str, list[dict[str, Any]]]  # consumer name -> its "got" lines
    consumers: list[Consumer]
    leftovers: set[str]  # lids still in a list (pending or processing) after the drain
    dead: dict[str, str]  # lid in a dead-letter list -> its reason
    stats: dict[str, dict[str, int]]  # redis-bus consumer name -> its final counters
    exits: dict[str, tuple[float | None, int, str]]  # who -> (wall time, code, error)
    faults: list[Window] = field(default_factory=list)
    doomed: list[dict[str, Any]] = field(default_factory=list)  # handlers that met a fate


def row_key(
    line: dict[str, Any], amo_queues: Iterable[str], pooled: tuple[str, ...] = ()
) -> tuple[str, str, str]:
    """(system, mode, dest) of a "sent" line; the queues in ``pooled`` share one row, whose
    dest names them all (comma-separated)."""
    system: str
    if line["sys"] == "baseline":  # the naive app has one list and one channel
        return "baseline", line["mode"], BASELINE_DEST[line["mode"]]
    elif line.get("via") == "redis":
        system = "redis-bus direct"
    elif line["dest"] in amo_queues:
        system = "redis-bus at-most-once"
    else:
        system = "redis-bus"
    if line["mode"] == "prodcons" and line["dest"] in pooled:
        return system, "prodcons", ",".join(pooled)
    return system, line["mode"], line["dest"]


def account(
    obs: Observed, amo_queues: tuple[str, ...] = (), pooled: tuple[str, ...] = ()
) -> tuple[list[dict[str, Any]], dict]:
    """The rows of the summary and the per-bin series of one scenario (the queues in
    ``pooled``, a scenario's several queues, are accounted as one row a system)."""
    rows_sent: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    owner: dict[str, tuple[str, str, str]] = {}
    for line in obs.sent:
        key = row_key(line, amo_queues, pooled)
        rows_sent[key].append(line)
        owner[line["lid"]] = key
    out, series = [], {}
    for key in sorted(rows_sent, key=_order):
        system, mode, dest = key
        consumers = _consumers_of(obs.consumers, system, mode, dest)
        row = (_prodcons_row if mode == "prodcons" else _pubsub_row)(
            obs, rows_sent[key], consumers, owner, key
        )
        row.update(system=system, mode=mode, dest=dest)
        orphans = sum(
            1
            for c in consumers
            for g in obs.got.get(c.who, ())
            if g.get("lid") is not None and g["lid"] not in owner
        )
        row["complete"] = orphans == 0
        row["notes"] = rows.notes(row, orphans)
        out.append(rows.ordered(row))
        series[f"{system} {mode}"] = _series(obs, rows_sent[key], consumers, owner, key, row)
    return out, series


def untracked(obs: Observed) -> int:
    """Deliveries without a load-test id (the seed-style GET routes send random numbers)."""
    return sum(1 for lines in obs.got.values() for g in lines if g.get("lid") is None)


# --------------------------------------------------------------------------------------------


def _prodcons_row(
    obs: Observed, sent: list[dict[str, Any]], consumers: list[Consumer], owner: dict, key: tuple
) -> dict[str, Any]:
    acc, rej, unk = _outcomes(sent)
    counts: Counter[str] = Counter()
    first: dict[str, float] = {}
    attempts: dict[str, list[tuple[float, int | None]]] = defaultdict(list)
    for c in consumers:
        for g in obs.got.get(c.who, ()):
            lid = g.get("lid")
            if lid is not None and owner.get(lid) == key:
                counts[lid] += 1
                first[lid] = min(first.get(lid, g["t"]), g["t"])
                attempts[lid].append((g["t"], g.get("att")))
    delivered = {lid for lid in acc if counts[lid]}
    dead = {lid for lid in acc - delivered if lid in obs.dead}
    stranded = {lid for lid in acc - delivered - dead if lid in obs.leftovers}
    t0s = {s["lid"]: s["t0"] for s in sent}
    row = _common(obs, sent, consumers, acc, rej, unk)
    row.update(
        expected=len(acc),
        delivered=len(delivered),
        lost=len(acc) - len(delivered) - len(dead) - len(stranded),
        duplicated=sum(n - 1 for lid, n in counts.items() if n > 1 and lid not in rej),
        dead_lettered=len(dead),
        stranded=len(stranded),
        unknown_delivered=sum(1 for lid in unk if counts[lid]),
        phantom=sum(1 for lid in rej if counts[lid] or lid in obs.leftovers or lid in obs.dead),
        e2e_ms=timing.percentiles([(first[lid] - t0s[lid]) * 1000 for lid in delivered]),
        resume_s=timing.resume_after(obs.faults, sorted(first.values())),
        stall_s=timing.waiting_stall([(t0s[lid], first.get(lid)) for lid in acc], obs.drain_end),
        missed=None,
        counted_lost=None,
    )
    if any(s.get("fate") for s in sent):
        row["fates"] = fates.outcomes(sent, acc, delivered, obs.dead, stranded)
        row["duplicates_explained"] = fates.explained_duplicates(attempts)[1]
        whose = {c.who for c in consumers}
        met = Counter(d["fate"] for d in obs.doomed if d.get("who") in whose)
        row["handlers_met"] = dict(sorted(met.items()))  # attempts that hung, or ended a process
    return row


def _pubsub_row(
    obs: Observed, sent: list[dict[str, Any]], consumers: list[Consumer], owner: dict, key: tuple
) -> dict[str, Any]:
    acc, rej, unk = _outcomes(sent)
    t0s = {s["lid"]: s["t0"] for s in sent}
    accepted_t0 = sorted(t0s[lid] for lid in acc)
    seen = {g.get("lid") for c in consumers for g in obs.got.get(c.who, ())}
    used = acc | _used_unknowns(sent, seen)
    per: list[dict[str, Any]] = []
    latencies: list[float] = []
    stalls: list[float] = []
    deliveries: list[float] = []
    for c in consumers:
        counts: Counter[str] = Counter()
        for g in obs.got.get(c.who, ()):
            lid = g.get("lid")
            if lid is not None and owner.get(lid) == key:
                if not counts[lid] and lid in acc:
                    latencies.append((g["t"] - t0s[lid]) * 1000)
                counts[lid] += 1
                deliveries.append(g["t"])
        mine = [g["t"] for g in obs.got.get(c.who, ()) if owner.get(g.get("lid") or "") == key]
        stall = timing.silent_stall(sorted(mine), accepted_t0)
        if stall is not None:
            stalls.append(stall)
        stats = obs.stats.get(c.who)
        per.append(
            {
                "who": c.who,
                "slow": c.slow,
                "received": sum(1 for lid in acc if counts[lid]),
                "missed": sum(1 for lid in used if not counts[lid]),
                "duplicates": sum(n - 1 for n in counts.values() if n > 1),
                "unknown_received": sum(1 for lid in unk if counts[lid]),
                "phantom": sum(1 for lid in rej if counts[lid]),
                "counted_lost": stats.get("lost") if stats is not None else None,
                "counted_duplicates": stats.get("duplicates") if stats is not None else None,
            }
        )
    delivered = sum(p["received"] for p in per)
    counted = [p["counted_lost"] for p in per]
    row = _common(obs, sent, consumers, acc, rej, unk)
    row.update(
        expected=len(acc) * len(consumers),
        delivered=delivered,
        lost=len(acc) * len(consumers) - delivered,
        duplicated=sum(p["duplicates"] for p in per),
        dead_lettered=0,
        stranded=0,
        unknown_delivered=sum(p["unknown_received"] for p in per),
        phantom=sum(p["phantom"] for p in per),
        e2e_ms=timing.percentiles(latencies),
        resume_s=timing.resume_after(obs.faults, sorted(deliveries)),
        stall_s=max(stalls) if stalls else None,
        missed=sum(p["missed"] for p in per),
        counted_lost=None if not counted or None in counted else sum(counted),
        per_consumer=per,
        receivers_reported=sum(s.get("rc") or 0 for s in sent if s["out"] == "accepted"),
    )
    return row


def _used_unknowns(sent: list[dict[str, Any]], seen: set[Any]) -> set[str]:
    """Unknown-outcome sends that used a sequence number: every 503 "unknown" (the producer
    sent the command, its number is spent), and a send that got no HTTP answer at all if some
    subscriber received it (it reached Redis); one that no subscriber received is taken as never
    having reached the web."""
    return {
        s["lid"] for s in sent if s["out"] == "unknown" and (s["st"] == 503 or s["lid"] in seen)
    }


def _common(
    obs: Observed,
    sent: list[dict[str, Any]],
    consumers: list[Consumer],
    acc: set[str],
    rej: set[str],
    unk: set[str],
) -> dict[str, Any]:
    traffic_s = max(obs.traffic_end - obs.t0, 1e-9)
    answered = [s for s in sent if s.get("via") not in ("open", "close")]  # the runner's own
    reconnects = [obs.stats[c.who].get("reconnects", 0) for c in consumers if c.who in obs.stats]
    return {
        "consumers": len(consumers),
        "sent": len(sent),
        "accepted": len(acc),
        "rejected": len(rej),
        "unknown": len(unk),
        "http_errors": sum(
            1 for s in answered if s.get("via") == "http" and not 200 <= s["st"] < 300
        ),
        "accepted_per_s": round(sum(1 for s in answered if s["out"] == "accepted") / traffic_s, 1),
        "http_ms": timing.percentiles([(s["t1"] - s["t0"]) * 1000 for s in answered]),
        "reconnects": sum(reconnects) if consumers and consumers[0].sys == "bus" else None,
        "exits": _exits(obs, consumers),
    }


def _outcomes(sent: list[dict[str, Any]]) -> tuple[set[str], set[str], set[str]]:
    by: dict[str, set[str]] = {"accepted": set(), "rejected": set(), "unknown": set()}
    for s in sent:
        by[s["out"]].add(s["lid"])
    return by["accepted"], by["rejected"], by["unknown"]


def _consumers_of(consumers: list[Consumer], system: str, mode: str, dest: str) -> list[Consumer]:
    if system == "baseline":  # one list and one channel, whatever name the producer gave
        return [c for c in consumers if c.sys == "baseline" and c.mode == mode]
    dests = dest.split(",")
    return [c for c in consumers if c.sys == "bus" and c.mode == mode and c.dest in dests]


def _exits(obs: Observed, consumers: list[Consumer]) -> list[dict[str, Any]]:
    out = []
    for c in consumers:
        if c.who in obs.exits:
            at, code, error = obs.exits[c.who]
            out.append(
                {
                    "who": c.who,
                    "at_s": None if at is None else round(at - obs.t0, 2),
                    "code": code,
                    "error": error,
                }
            )
    return out


def _series(
    obs: Observed,
    sent: list[dict[str, Any]],
    consumers: list[Consumer],
    owner: dict,
    key: tuple,
    row: dict[str, Any],
) -> dict[str, Any]:
    bins = int((obs.drain_end - obs.t0) / BIN_S) + 1
    accepted, failed, delivered = [0] * bins, [0] * bins, [0] * bins

    def slot(t: float) -> int:  # -1: before the traffic (the streams' opening messages)
        return -1 if t < obs.t0 else min(bins - 1, int((t - obs.t0) / BIN_S))

    for s in sent:
        if (i := slot(s["t0"])) >= 0:
            (accepted if s["out"] == "accepted" else failed)[i] += 1
    for c in consumers:
        for g in obs.got.get(c.who, ()):
            if owner.get(g.get("lid") or "") == key and (i := slot(g["t"])) >= 0:
                delivered[i] += 1
    return {
        "system": row["system"],
        "mode": row["mode"],
        "consumers": row["consumers"],
        "accepted": accepted,
        "failed": failed,
        "delivered": delivered,
    }


def _order(key: tuple[str, str, str]) -> tuple[int, int, str]:
    systems = ("redis-bus", "redis-bus at-most-once", "redis-bus direct", "baseline")
    return (("prodcons", "pubsub").index(key[1]), systems.index(key[0]), key[2])
