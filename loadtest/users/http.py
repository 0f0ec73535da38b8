"""The users that send over HTTP: to the bus (``BusProdcons``, ``BusPubsub``), to the naive
baseline (``BaselineProdcons``, ``BaselinePubsub``), and the seed articles' GETs (``SeedGet``)."""

from __future__ import annotations

import os
from typing import Any

from gevent import GreenletExit
from locust import FastHttpUser, tag, task
from locust.contrib.fasthttp import ResponseContextManager

from loadtest.ledger import records
from loadtest.users.base import (
    ENV_BASELINE,
    TIMEOUT_S,
    GracefulStop,
    Sending,
    generator,
    option,
    paced,
    stop_if_test_stopping,
)
from loadtest.users.sending import baseline_outcome, bus_outcome, sent_line, short


def judged(resp: ResponseContextManager, system: str) -> dict[str, Any]:
    """Ledger fields for an HTTP answer; a locust failure unless it is a 2xx."""
    status, error = resp.status_code or 0, getattr(resp, "error", None)  # error: no answer
    if system == "bus":
        fields, failure = bus_outcome(status, resp.content, error)
    else:
        fields, failure = baseline_outcome(status, error)
    if failure:
        resp.failure(failure)
    return fields


class _Sender(Sending, FastHttpUser):
    """POSTs one message per task run and writes its ledger line."""

    abstract = True
    network_timeout = TIMEOUT_S
    connection_timeout = TIMEOUT_S
    system = "bus"
    mode = "prodcons"

    def url(self) -> str:
        return f"/{self.mode}"

    def send(self) -> None:
        dest, lid = self.next_message()
        pad = int(option(self.environment, "payload_bytes", 0))
        fate = generator.fates.next() if self.system == "bus" and self.mode == "prodcons" else None
        body = {"payload": records.payload(lid, pad, fate), self.dest_field: dest}
        marked = {"fate": fate} if fate else {}
        name = f"/{self.mode}" if self.system == "bus" else f"{self.system} /{self.mode}"
        t0 = records.now()
        try:
            with self.client.post(self.url(), json=body, name=name, catch_response=True) as resp:
                fields = judged(resp, self.system)
        except GreenletExit:  # the user was stopped mid-request: it may or may not have run
            generator.record(**sent_line(self.system, self.mode, "http", dest, lid, t0,
                                         err="aborted", **marked))  # fmt: skip
            raise
        generator.record(**sent_line(self.system, self.mode, "http", dest, lid, t0, **fields,
                                     **marked))  # fmt: skip


class BusProdcons(_Sender):
    """POST /prodcons with ``{"payload", "queue"}``, queues from ``--queue`` in turn."""

    @tag("prodcons")
    @task
    def prodcons(self) -> None:
        self.send()


class BusPubsub(_Sender):
    """POST /pubsub with ``{"payload", "channel"}``, channels from ``--channel`` in turn."""

    mode, dest_field = "pubsub", "channel"

    @tag("pubsub")
    @task
    def pubsub(self) -> None:
        self.send()


class _Baseline(_Sender):
    """The naive app at ``--baseline-host`` (absolute URLs: locust's --host overrides every
    user class's host, and it names the bus)."""

    abstract = True
    system = "baseline"

    def url(self) -> str:
        base = str(option(self.environment, "baseline_host", "")).rstrip("/")
        return f"{base}/{self.mode}"


class BaselineProdcons(_Baseline):
    """POST the same body to the baseline's /prodcons (LPUSH, consumed by BLPOP)."""

    abstract = not os.environ.get(ENV_BASELINE)

    @tag("prodcons")
    @task
    def prodcons(self) -> None:
        self.send()


class BaselinePubsub(_Baseline):
    """POST the same body to the baseline's /pubsub (a new connection per request)."""

    abstract = not os.environ.get(ENV_BASELINE)
    mode, dest_field = "pubsub", "channel"

    @tag("pubsub")
    @task
    def pubsub(self) -> None:
        self.send()


class SeedGet(GracefulStop, FastHttpUser):
    """The seed articles' style: GET /prodcons or /pubsub, 303 to / (no ledger lines: the
    payload is a random number the web picks)."""

    wait_time = paced
    network_timeout = TIMEOUT_S
    connection_timeout = TIMEOUT_S

    @tag("seed", "prodcons")
    @task
    def get_prodcons(self) -> None:
        self.get("/prodcons")

    @tag("seed", "pubsub")
    @task
    def get_pubsub(self) -> None:
        self.get("/pubsub")

    def get(self, path: str) -> None:
        stop_if_test_stopping(self.environment)
        with self.client.get(path, allow_redirects=False, catch_response=True) as resp:
            if resp.status_code == 303:
                resp.success()
            else:
                error = getattr(resp, "error", None)
                resp.failure(short(error or f"expected 303, got {resp.status_code}"))
