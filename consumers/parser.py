"""The command line of ``python -m consumers``: its subcommands, options and help
(``python -m consumers --help``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from consumers import status
from consumers.handlers import DEFAULT
from consumers.supervisor import (
    MAX_PROCESSES,
    RESTART_BASE_S,
    RESTART_CAP_S,
    STABLE_S,
    STOP_SLACK_S,
)
from producer import SettingsError
from producer.settings.checks import MAX_CONCURRENCY

FORMAT = argparse.RawDescriptionHelpFormatter
PROCESSES = f"""\
--processes N: child i is `python -m consumers worker` with the same options and --name
<name>-i (<name>: --name, by default <host>-<pid> of the supervisor), so each has its own lease,
processing list and heartbeat. A child that exits unasked is restarted under its name after a
backoff ({RESTART_BASE_S:g} s doubling up to {RESTART_CAP_S:g} s, jittered; reset once it lived \
{STABLE_S:g} s); one that exits 76
(stuck handlers: recycle me) at once; on a 78 (configuration) the supervisor stops every child
and exits 78. SIGTERM/SIGINT goes on to every child, which finishes its messages in hand (up to
BUS_STOP_TIMEOUT_S; {STOP_SLACK_S:g} s later what is left is killed), then exit 0. A second
signal kills the children, exit 130. The children die with the supervisor, even on kill -9
(Linux). One process per core for CPU-bound handlers (a process runs Python on one core at a
time: the GIL); N=1 keeps one worker that comes back after it exits (the Procfile's worker).
"""
EPILOG = """\
Every BUS_* variable of docs/configuration.md applies (BUS_REDIS_URL, BUS_BLOCK_TIMEOUT_S, ...).
SIGTERM/SIGINT finish the messages in hand (a worker waits up to BUS_STOP_TIMEOUT_S for them)
and exit 0; a second signal exits at once (130). A worker's handler past BUS_HANDLER_TIMEOUT_S
(or its message's timeout_s) has failed its attempt: retried, then dead-lettered.
Exit codes: 0 done, 1 unhealthy (--check) or refused, 69 Redis unreachable, 70 a consumer ended
unexpectedly (see its log), 75 another live worker has this --name, 76 more handlers stuck past
their time limit than the worker has slots (restart it: --processes does), 78 bad configuration
(also a login, user or certificate Redis refuses on a worker's or subscriber's first connection).
status (see status --help): 0 healthy, 1 unhealthy, 2 usage, 69 Redis unreachable.
message: 0 the record was printed, 1 no record (or, with --wait, not handled or dead in time).
examples:
  python -m consumers worker --queue default --handler myapp.jobs:handle
  python -m consumers worker --handler myapp.jobs:fetch --concurrency 100   # an async def
  python -m consumers worker --check --queue default
  python -m consumers subscriber --channel default --pattern 'orders.*'
  python -m consumers reaper --once
  python -m consumers dead list --queue default
  python -m consumers status --watch 2
  python -m consumers message 3f2a... --wait 30
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m consumers``."""
    parser = argparse.ArgumentParser(
        prog="python -m consumers",
        epilog=EPILOG,
        formatter_class=FORMAT,
        description="redis-bus daemons: a FIFO queue worker, a pub/sub subscriber, and tools.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", help="DEBUG, INFO, WARNING... (default: BUS_LOG_LEVEL)")
    daemon = argparse.ArgumentParser(add_help=False, parents=[common])
    daemon.add_argument(
        "--name",
        help="consumer name in Redis and stats (default: <host>-<pid>), printable ASCII "
        "without spaces (Redis's rule for client names); a worker's in-flight list is named "
        "after it",
    )
    daemon.add_argument(
        "--handler",
        default=DEFAULT,
        help="callable 'pkg.module:function' receiving each Envelope (a queue handler may take "
        "a second parameter, a consumers.tracking.Context); raising means failure (retried, "
        "then dead-lettered), raising consumers.handlers.Reject dead-letters at once "
        f"(default: {DEFAULT})",
    )
    queues = argparse.ArgumentParser(add_help=False)
    queues.add_argument(
        "--queue",
        action="append",
        dest="queues",
        metavar="Q",
        help="queue (repeatable; default: every queue of BUS_QUEUES)",
    )

    def command(
        name: str, parents: list[argparse.ArgumentParser], text: str, epilog: str = EPILOG
    ) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            parents=parents,
            help=text,
            description=text,
            epilog=epilog,
            formatter_class=FORMAT,
        )

    w = command(
        "worker",
        [daemon, queues],
        "Pop messages from the tail of bus:{queue}:pending "
        "(FIFO) and run the handler on each; one thread per queue.",
        PROCESSES + "\n" + EPILOG,
    )
    w.add_argument(
        "--delivery",
        choices=("at-least-once", "at-most-once"),
        help="at-least-once: claim + ack, nothing lost on a crash (default); "
        "at-most-once: BRPOP, the messages in hand are lost on a crash",
    )
    w.add_argument(
        "--concurrency",
        type=positive_int("--concurrency", MAX_CONCURRENCY),
        metavar="N",
        help="messages in the handler's hands at once, per queue: N threads for a plain "
        "function, N tasks on one event loop for an async def (default: BUS_CONCURRENCY, 8)",
    )
    w.add_argument(
        "--ordered",
        action="store_true",
        help="serve the --queue list in that order, as 'rq worker high default low' does: a "
        "queue's messages are taken only while every queue before it has none pending, and "
        "the queues share one set of --concurrency slots (default: each queue on its own, "
        "at once, with slots of its own)",
    )
    alone = w.add_mutually_exclusive_group()
    alone.add_argument(
        "--check",
        action="store_true",
        help="do not consume: exit 0 if every queue "
        "has a worker with a fresh heartbeat, else 1 (a liveness probe)",
    )
    alone.add_argument(
        "--processes",
        type=positive_int("--processes", MAX_PROCESSES),
        metavar="N",
        help="run N worker processes with these options under this one, which supervises "
        "them (see below); without it the worker runs in this process",
    )
    s = command(
        "subscriber",
        [daemon],
        "Subscribe to bus:ch:<channel> channels and patterns, "
        "watch the link with PING/PONG deadlines, count what was missed.",
    )
    s.add_argument(
        "--channel",
        action="append",
        dest="channels",
        metavar="C",
        help="channel (repeatable; default: default)",
    )
    s.add_argument(
        "--pattern",
        action="append",
        dest="patterns",
        metavar="GLOB",
        help="channel pattern, e.g. 'orders.*' (repeatable)",
    )
    r = command(
        "reaper",
        [common, queues],
        "Requeue the in-flight messages of workers whose "
        "heartbeat expired (every worker also does this on its own).",
    )
    r.add_argument("--once", action="store_true", help="one pass, then exit")
    d = command("dead", [common], "List, requeue or delete a queue's dead letters.")
    d.add_argument("action", choices=("list", "requeue", "purge"))
    d.add_argument("--queue", default="default", help="queue (default: default)")
    d.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="at most N entries (list: default 100; requeue: default all)",
    )
    d.add_argument("--yes", action="store_true", help="purge: really delete")
    m = command(
        "message",
        [common],
        "Print a tracked message's record: its state (scheduled, pending, in-flight, retrying, "
        "handled, dead, cancelled), attempt, worker, progress, error and result. "
        "'message cancel ID' cancels it: waiting, it will not be delivered; in a handler's "
        "hands, the handler's Context.cancelled turns true and the attempt is not retried.",
    )
    m.add_argument(
        "words",
        nargs="+",
        metavar="[cancel] ID",
        help="the message id (the 'id' of POST /prodcons's answer), after 'cancel' to cancel it",
    )
    m.add_argument(
        "--queue",
        action="append",
        dest="queues",
        metavar="Q",
        help="its queue (repeatable; default: look in every queue of BUS_QUEUES)",
    )
    m.add_argument("--json", action="store_true", help="print the record as JSON")
    m.add_argument(
        "--wait",
        type=positive_seconds,
        metavar="SECONDS",
        help="poll until the message is handled or dead, at most SECONDS (exit 1 if not)",
    )
    text = (
        "Print the whole bus (queues, workers, subscribers, channels, producers, latency) "
        "as tables, and exit 0 if healthy, 1 if not: a probe."
    )
    st = sub.add_parser(
        "status",
        parents=[common],
        help=text,
        description=text,
        epilog=status.EPILOG,
        formatter_class=FORMAT,
    )
    st.add_argument("--json", action="store_true", help="print the overview as JSON instead")
    st.add_argument(
        "--watch",
        type=positive_seconds,
        metavar="SECONDS",
        help="redraw every SECONDS until Ctrl-C (with --json: one JSON document per line)",
    )
    return parser


def check_name(name: str) -> str:
    """``name`` if Redis takes it in a client name (``bus:<role>:<name>``: CLIENT SETNAME
    refuses spaces, control characters and anything outside printable ASCII); else a
    :class:`SettingsError` naming ``--name``."""
    if not name:
        raise SettingsError("--name is empty: leave it out for the default <host>-<pid>")
    bad = sorted({c for c in name if not "!" <= c <= "~"})
    if bad:
        shown = ", ".join(repr(c) for c in bad[:5])
        raise SettingsError(
            f"--name {name!r}: Redis refuses client names with spaces, control characters or "
            f"anything outside printable ASCII ({shown})"
        )
    return name


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds greater than 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def positive_int(option: str, most: int) -> Callable[[str], int]:
    """An argparse type: a whole number from 1 to ``most`` (argparse exits 2 naming ``option``
    otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not 1 <= value <= most:
            raise argparse.ArgumentTypeError(f"must be from 1 to {most}, got {value}")
        return value

    parse.__name__ = option
    return parse
