"""The HTTP producers under gunicorn, beside a naive one-LPUSH Flask endpoint and one that only
answers "ok", all three apps under the same gunicorn configuration in the same run.

Ours is ``web.wsgi:app``; the references are :mod:`loadtest.bench.naiveweb` (``POST /naive``,
``POST /ok``). Each app runs under ``gunicorn -c web/gunicorn.conf.py`` with the worker count
and class given explicitly (the same for all), against one private redis-server. ``wrk`` POSTs
``{"payload": 1}`` (``wrk/post.lua``) to one endpoint at a time, in short rounds that take the
endpoints in a rotating order; each figure is the median over the rounds.

Checks, or the section fails: wrk's non-2xx and socket errors stay under 1% of the requests;
each endpoint answers its documented status (202, or 200 for "ok") to one request made here;
and after each round of ``/prodcons`` (and of the naive LPUSH) the list holds at least as many
messages as wrk counted 2xx answers: a 202 means the message is in Redis.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.bench.common import PYTHON, ROOT, Result, Scale, clean_env, spawn
from loadtest.harness.answers import http_status
from loadtest.harness.ports import free_port
from loadtest.harness.procs import stop
from loadtest.harness.server import throwaway_server
from loadtest.harness.waits import wait_for
from producer import keys

SECTION = "http"
WORKERS = 4  # web/gunicorn.conf.py's default (BUS_WEB_WORKERS)
WORKER_CLASS = "sync"  # web/gunicorn.conf.py's
CONF = ROOT / "web" / "gunicorn.conf.py"
SCRIPT = Path(__file__).resolve().parent / "wrk" / "post.lua"
THREADS, CONNECTIONS = 2, 32
BODY = b'{"payload": 1}'
MAX_ERROR_SHARE = 0.01


@dataclass(frozen=True)
class Endpoint:
    label: str  # the row names' prefix
    app: str  # which gunicorn: "bus" or "naive"
    path: str
    status: int  # what one request must answer
    key: str | None  # the list a 2xx must have pushed onto


ENDPOINTS = (
    Endpoint("POST /prodcons", "bus", "/prodcons", 202, keys.pending("default")),
    Endpoint("POST /pubsub", "bus", "/pubsub", 202, None),
    Endpoint("naive", "naive", "/naive", 202, "bench:naive"),
    Endpoint("ok", "naive", "/ok", 200, None),
)


def gunicorn(app: str, port: int) -> list[str]:
    """The command line: the project's config file, loopback, the shared worker settings."""
    return [PYTHON, "-m", "gunicorn", "-c", str(CONF), "--bind", f"127.0.0.1:{port}",
            "--workers", str(WORKERS), "--worker-class", WORKER_CLASS, app]  # fmt: skip


def post(url: str) -> int:
    """One POST of :data:`BODY`; the status code (0 when nothing answers)."""
    req = urllib.request.Request(url, BODY, {"Content-Type": "application/json"}, method="POST")
    return http_status(req, timeout_s=5)


def wrk(url: str, duration_s: float) -> dict[str, Any]:
    """One wrk run against ``url``: the figures its script prints (requests, p99_us, errors)."""
    duration = f"{max(1, round(duration_s))}s"
    args = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{duration}", "-s", str(SCRIPT), url]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=duration_s + 30)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH "):
            figures: dict[str, Any] = json.loads(line[len("BENCH ") :])
            figures["rps"] = figures["requests"] / (figures["duration_us"] / 1e6)
            return figures
    raise RuntimeError(f"wrk printed no figures for {url}: {out.stdout}{out.stderr}")


def check(endpoint: Endpoint, got: dict[str, Any], in_redis: int | None) -> None:
    """Fail on many errors, or on fewer messages in Redis than 2xx answers."""
    requests = max(1, got["requests"])
    socket_errors = got["connect"] + got["read"] + got["write"] + got["timeout"]
    if got["status"] > MAX_ERROR_SHARE * requests:
        raise RuntimeError(f"{endpoint.label}: {got['status']} non-2xx of {requests} answers")
    if socket_errors > MAX_ERROR_SHARE * requests:
        raise RuntimeError(f"{endpoint.label}: {socket_errors} socket errors, {requests} answers")
    accepted = got["requests"] - got["status"]
    if in_redis is not None and in_redis < accepted:
        raise RuntimeError(f"{endpoint.label}: {accepted} accepted, only {in_redis} in Redis")


