"""The pub/sub streams' first and last messages, sent by the runner through every web process.

A subscriber's gap counter takes a producer's first message as its baseline and sees a loss only
when a later message from the same producer arrives. So before any fault the runner makes every
web process send one message that every subscriber receives, and after the drain one more, so
every loss is followed by a message the counters can see. Both go to the runner's own ledger
(``via`` ``open`` and ``close``) and are accounted for like any other message.
"""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import Any

from loadtest.ledger import records
from loadtest.runner.procs import wait_until
from loadtest.runner.spec import Scenario
from loadtest.runner.stack import Stack

MAX_REQUESTS = 400  # requests at most to reach every web process


def open_streams(scn: Scenario, stack: Stack, tails: dict[str, records.Tail], ledger: Path) -> None:
    """Before any traffic, one message from every web process to every subscriber: a gap
    counter takes a producer's first message as its baseline, so a subscriber cut off before it
    ever heard from a producer would not count those first losses."""
    if "pubsub" not in scn.modes:
        return
    lines = through_every_web(stack, "open", None, ledger)
    lids = {line["lid"] for line in lines if line["out"] == "accepted"}
    subscribers = [c.who for c in stack.consumers if c.sys == "bus" and c.mode == "pubsub"]

    def heard_by_all() -> bool:
        for who in subscribers:
            tails[who].poll()
        return all(lids <= {g.get("lid") for g in tails[who].lines} for who in subscribers)

    wait_until(heard_by_all, "every subscriber to hear from every web process", 10)


def close_streams(
    scn: Scenario, stack: Stack, lines: list[dict[str, Any]], ledger: Path
) -> list[dict[str, Any]]:
    """After the drain, one more message from every web process that published, so each
    subscriber's gap counter sees every loss (it counts a gap when a later message arrives)."""
    if "pubsub" not in scn.modes:
        return []
    srcs = {
        s["src"]
        for s in lines
        if s.get("k") == "sent" and s["sys"] == "bus" and s["mode"] == "pubsub" and s.get("src")
    }
    return through_every_web(stack, "close", srcs, ledger)


def through_every_web(
    stack: Stack, via: str, srcs: set[str] | None, ledger_path: Path
) -> list[dict[str, Any]]:
    """POST /pubsub on new connections until each web process in ``srcs`` (None: as many as
    gunicorn runs) has answered one; bounded. Every attempt goes to the ledger."""
    want = int(stack.bus_env["BUS_WEB_WORKERS"]) if srcs is None else len(srcs)
    ledger, lids = records.Ledger(ledger_path), records.Lids(f"{via}-")
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(seen & srcs if srcs is not None else seen) < want:
        if len(out) >= MAX_REQUESTS or time.monotonic() > deadline:
            break
        lid, t0 = lids.next(), records.now()
        status, body = post(stack.bus_port, "/pubsub", {"payload": records.payload(lid)})
        ok = status == 202
        line = {
            "k": "sent",
            "sys": "bus",
            "mode": "pubsub",
            "via": via,
            "dest": "default",
            "lid": lid,
            "t0": t0,
            "t1": records.now(),
            "st": status,
            "out": "accepted" if ok else "unknown",
            "id": body.get("id"),
            "src": body.get("src"),
            "seq": body.get("seq"),
            "rc": body.get("receivers"),
            "err": None if ok else str(body.get("error", "no answer")),
        }
        ledger.write(**line)
        out.append(line)
        if ok:
            seen.add(body["src"])
    ledger.close()
    return out


def post(port: int, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:  # a new connection each time, so the requests spread over gunicorn's workers
        conn.request(
            "POST",
            path,
            json.dumps(body),
            {"Content-Type": "application/json", "Connection": "close"},
        )
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    except (OSError, ValueError) as exc:
        return 0, {"error": str(exc)}
    finally:
        conn.close()
