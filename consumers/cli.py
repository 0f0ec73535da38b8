"""``python -m consumers``: the worker, the subscriber, the reaper, the dead-letter tools and
the status view (:mod:`consumers.status`, whose exit codes are its own).

The only place the daemons read the environment and install signal handlers: SIGTERM or
SIGINT finishes the message in hand and exits 0; a second signal exits at once with 130.
``worker --processes N`` runs :class:`consumers.supervisor.Supervisor` instead, which passes the
first signal on to its children; on a second it kills them and exits 130.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType

import redis

from consumers import schedules as schedule_file
from consumers import status, tools
from consumers.daemon import Daemon
from consumers.handlers import load_handler
from consumers.parser import build_parser, check_name
from consumers.refusals import configuration_refused
from consumers.schedules import Schedule
from consumers.subscriber import NO_SHARDED_PATTERNS, Subscriber
from consumers.supervisor import Supervisor, child_args, child_names
from consumers.worker import Worker
from producer import Settings, SettingsError
from producer.errors import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RECYCLE,
    EXIT_SOFTWARE,
    EXIT_TEMPFAIL,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    ConfigurationRefused,
    HandlerError,
    HandlersStuck,
    NameTaken,
)
from producer.observe.logs import setup_logging

log = logging.getLogger("consumers")
# How long a thread holding the interpreter makes another wait (Python's default: 5 ms). A
# worker's dispatcher waits for its handlers' threads to let go of it to settle and claim; at
# 5 ms, handlers that take microseconds would drain what they hold first.
SWITCH_INTERVAL_S = 0.0005


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        overrides: dict[str, object] = {}
        for option in ("delivery", "concurrency"):
            if getattr(args, option, None):
                overrides[option] = getattr(args, option)
        settings = Settings.from_env(os.environ if environ is None else environ, **overrides)
        setup_logging(args.log_level or settings.log_level)
        worker = args.command == "worker"
        handler = load_handler(args.handler, worker) if hasattr(args, "handler") else None
        if getattr(args, "name", None) is not None:
            check_name(args.name)
        if args.command == "subscriber" and args.patterns and settings.sharded_pubsub:
            raise SettingsError(NO_SHARDED_PATTERNS)
        found = schedule_file.load(settings) if worker else []
    except (SettingsError, HandlerError, ValueError) as exc:
        print(f"python -m consumers: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    queues = list(dict.fromkeys(getattr(args, "queues", None) or settings.queues))
    if args.command == "status":
        return status.run(settings, args.json, args.watch)
    try:
        if args.command == "message" and args.words[0] == "cancel" and len(args.words) == 2:
            return tools.cancel_message(settings, args.words[1], queues, args.json)
        if args.command == "message" and len(args.words) == 1:
            return tools.show_message(settings, args.words[0], queues, args.json, args.wait)
        if args.command == "message":
            print("python -m consumers message: give ID, or cancel ID", file=sys.stderr)
            return EXIT_USAGE
        if args.command == "dead":
            if args.action == "list" and args.limit is None:
                args.limit = 100
            return tools.dead_letters(settings, args)
        if args.command == "reaper":
            stopping = threading.Event()
            install_signal_handlers(stopping.set)
            return tools.run_reaper(settings, queues, args.once, stopping)
        if args.command == "worker" and args.check:
            return tools.check_workers(settings, queues)
        if args.command == "worker" and args.processes:
            return supervise(args, settings, argv, environ)
    except redis.RedisError as exc:
        refused = configuration_refused(exc, settings, f"python -m consumers {args.command}")
        detail = refused or status.describe_error(exc, settings)
        print(f"python -m consumers: Redis unavailable: {detail}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    assert handler is not None
    return run_daemons(args, settings, queues, handler, found)


def supervise(
    args: argparse.Namespace, settings: Settings, argv: list[str], environ: dict[str, str] | None
) -> int:
    """``worker --processes N``: N worker processes named ``<name>-i`` under a supervisor."""
    name = args.name or default_name()
    try:
        for child in child_names(name, args.processes):
            check_name(child)
    except SettingsError as exc:
        print(f"python -m consumers: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    supervisor = Supervisor(
        child_args(argv), name, args.processes, settings.stop_timeout_s, environ
    )
    install_signal_handlers(supervisor.stop, force=supervisor.kill)
    return supervisor.run()


def default_name() -> str:
    """A daemon's name without --name: ``<host>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def run_daemons(
    args: argparse.Namespace,
    settings: Settings,
    queues: list[str],
    handler: Callable[..., object],
    schedules: list[Schedule],
) -> int:
    """Build the worker(s) (each firing its queue's ``schedules``) or the subscriber and run them
    until a signal."""
    name = args.name or default_name()
    daemons: list[Daemon]
    if args.command == "worker":
        ordered = getattr(args, "ordered", False)
        workers = [Worker(settings, q, name, handler, schedules, queues[:i] if ordered else ())
                   for i, q in enumerate(queues)]  # fmt: skip
        if ordered:
            for w in workers:
                w.share_slots(workers)
        daemons = list(workers)
        order = " in that order" if ordered else ""
        what = f"queues {' '.join(queues)}{order}, {settings.delivery}"
    else:
        channels = args.channels or ([] if args.patterns else ["default"])
        daemons = [Subscriber(settings, channels, args.patterns or [], name, handler)]
        what = "channels " + " ".join(channels + (args.patterns or []))
    log.info("%s %s starting on %s (%s)", args.command, name, settings.redis_url_redacted, what)

    def stop_all() -> None:
        for d in daemons:
            d.stop()

    install_signal_handlers(stop_all)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    # Daemon threads, and the daemons' end is waited for, not their threads': a worker's thread
    # held up in a handler hands the loop over to another (see consumers.daemon) and may never
    # return.
    threads = [threading.Thread(target=d.run, name=f"{d.role}-{d.name}", daemon=True)
               for d in daemons]  # fmt: skip
    for t in threads:
        t.start()
    failed: Daemon | None = None

    def over(d: Daemon, t: threading.Thread) -> bool:  # (or its thread died before it led)
        return d.finished.is_set() or (not t.is_alive() and d.leader in (None, t))

    while not all(over(d, t) for d, t in zip(daemons, threads, strict=True)):
        for d in daemons:
            d.finished.wait(0.2)  # short waits keep the main thread free to run signal handlers
        failed = failed or next((d for d in daemons if d.failure is not None), None)
        if failed is not None:
            stop_all()  # one consumer is gone: the others must not go on half the process
    # Also when every thread had ended before the loop first looked (a refusal at once).
    failed = failed or next((d for d in daemons if d.failure is not None), None)
    if failed is not None and isinstance(failed.failure, NameTaken):
        print(f"python -m consumers: {failed.failure}", file=sys.stderr)
        return EXIT_TEMPFAIL
    if failed is not None and isinstance(failed.failure, HandlersStuck):
        print(f"python -m consumers: {failed.failure} (exit {EXIT_RECYCLE})", file=sys.stderr)
        return EXIT_RECYCLE
    if failed is not None and isinstance(failed.failure, ConfigurationRefused):
        print(f"python -m consumers: configuration error: {failed.failure}", file=sys.stderr)
        return EXIT_CONFIG
    if failed is not None:
        what = getattr(failed, "queue", None) or "its channels"
        print(
            f"python -m consumers: {args.command} {name} stopped: the consumer of "
            f"{'queue ' + what if hasattr(failed, 'queue') else what} ended with "
            f"{type(failed.failure).__name__}: {failed.failure}",
            file=sys.stderr,
        )
        return EXIT_SOFTWARE
    log.info("%s %s stopped", args.command, name)
    return EXIT_OK


def install_signal_handlers(
    stop: Callable[[], None], force: Callable[[], None] | None = None
) -> None:
    """First SIGTERM/SIGINT: call ``stop`` (finish the message in hand). Second: call ``force``
    (if given), then exit at once."""
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) > 1:
            os.write(2, b"second signal: exiting without finishing the message in hand\n")
            if force is not None:
                force()
            os._exit(EXIT_INTERRUPTED)
        log.info(
            "%s: finishing the message in hand, then exiting (again to force)",
            signal.Signals(signum).name,
        )
        stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
