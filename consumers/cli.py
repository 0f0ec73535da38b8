"""``python -m consumers``: run the queue worker or the pub/sub subscriber.

The only place the daemons read the environment and install signal handlers: SIGTERM or
SIGINT finishes the message in hand and exits 0 (within one block timeout); a second signal
exits at once with status 130.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from consumers.daemon import Daemon
from consumers.handlers import DEFAULT, HandlerError, load_handler
from consumers.subscriber import Subscriber
from consumers.worker import Worker
from producer import Settings, SettingsError
from producer.logs import setup_logging

EXIT_OK = 0
EXIT_CONFIG = 78  # sysexits EX_CONFIG: bad BUS_* setting or --handler
EXIT_FORCED = 130  # a second signal: stopped without finishing the message in hand

log = logging.getLogger("consumers")

EPILOG = """\
Every BUS_* variable of the README applies (BUS_REDIS_URL, BUS_BLOCK_TIMEOUT_S, ...).
SIGTERM/SIGINT finish the message in hand and exit 0; a second signal exits at once (130).
examples:
  python -m consumers worker --queue default --handler myapp.jobs:handle
  python -m consumers subscriber --channel default --pattern 'orders.*'
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m consumers``."""
    parser = argparse.ArgumentParser(
        prog="python -m consumers",
        description="redis-bus daemons: a FIFO queue worker and a pub/sub subscriber.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{worker,subscriber}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--name",
        help="consumer name shown in Redis and stats "
        "(default: <host>-<pid>); a worker's in-flight list is named after it",
    )
    common.add_argument(
        "--handler",
        default=DEFAULT,
        help=f"callable 'pkg.module:function' receiving each Envelope; an "
        f"exception means failure (default: {DEFAULT})",
    )
    common.add_argument(
        "--log-level", help="DEBUG, INFO, WARNING... (default: BUS_LOG_LEVEL or INFO)"
    )

    w = sub.add_parser(
        "worker",
        parents=[common],
        help="consume queues (LPUSH by producers)",
        description="Pop messages from the tail of bus:{queue}:pending (FIFO) "
        "and run the handler on each.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    w.add_argument(
        "--queue",
        action="append",
        dest="queues",
        metavar="Q",
        help="queue to consume (repeatable; one thread each; default: default)",
    )
    w.add_argument(
        "--delivery",
        choices=("at-least-once", "at-most-once"),
        help="at-least-once: BLMOVE + ack, nothing lost on a crash (default); "
        "at-most-once: BRPOP, the message in hand is lost on a crash",
    )

    s = sub.add_parser(
        "subscriber",
        parents=[common],
        help="listen on pub/sub channels",
        description="Subscribe to bus:ch:<channel> channels and patterns, watch the "
        "link with PING/PONG deadlines, count what was missed.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument(
        "--channel",
        action="append",
        dest="channels",
        metavar="C",
        help="channel to subscribe to (repeatable; default: default)",
    )
    s.add_argument(
        "--pattern",
        action="append",
        dest="patterns",
        metavar="GLOB",
        help="channel pattern, e.g. 'orders.*' (repeatable)",
    )
    return parser


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    env = dict(os.environ if environ is None else environ)
    try:
        overrides = {"delivery": args.delivery} if getattr(args, "delivery", None) else {}
        settings = Settings.from_env(env, **overrides)
        setup_logging(args.log_level or settings.log_level)
        handler = load_handler(args.handler)
    except (SettingsError, HandlerError, ValueError) as exc:
        print(f"python -m consumers: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    daemons: list[Daemon]
    if args.command == "worker":
        queues = args.queues or ["default"]
        daemons = [Worker(settings, q, name, handler) for q in dict.fromkeys(queues)]
    else:
        channels = args.channels or ([] if args.patterns else ["default"])
        daemons = [Subscriber(settings, channels, args.patterns or [], name, handler)]
    log.info(
        "%s %s starting on %s (%s)",
        args.command,
        name,
        settings.redis_url_redacted,
        ", ".join(_describe(d) for d in daemons),
    )
    install_signal_handlers(daemons)
    run_all(daemons)
    log.info("%s %s stopped", args.command, name)
    return EXIT_OK


def install_signal_handlers(daemons: list[Daemon]) -> None:
    """First SIGTERM/SIGINT: stop gracefully. Second: exit at once."""
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) > 1:
            os.write(2, b"second signal: exiting without finishing the message in hand\n")
            os._exit(EXIT_FORCED)
        log.info(
            "%s: finishing the message in hand, then exiting (again to force)",
            signal.Signals(signum).name,
        )
        for d in daemons:
            d.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def run_all(daemons: list[Daemon]) -> None:
    """Run one daemon in this thread, or several in threads until all have stopped."""
    if len(daemons) == 1:
        daemons[0].run()
        return
    threads = [threading.Thread(target=d.run, name=f"{d.role}-{i}") for i, d in enumerate(daemons)]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.5)  # short joins keep the main thread free to run signal handlers


def _describe(d: Daemon) -> str:
    if isinstance(d, Worker):
        return f"queue {d.queue}, {d.settings.delivery}"
    if isinstance(d, Subscriber):
        return "channels " + " ".join(d.channels + d.patterns)
    return d.role
