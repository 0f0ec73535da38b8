"""The locustfile's event hooks: the ledger's start and stop phases, the ``--tags``
selection of user classes, and the bus's own figures (polled by the master or the local runner,
shown in the log, after the summary and in a "redis-bus" tab of the web UI)."""

from __future__ import annotations

import logging
from typing import Any

from locust import events
from locust.env import Environment
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

from loadtest.ledger import records
from loadtest.users import busfigures, busmonitor
from loadtest.users.base import generator, option

log = logging.getLogger("loadtest.locustfile")
summary = logging.getLogger("locust.stats_logger")  # where locust prints its own summary


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
