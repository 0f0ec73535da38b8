"""The "hot repositories" report of the Celery article, on the bus: five pages fetched at once,
aggregated when all five are done, written as a CSV by the last step, every minute.

One handler, ``handle(env, ctx)``, serves the queue ``reports``; a message's ``"step"`` says
what it is:

``start``      sent every minute by the schedule of ``examples/report.toml`` (and once at
               startup): it pushes the workflow below, from the worker itself
``fetch``      one page of the API (``{"page": n, "api": url}``); returns the page's repositories
``aggregate``  the callback of the five fetches (a group): merges ``ctx.results()``, keeps the
               top ones by stars; returns them
``csv``        waits for ``aggregate`` (a chain): writes its result to
               ``<REPORT_OUT>/hot-repositories-<report>.csv`` (a temporary file renamed over it,
               so a redelivery writes the same file again); returns its path and row count

The remote API is a stand-in the example serves itself (``python -m examples.report api``):
``GET /hot?page=N`` answers 10 made-up repositories per page, the same ones every time. Any
failure of a fetch is retried by the worker (``BUS_MAX_ATTEMPTS``); one that keeps failing is
dead-lettered, and the aggregate and the CSV of that report with it, saying why.

Settings (environment): ``REPORT_API_URL`` (default ``http://127.0.0.1:8002``: where the
stand-in listens, and where ``start`` sends the fetches), ``REPORT_OUT`` (default
``examples/out``), ``REPORT_PAGES`` (default 5), ``REPORT_TOP`` (default 10).

``python -m examples.report api`` serves the stand-in and, once it answers, sends one ``start``
(the schedule sends the next ones); ``python -m examples.report start`` sends one and exits.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import sys
import tempfile
import urllib.request
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from consumers.handlers import Reject
from consumers.tracking import Context
from producer import Envelope, Producer, Step

QUEUE = "reports"
PER_PAGE = 10
FIELDS = ("rank", "name", "stars", "language")
LANGUAGES = ("Python", "Rust", "Go", "TypeScript", "C")
_producer: Producer | None = None


def api_url() -> str:
    return os.environ.get("REPORT_API_URL", "http://127.0.0.1:8002")


def page_of(page: int) -> list[dict[str, Any]]:
    """Page ``page`` of the stand-in API: 10 repositories, the same ones at each call."""
    out = []
    for i in range(PER_PAGE):
        n = (page - 1) * PER_PAGE + i
        seed = zlib.crc32(f"repo-{n}".encode())
        out.append({"name": f"example/repo-{n}", "stars": seed % 50_000,
                    "language": LANGUAGES[seed % len(LANGUAGES)]})  # fmt: skip
    return out


def start(producer: Producer, report: str) -> dict[str, str]:
    """Push one report's workflow: the fetches (a group) and their aggregate (its callback),
    then the CSV, which waits for the aggregate. Returns the ids of the last two."""
    pages = int(os.environ.get("REPORT_PAGES", "5"))
    fetches = [Step({"step": "fetch", "page": n, "api": api_url()}, QUEUE)
               for n in range(1, pages + 1)]  # fmt: skip
    group = producer.group(fetches, then=Step({"step": "aggregate", "report": report}, QUEUE))
    assert group.callback is not None
    written = producer.push({"step": "csv", "report": report}, QUEUE, after=[group.callback])
    return {"aggregate": group.callback.envelope.id, "csv": written.envelope.id}


def handle(env: Envelope, ctx: Context) -> Any:
    """The queue ``reports``'s handler (see the module's docstring)."""
    payload = env.payload if isinstance(env.payload, dict) else {}
    step = payload.get("step")
    if step == "start":
        return start(_get_producer(), report=env.id)
    if step == "fetch":
        url = f"{payload['api']}/hot?page={int(payload['page'])}"
        with urllib.request.urlopen(url, timeout=10) as answer:
            return json.load(answer)
    if step == "aggregate":
        repos = [repo for page in ctx.results() for repo in page]
        top = int(os.environ.get("REPORT_TOP", "10"))
        return sorted(repos, key=lambda r: (-r["stars"], r["name"]))[:top]
    if step == "csv":
        (rows,) = ctx.results()
        return write_csv(str(payload.get("report", env.id)), rows)
    raise Reject(f"not a step of the report: {env.payload!r}")


def write_csv(report: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = Path(os.environ.get("REPORT_OUT", os.path.join("examples", "out")))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"hot-repositories-{report}.csv"
    fd, tmp = tempfile.mkstemp(dir=out, suffix=".tmp")
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for rank, row in enumerate(rows, 1):
            writer.writerow({"rank": rank, **{k: row[k] for k in FIELDS[1:]}})
    os.replace(tmp, path)
    return {"path": str(path), "rows": len(rows)}


def _get_producer() -> Producer:
    global _producer
    if _producer is None:
        _producer = Producer.from_env(name="report")
    return _producer


class StandIn(BaseHTTPRequestHandler):
    """The remote API's stand-in: ``GET /hot?page=N`` (N from 1 to 100)."""

    def do_GET(self) -> None:
        url = urlparse(self.path)
        pages = parse_qs(url.query).get("page", ["1"])
        if url.path != "/hot" or not pages[0].isdigit() or not 1 <= int(pages[0]) <= 100:
            self.send_error(404, "GET /hot?page=N, N from 1 to 100")
            return
        body = json.dumps(page_of(int(pages[0]))).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        print(f"api: {self.address_string()} {format % args}", flush=True)


def serve() -> None:
    """Serve the stand-in on ``REPORT_API_URL``'s host and port; send one report once it
    listens (the schedule sends the next ones, each minute)."""
    where = urlparse(api_url())
    server = ThreadingHTTPServer((where.hostname or "127.0.0.1", where.port or 80), StandIn)
    print(f"api: the stand-in for the remote API on {api_url()}", flush=True)
    sent = start_message()
    print(f"api: a first report requested ({sent}); then every minute", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    print("api: stopped", flush=True)


def start_message() -> str:
    """Push one ``start`` message (what the schedule sends): its id."""
    with Producer.from_env(name="report-start") as producer:
        return producer.push({"step": "start"}, QUEUE).envelope.id


def main(argv: list[str]) -> int:
    if argv == ["api"]:
        serve()
        return 0
    if argv == ["start"]:
        print(start_message())
        return 0
    print("usage: python -m examples.report api|start", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
