"""Locust users for redis-bus, its naive baseline, and Redis itself.

Against ``make run`` (web on 127.0.0.1:8000, Redis on 127.0.0.1:6399, a user per role: the
direct users need a login, ``--redis-url`` or ``$BUS_REDIS_URL``, e.g. make run's admin)::

    set -a; . .run/env/admin.env; set +a
    .venv/bin/locust -f loadtest/locustfile.py --host http://127.0.0.1:8000        # web UI
    .venv/bin/locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 \\
        --headless -u 50 -r 10 -t 30s [BusProdcons BusPubsub ...] [--tags seed]
    .venv/bin/locust -f loadtest/locustfile.py,loadtest/shapes/bursts.py ... --burst 3 --idle 5

Users (pick them by class name, or by tag: ``prodcons``, ``pubsub``, ``seed``):

``BusProdcons`` / ``BusPubsub``      POST ``{"payload", "queue"|"channel"}`` to the bus (202).
``SeedGet``                          the seed articles' ``GET /prodcons`` and ``GET /pubsub`` (303).
``RedisPush`` / ``RedisPublish``     the project's Producer straight to Redis, reported to locust
                                     as ``LPUSH`` / ``PUBLISH``: Redis's own cost beside the web's.
``BaselineProdcons`` / ``BaselinePubsub``  the naive app (:mod:`loadtest.baseline`) at
                                     ``--baseline-host``; they exist only when
                                     ``LOADTEST_BASELINE_HOST`` is set.

Shapes (``loadtest/shapes``: ``steady``, ``step``, ``bursts``) are added with ``-f``; a directory
needs ``--class-picker`` to choose one. Options: ``--rate``, ``--payload-bytes``, ``--queue``,
``--channel``, ``--redis-url``, ``--baseline-host``, ``--bus-stats-interval``, ``--record`` and the
shapes' ``--step-users``, ``--step-s``, ``--burst``, ``--idle`` (locust's --help cannot list a
locustfile's options; the web UI shows them with their help).

Every sending user sends ``--rate`` messages a second. With ``LOADTEST_RECORD`` (or
``--record``) naming a file, every attempt becomes a ``sent`` line of the ledger
(:mod:`loadtest.records`), and the test's start and stop ``phase`` lines. While the test runs,
the master (or the local runner) polls the bus's ``/api/stats`` every ``--bus-stats-interval``
seconds and shows its delivery figures (:mod:`loadtest.busfigures`) in the log, at the end of
the summary and in a "redis-bus" tab of the web UI.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from itertools import cycle
from typing import Any

import redis
from gevent import GreenletExit
from locust import FastHttpUser, User, constant_throughput, events, runners, tag, task
from locust.contrib.fasthttp import ResponseContextManager
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import LocalRunner, MasterRunner, WorkerRunner
from locust.user.task import LOCUST_STATE_STOPPING, LOCUST_STATE_WAITING

from loadtest import busfigures, busmonitor, records, shapes
from loadtest.sending import Generator, baseline_outcome, bus_outcome, sent_line, short
from producer import QueueFull, Unconfirmed, keys
from producer.connection.client import drop_connections

log = logging.getLogger("loadtest.locustfile")
summary = logging.getLogger("locust.stats_logger")  # where locust prints its own summary

ENV_BASELINE = "LOADTEST_BASELINE_HOST"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6399/0"  # make run's Redis
TIMEOUT_S = 10.0
STOPPING_STATES = (runners.STATE_CLEANUP, runners.STATE_STOPPING, runners.STATE_STOPPED)


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    """This locustfile's options. Locust's --help cannot list them (it prints before it imports
    the locustfile); the web UI shows them with these texts."""
    add = parser.add_argument
    # fmt: off
    add("--rate", type=float, default=10.0,
        help="messages per second each user sends (locust's constant_throughput; 0: no wait)")
    add("--payload-bytes", type=int, default=0, help="pad every payload with this many bytes")
    add("--queue", action="append", default=None,
        help="queue(s) the prodcons users push to, in turn (repeat the option or give a comma "
        "list; default: default)")
    add("--channel", action="append", default=None,
        help="channel(s) the pubsub users publish on, in turn (default: default)")
    add("--redis-url", default=os.environ.get("BUS_REDIS_URL", DEFAULT_REDIS_URL),
        help="Redis of the direct users RedisPush/RedisPublish (default: $BUS_REDIS_URL, "
        f"else {DEFAULT_REDIS_URL})")
    add("--baseline-host", default=os.environ.get(ENV_BASELINE, ""),
        help=f"base URL of the naive baseline app for the Baseline* users (default: "
        f"${ENV_BASELINE}; those users exist only when it is set)")
    add("--bus-stats-interval", type=float, default=5.0,
        help="seconds between polls of the bus's GET /api/stats (0: off); its figures since "
        "the test started show in the log, after the summary and in the 'redis-bus' tab. "
        "'unaccounted' = pushed - handled - dead-lettered - growth of the queue and of "
        "in-flight: negative when at-least-once delivers a message twice or a send whose "
        "reply was lost (503 'unknown', not counted as pushed) did run, and off by a few while "
        "running (each process writes its counters every BUS_STATS_INTERVAL_S)")
    add("--record", default=None, include_in_web_ui=False,
        help=f"ledger file for the 'sent' lines (default: ${records.ENV_FILE})")
    # fmt: on
    shapes.add_options(parser)


generator = Generator()  # this process's; locust creates the users, so they reach it here


def option(env: Environment, name: str, default: Any) -> Any:
    """A parsed option (the web UI may have changed it), or ``default``."""
    value = getattr(env.parsed_options, name, None)
    return default if value is None else value


def names(env: Environment, name: str) -> list[str]:
    """A repeatable, comma-separated option as a list of names (default ``["default"]``)."""
    value = option(env, name, None)
    items = [value] if isinstance(value, str) else list(value or [])
    return [n.strip() for item in items for n in str(item).split(",") if n.strip()] or ["default"]


def paced(user: User) -> float:
    """``constant_throughput(--rate)``, the rate read as the test runs (0: no wait at all)."""
    rate = float(option(user.environment, "rate", 10.0))
    return constant_throughput(rate)(user) if rate > 0 else 0.0


def stop_if_test_stopping(user: User) -> None:
    """Start no message once the test is being stopped: a user whose wait ended just as the
    runner stopped would otherwise send and be killed mid-request (an "aborted" line)."""
    runner = user.environment.runner
    if runner is not None and runner.state in STOPPING_STATES:
        raise StopUser()


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


class GracefulStop:
    """Stopped while waiting, a user finishes its wait and leaves; it is never killed.

    locust kills a waiting user asynchronously: the kill can land after the wait ended and a
    request began, cutting it off mid-flight (its outcome then unknown), even with
    ``--stop-timeout``. Marking it stopping instead lets locust's own check after the wait end
    it cleanly. ``force`` (no ``--stop-timeout``, or past it) still kills at once."""

    _state: str | None

    def stop(self, force: bool = False) -> bool:
        if not force and self._state == LOCUST_STATE_WAITING:
            self._state = LOCUST_STATE_STOPPING
            return False
        return super().stop(force)  # type: ignore[misc]


class _Sender(GracefulStop, FastHttpUser):
    """POSTs one message per task run and writes its ledger line."""

    abstract = True
    wait_time = paced
    network_timeout = TIMEOUT_S
    connection_timeout = TIMEOUT_S
    system = "bus"
    mode = "prodcons"
    dest_field = "queue"

    def on_start(self) -> None:
        self.dests: Iterator[str] = cycle(names(self.environment, self.dest_field))

    def url(self) -> str:
        return f"/{self.mode}"

    def send(self) -> None:
        stop_if_test_stopping(self)
        dest, lid = next(self.dests), generator.lids.next()
        pad = int(option(self.environment, "payload_bytes", 0))
        body = {"payload": records.payload(lid, pad), self.dest_field: dest}
        name = f"/{self.mode}" if self.system == "bus" else f"{self.system} /{self.mode}"
        t0 = records.now()
        try:
            with self.client.post(self.url(), json=body, name=name, catch_response=True) as resp:
                fields = judged(resp, self.system)
        except GreenletExit:  # the user was stopped mid-request: it may or may not have run
            generator.record(**sent_line(self.system, self.mode, "http", dest, lid, t0,
                                         err="aborted"))  # fmt: skip
            raise
        generator.record(**sent_line(self.system, self.mode, "http", dest, lid, t0, **fields))


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
        stop_if_test_stopping(self)
        with self.client.get(path, allow_redirects=False, catch_response=True) as resp:
            if resp.status_code == 303:
                resp.success()
            else:
                error = getattr(resp, "error", None)
                resp.failure(short(error or f"expected 303, got {resp.status_code}"))


class _Direct(GracefulStop, User):
    """Sends with the project's Producer straight to Redis; reports each call to locust."""

    abstract = True
    wait_time = paced
    mode, dest_field, command = "prodcons", "queue", "LPUSH"

    def on_start(self) -> None:
        self.dests: Iterator[str] = cycle(names(self.environment, self.dest_field))

    def send(self) -> None:
        stop_if_test_stopping(self)
        producer = generator.producer(str(option(self.environment, "redis_url", DEFAULT_REDIS_URL)))
        dest, lid = next(self.dests), generator.lids.next()
        payload = records.payload(lid, int(option(self.environment, "payload_bytes", 0)))
        key = keys.pending(dest) if self.mode == "prodcons" else keys.channel(dest)
        t0, started = records.now(), time.perf_counter()
        exc: Exception | None = None
        length, fields = 0, {}  # what the ledger says when it raised
        try:
            if self.mode == "prodcons":
                sent = producer.push(payload, dest)
            else:
                sent = producer.publish(payload, dest)
            envelope, length = sent.envelope, len(sent.envelope.encode())
            rc = sent.result if self.mode == "pubsub" else None
            fields = {"out": "accepted", "id": envelope.id, "src": envelope.src,
                      "seq": envelope.seq, "rc": rc}  # fmt: skip
        except Unconfirmed as e:  # sent, reply lost: it may have run
            exc, fields = e, {"out": "unknown", "err": short(e)}
        except (redis.RedisError, QueueFull) as e:  # surely not sent
            exc, fields = e, {"out": "rejected", "err": short(e)}
        except GreenletExit:
            # A connection abandoned mid-reply went back to the pool: drop the idle ones.
            drop_connections(producer.client, inuse_connections=False)
            generator.record(**sent_line("bus", self.mode, "redis", dest, lid, t0,
                                         err="aborted"))  # fmt: skip
            raise
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.environment.events.request.fire(
            request_type=self.command, name=key, response_time=elapsed_ms,
            response_length=length, exception=exc, context={},
        )  # fmt: skip
        generator.record(**sent_line("bus", self.mode, "redis", dest, lid, t0, **fields))


