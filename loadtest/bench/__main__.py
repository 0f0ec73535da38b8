"""``python -m loadtest.bench``: see :mod:`loadtest.bench`."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from loadtest.bench import table
from loadtest.bench.common import ROOT, Result, Scale

# name: (module, what it measures). Each module has run(scale) -> list[Result].
SECTIONS = {
    "drain": ("loadtest.bench.drain", "one worker draining a backlog, both modes, batched and "
              "one at a time, beside the raw Redis limits and the naive loops"),
    "tracking": ("loadtest.bench.tracking", "tracked messages beside untracked ones: one worker "
                 "draining each, with and without the queue's gate, the push of each, the cost "
                 "per message and the Redis memory of a record"),
    "balance": ("loadtest.bench.balance", "what counting every message for the balance of a "
                "queue costs: the push script beside a bare LPUSH"),
    "idempotency": ("loadtest.bench.once", "what an idempotency key costs: a push with a new "
                    "key and a repeat beside a plain push, Redis's time, a kept key's memory"),
    "priorities": ("loadtest.bench.priorities", "what priority levels cost: a push at a level "
                   "beside a plain one, claims and takes from a backlog over 4 levels beside "
                   "one of priority 0"),
    "after": ("loadtest.bench.after", "what waiting for other messages costs: a push with "
              "after beside a tracked push, a drain of pairs (each waits for the one before) "
              "beside tracked messages, a group of 10,000 and its callback's delay"),
    "cluster": ("loadtest.bench.cluster", "a Redis Cluster of 1 shard beside one of 3: six "
                "queues pushed and drained by one worker each, the rates and the CPU per shard"),
    "latency": ("loadtest.bench.latency", "push to handler start at steady rates, both modes"),
    "http": ("loadtest.bench.http", "POST /prodcons and /pubsub under gunicorn (wrk) beside a "
             "naive one-LPUSH Flask endpoint and an endpoint that returns 'ok'"),
    "subscriber": ("loadtest.bench.flood", "one subscriber under a publish flood: rate, loss"),
    "memory": ("loadtest.bench.memory", "a worker's and a subscriber's RSS over a long run"),
    "libraries": ("loadtest.bench.libs", "what orjson and hiredis buy (envelope JSON, replies)"),
    "peers": ("loadtest.bench.peers", "RQ, Dramatiq and Celery draining the same no-op jobs"),
    "handlers": ("loadtest.bench.handlers", "real handlers (a 20 ms sleep, 8 at once; an async "
                 "def awaiting 20 ms, 100 at once; ~5 ms of CPU, 1 and 2 processes): our worker "
                 "beside RQ, Dramatiq, Celery, arq and SAQ; the no-op drain beside the worker "
                 "before concurrency; a hung handler among good ones"),
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench",
        description="Measure redis-bus beside its references and peers in one run and print a "
        "table of ratios (each section starts and stops its own processes on loopback). "
        "Sections: " + "; ".join(f"{k}: {v[1]}" for k, v in SECTIONS.items()) + ".",
    )
    parser.add_argument("--only", default="", metavar="A,B",
                        help="run only these sections (default: all)")  # fmt: skip
    parser.add_argument("--smoke", action="store_true",
                        help="a run of seconds with tiny sizes: checks that every section works "
                        "and the table is well formed, not the figures")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "loadtest" / "reports",
                        help="where bench-<timestamp>.json and .md go")  # fmt: skip
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    scale = Scale(smoke=args.smoke)
    rows: list[Result] = []
    failed: list[str] = []
    for name in chosen:
        started = time.monotonic()
        print(f"bench: {name}: {SECTIONS[name][1]} ...", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(SECTIONS[name][0])
            got = module.run(scale)
        except Exception as exc:  # one broken section must not hide the others' figures
            print(f"bench: {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed.append(name)
            continue
        rows.extend(got)
        print(f"bench: {name}: done in {time.monotonic() - started:.0f}s", file=sys.stderr)
    info = dict(table.meta(), smoke=args.smoke, sections=chosen, failed=failed)
    print(table.markdown(rows, info))
    as_json, as_md = table.write(rows, args.out, info)
    print(f"bench: wrote {as_json} and {as_md}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
