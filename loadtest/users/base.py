"""What every locust user shares: the locustfile's options (:func:`add_options`, read with
:func:`option` and :func:`names`), this process's :class:`~loadtest.users.sending.Generator`,
the pacing (``--rate``), and a stop that never cuts a request off (:class:`GracefulStop`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import cycle
from typing import Any

from locust import User, constant_throughput, events, runners
from locust.env import Environment
from locust.exception import StopUser
from locust.user.task import LOCUST_STATE_STOPPING, LOCUST_STATE_WAITING

from loadtest import shapes
from loadtest.ledger import records
from loadtest.users.sending import Generator

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
    add("--hang-share", type=float, default=0.0,
        help="share of the messages marked to hang their handler (payload \"fate\": \"hang\"; "
        "the load-test handler, loadtest.ledger.handlers:record, then never returns)")
    add("--die-share", type=float, default=0.0,
        help="share of the messages marked to end their handler's process (\"fate\": \"die\")")
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


def stop_if_test_stopping(env: Environment) -> None:
    """Start no message once the test is being stopped: a user whose wait ended just as the
    runner stopped would otherwise send and be killed mid-request (an "aborted" line)."""
    runner = env.runner
    if runner is not None and runner.state in STOPPING_STATES:
        raise StopUser()


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


class Sending(GracefulStop):
    """A user that sends one message per task run, at ``--rate``, to its destinations (the
    ``--queue`` or ``--channel`` names, by ``dest_field``) in turn."""

    environment: Environment
    wait_time = paced
    dest_field = "queue"

    def on_start(self) -> None:
        self.dests: Iterator[str] = cycle(names(self.environment, self.dest_field))
        fates = generator.fates
        fates.hang_share = float(option(self.environment, "hang_share", 0.0))
        fates.die_share = float(option(self.environment, "die_share", 0.0))

    def next_message(self) -> tuple[str, str]:
        """The next destination and load-test id; stops the user instead once the test is
        stopping."""
        stop_if_test_stopping(self.environment)
        return next(self.dests), generator.lids.next()