class RedisPush(_Direct):
    """Producer.push straight to Redis (LPUSH onto ``bus:{q}:pending``)."""

    @tag("prodcons")
    @task
    def lpush(self) -> None:
        self.send()


class RedisPublish(_Direct):
    """Producer.publish straight to Redis (PUBLISH on ``bus:ch:<channel>``)."""

    mode, dest_field, command = "pubsub", "channel", "PUBLISH"

    @tag("pubsub")
    @task
    def publish(self) -> None:
        self.send()


# ---- events: ledger phases, --tags selection, the bus's figures -----------------------------


class BusFiguresView:
    """The master's (or local runner's) :class:`busmonitor.Monitor` of the current test."""

    monitor: busmonitor.Monitor | None = None

    def rows(self) -> list[dict[str, Any]]:
        if self.monitor is None:
            return busfigures.table_rows(None, "no test has run yet (or --bus-stats-interval 0)")
        return busfigures.table_rows(self.monitor.latest, self.monitor.note())


view = BusFiguresView()


def runs_users(env: Environment) -> bool:
    return isinstance(env.runner, LocalRunner | WorkerRunner)


def controls(env: Environment) -> bool:
    return isinstance(env.runner, LocalRunner | MasterRunner)


@events.init.add_listener
def on_init(environment: Environment, **_: Any) -> None:
    if runs_users(environment):
        generator.open_ledger(option(environment, "record", None))
    drop_users_without_tagged_tasks(environment)
    if environment.web_ui:
        busmonitor.add_web_tab(environment.web_ui, view.rows)


