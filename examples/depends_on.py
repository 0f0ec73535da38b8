"""The RQ tutorial's ``depends_on`` pair, on the bus, in one command: a job counts the words at a
URL, and a second one, which waits for it, sends a report of the count.

In RQ::

    job = q.enqueue(count_words_at_url, "http://nvie.com")
    report = q.enqueue(send_report, depends_on=job)

Here::

    job = producer.push({"url": url}, QUEUE, track=True)
    report = producer.push({"to": "ops@example.com"}, QUEUE, after=[job])

The second message waits aside until the first is handled, then its handler reads the first
one's result with ``ctx.results()``. Had the first one failed for good, the second would be
dead-lettered with the reason, never sent.

``python -m examples.depends_on`` (``make example-depends-on``) serves the page it counts on a
free loopback port, runs a worker for the queue ``depends-on`` in this process, pushes the pair,
waits until the report is handled, prints both records' outcome and exits (0; 1 if the report
did not go out within a minute). The report is "sent" by writing it to
``<REPORT_OUT>/report-<id>.txt`` (default ``examples/out``).
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from consumers.tracking import Context
from consumers.worker import Worker
from producer import Envelope, Producer, Settings

QUEUE = "depends-on"
PAGE = b"""<html><body><h1>redis-bus</h1><p>A message bus built directly on Redis lists and
pub/sub, which says with measurements what each mode delivers.</p></body></html>"""


def count_words_at_url(env: Envelope, ctx: Context) -> Any:
    """The first job: the number of words of the page at ``payload["url"]``."""
    with urllib.request.urlopen(env.payload["url"], timeout=10) as answer:
        text = re.sub(rb"<[^>]+>", b" ", answer.read()).decode("utf-8", "replace")
    return {"url": env.payload["url"], "words": len(text.split())}


def send_report(env: Envelope, ctx: Context) -> Any:
    """The second job: a report of the first one's count, "sent" to ``payload["to"]``."""
    (counted,) = ctx.results()
    out = Path(os.environ.get("REPORT_OUT", os.path.join("examples", "out")))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"report-{env.id}.txt"
    path.write_text(f"To: {env.payload['to']}\n{counted['url']} has {counted['words']} words\n",
                    encoding="utf-8")  # fmt: skip
    return {"sent_to": env.payload["to"], "words": counted["words"], "path": str(path)}


def handle(env: Envelope, ctx: Context) -> Any:
    """The queue's handler: the count or the report, by the payload."""
    return send_report(env, ctx) if "to" in env.payload else count_words_at_url(env, ctx)


class Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> int:
    settings = Settings.from_env(os.environ)
    page = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=page.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{page.server_address[1]}/"
    worker = Worker(settings, QUEUE, f"depends-on-{os.getpid()}", handle)
    running = threading.Thread(target=worker.run, daemon=True)
    running.start()
    try:
        with Producer.from_settings(settings, name="depends-on") as producer:
            job = producer.push({"url": url}, QUEUE, track=True)
            report = producer.push({"to": "ops@example.com"}, QUEUE, after=[job])
            print(f"pushed {job.envelope.id} (count the words at {url})")
            print(f"pushed {report.envelope.id} (send the report: waits for {job.envelope.id})")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                done = producer.record(report.envelope.id, QUEUE)
                if done is not None and done["final"]:
                    break
                time.sleep(0.05)
            counted = producer.record(job.envelope.id, QUEUE) or {}
            sent = producer.record(report.envelope.id, QUEUE) or {}
    finally:
        worker.stop()
        running.join(10)
        page.shutdown()
    print(f"{job.envelope.id}: {counted.get('state')} {counted.get('result')}")
    print(f"{report.envelope.id}: {sent.get('state')} {sent.get('result') or sent.get('reason')}")
    return 0 if sent.get("state") == "handled" else 1


if __name__ == "__main__":
    sys.exit(main())