def run(scale: Scale) -> list[Result]:
    if not shutil.which("wrk"):
        raise RuntimeError("wrk is not installed (make bootstrap installs Debian's package)")
    rounds = scale.n(5, 1)
    duration_s = scale.s(4, 1)
    samples: dict[str, list[dict[str, Any]]] = {e.label: [] for e in ENDPOINTS}
    with throwaway_server() as server:
        client = server.plain_client()
        ports = {"bus": free_port(), "naive": free_port()}
        apps = {
            "bus": spawn(gunicorn("web.wsgi:app", ports["bus"]),
                         clean_env(BUS_REDIS_URL=server.url)),
            "naive": spawn(gunicorn("loadtest.bench.naiveweb:app", ports["naive"]),
                           clean_env(BENCH_REDIS_URL=server.url)),
        }  # fmt: skip
        try:
            for endpoint in ENDPOINTS:
                url = f"http://127.0.0.1:{ports[endpoint.app]}{endpoint.path}"
                proc = apps[endpoint.app]

                def answers(url: str = url, proc: subprocess.Popen[bytes] = proc) -> bool:
                    if proc.poll() is not None:
                        raise RuntimeError(f"gunicorn exited with {proc.returncode}")
                    return post(url) != 0

                wait_for(answers, 30, f"gunicorn at {url}", 0.1)
                status = post(url)
                if status != endpoint.status:
                    raise RuntimeError(f"{endpoint.label} answered {status}, not {endpoint.status}")
            if not scale.smoke:  # every worker connected and warm before the clock
                for endpoint in ENDPOINTS:
                    wrk(f"http://127.0.0.1:{ports[endpoint.app]}{endpoint.path}", 1)
            for i in range(rounds):
                for endpoint in ENDPOINTS[i % len(ENDPOINTS) :] + ENDPOINTS[: i % len(ENDPOINTS)]:
                    if endpoint.key:
                        client.delete(endpoint.key)
                    got = wrk(f"http://127.0.0.1:{ports[endpoint.app]}{endpoint.path}", duration_s)
                    if endpoint.key:
                        time.sleep(0.05)  # requests wrk gave up on at its deadline may still land
                        in_redis = int(client.llen(endpoint.key))
                        got["in_redis"] = in_redis
                    else:
                        in_redis = None
                    check(endpoint, got, in_redis)
                    samples[endpoint.label].append(got)
        finally:
            for proc in apps.values():
                stop(proc)
    return rows(samples, rounds, duration_s)


def rows(samples: dict[str, list[dict[str, Any]]], rounds: int, duration_s: float) -> list[Result]:
    """req/s rows compared with the naive endpoint (and with "ok"), p99 rows with "ok"'s."""
    how = (f"gunicorn -c web/gunicorn.conf.py -w {WORKERS} -k {WORKER_CLASS}; wrk -t{THREADS} "
           f"-c{CONNECTIONS} -d{max(1, round(duration_s))}s POST {BODY.decode()}; "
           f"median of {rounds} interleaved rounds")  # fmt: skip
    out: list[Result] = []

    def extra(label: str) -> dict[str, Any]:
        return {"how": how, "rounds": samples[label]}

    def median(label: str, field: str) -> float:
        return statistics.median(s[field] for s in samples[label])

    out.append(Result(SECTION, "ok req/s", median("ok", "rps"), "req/s", extra=extra("ok")))
    out.append(Result(SECTION, "naive req/s", median("naive", "rps"), "req/s", ref="ok req/s",
                      extra=extra("naive")))  # fmt: skip

    def paired(label: str, ref: str) -> float:
        """The median of the per-round ratios: rounds next to each other share the noise."""
        pairs = zip(samples[label], samples[ref], strict=True)
        return statistics.median(a["rps"] / b["rps"] for a, b in pairs)

    for label in ("POST /prodcons", "POST /pubsub"):
        rps = median(label, "rps")
        out.append(Result(SECTION, f"{label} req/s", rps, "req/s", ref="naive req/s",
                          target=">= 1.0x naive", extra=dict(extra(label),
                          paired_ratio_vs_naive=paired(label, "naive"))))  # fmt: skip
        out.append(Result(SECTION, f"{label} req/s vs ok", rps, "req/s", ref="ok req/s",
                          target=">= 0.8x ok",
                          extra={"paired_ratio_vs_ok": paired(label, "ok")}))  # fmt: skip
    out.append(Result(SECTION, "ok p99", median("ok", "p99_us") / 1000, "ms"))
    for label in ("naive", "POST /prodcons", "POST /pubsub"):
        target = "" if label == "naive" else ">= 0.67x (p99 within 1.5x ok's)"
        out.append(Result(SECTION, f"{label} p99", median(label, "p99_us") / 1000, "ms",
                          ref="ok p99", higher_is_better=False, target=target))  # fmt: skip
    return out