def drop_users_without_tagged_tasks(env: Environment) -> None:
    """With --tags/--exclude-tags, run only the user classes that keep a task (locust would
    start the others and fail them with "No tasks defined")."""
    tags = set(option(env, "tags", None) or ())
    excluded = set(option(env, "exclude_tags", None) or ())
    if not (tags or excluded):
        return

    def keeps(t: Any) -> bool:
        own: set[str] = getattr(t, "locust_tag_set", set())
        return (not tags or bool(own & tags)) and not own & excluded

    kept = [u for u in env.user_classes if any(keeps(t) for t in u.tasks)]
    if kept and len(kept) < len(env.user_classes):
        log.info("tags select %s", ", ".join(u.__name__ for u in kept))
        env.user_classes[:] = kept


@events.test_start.add_listener
def on_test_start(environment: Environment, **_: Any) -> None:
    if runs_users(environment):
        generator.record(k="phase", what="start", t=records.now())
    interval_s = float(option(environment, "bus_stats_interval", 5.0))
    view.monitor = None
    if not controls(environment) or interval_s <= 0:
        return
    if not environment.host:
        log.warning("bus figures: no --host, so no /api/stats to show")
        return
    view.monitor = busmonitor.Monitor(environment.host, interval_s)
    view.monitor.start()


@events.test_stop.add_listener
def on_test_stop(environment: Environment, **_: Any) -> None:
    if runs_users(environment):
        generator.record(k="phase", what="stop", t=records.now())
        generator.flush_stats()  # the last direct pushes, before the figures settle
    if view.monitor:
        view.monitor.stop()


@events.quit.add_listener
def on_quit(**_: Any) -> None:
    monitor = view.monitor
    if monitor and (figures := monitor.final()) is not None:
        summary.info("\n%s\n", busfigures.format_block(figures, monitor.source))
    generator.close()
