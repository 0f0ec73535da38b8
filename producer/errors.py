"""Every error the bus raises, under one base, and the exit codes of its commands.

``except BusError`` catches all of them. Each also keeps the built-in or redis-py class that
describes its kind, so code written against those still works::

    BusError
    ├── SettingsError (ValueError)        a BUS_* setting is missing, malformed or inconsistent
    ├── EnvelopeError (ValueError)        bytes that are not a valid envelope (dead-lettered)
    ├── PayloadError (ValueError)         a payload strict JSON cannot carry (nothing was sent)
    ├── QueueFull                         the queue is at BUS_MAX_QUEUE_DEPTH (nothing was sent)
    ├── IdempotencyConflict               an idempotency key reused for another request
    ├── UnknownPrerequisite (ValueError)  after names a message without a record (nothing sent)
    ├── Unconfirmed (redis.ConnectionError)  the reply was lost: the message may have been sent
    │   └── NotReplicated                 sent, but fewer replicas confirmed it than asked
    ├── DeadLink (redis.ConnectionError)  a daemon's link stopped answering (no PONG in time)
    ├── ConfigurationRefused (RuntimeError)  Redis refused a daemon's login, rights or name
    │   └── CertificateRefused            TLS: the server's certificate did not verify
    ├── NameTaken (RuntimeError)          another live worker consumes under this --name
    ├── HandlerError (ValueError)         --handler does not name a usable callable
    ├── Reject                            raised by a handler: dead-letter this message now
    ├── TimeLimitExceeded                 a handler ran past its time limit (its attempt failed)
    └── HandlersStuck (RuntimeError)      a worker gave up on too many handlers still running

Errors of Redis itself (``redis.ConnectionError`` when nothing was sent, ``redis.ResponseError``
when Redis refused a command) pass through as redis-py raises them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    from producer.store.envelope import Envelope

# Exit codes of `python -m consumers ...` and `python -m loadtest ...` (sysexits.h where one fits).
EXIT_OK = 0
EXIT_UNHEALTHY = 1  # a check failed: no live worker, an unhealthy bus, no such record
EXIT_USAGE = 2  # argparse's own
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: Redis could not be reached
EXIT_SOFTWARE = 70  # EX_SOFTWARE: a consumer thread ended unexpectedly
EXIT_TEMPFAIL = 75  # EX_TEMPFAIL: another live worker holds this --name
EXIT_RECYCLE = 76  # a worker gave up on too many stuck handlers: restart it (--processes does)
EXIT_CONFIG = 78  # EX_CONFIG: a bad setting, or what Redis refused on a first connection
EXIT_INTERRUPTED = 130  # a second signal: stopped at once


class BusError(Exception):
    """The base of every error redis-bus raises."""


class SettingsError(BusError, ValueError):
    """A ``BUS_*`` variable is missing, malformed or inconsistent with another."""


class EnvelopeError(BusError, ValueError):
    """Bytes that are not a valid envelope; ``raw`` keeps them for the dead-letter list."""

    def __init__(self, reason: str, raw: bytes) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


class PayloadError(BusError, ValueError):
    """A payload strict UTF-8 JSON cannot carry (NaN, Infinity, a lone surrogate, an object)."""


class QueueFull(BusError):
    """The queue holds ``limit`` messages, or the batch would take it past: nothing was pushed.
    Counted as ``refused_full``; the sequence numbers stay free."""

    def __init__(self, queue: str, depth: int, limit: int, count: int) -> None:
        super().__init__(
            f"queue {queue!r} is full ({depth} of {limit} messages waiting): "
            f"{'the message was' if count == 1 else f'the {count} messages were'} not pushed"
        )
        self.queue = queue
        self.depth = depth
        self.limit = limit
        self.count = count


class IdempotencyConflict(BusError):
    """A push's or publish's idempotency key was used within its window for another request
    (another payload or options): nothing was sent (:mod:`producer.store.once`). ``dest``: the
    queue or channel."""

    def __init__(self, dest: str, key: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was used on {dest!r} within its window for another "
            "request (the payload or options differ): nothing was sent"
        )
        self.dest = dest
        self.key = key


class UnknownPrerequisite(BusError, ValueError):
    """``after`` names messages the bus has no record of (never pushed, not tracked, or their
    record expired): nothing was sent. ``missing`` lists them as (queue, id)."""

    def __init__(self, missing: tuple[tuple[str, str], ...]) -> None:
        self.missing = missing
        shown = ", ".join(f"{i} on {q}" for q, i in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        super().__init__(
            f"after names messages with no record: {shown}{more} (a prerequisite must be a "
            "tracked message whose record has not expired): nothing was sent"
        )


class Unconfirmed(BusError, redis.ConnectionError):
    """The connection broke after the command was sent: the message may or may not have been
    pushed or published. Counted as ``unconfirmed``; its sequence number is never reused.
    ``envelopes``: the messages concerned (their ids tell a retry from a duplicate)."""

    envelopes: tuple[Envelope, ...] = ()


class NotReplicated(Unconfirmed):
    """The push ran on the primary but fewer than ``wait_replicas`` replicas confirmed it in
    time (``BUS_WAIT_REPLICAS``): a failover now could lose it. Counted as ``unconfirmed``."""


class DeadLink(BusError, redis.ConnectionError):
    """The link looks alive to the socket but Redis stopped answering (e.g. no PONG in time)."""


class ConfigurationRefused(BusError, RuntimeError):
    """Redis refused this configuration on the first connection: a setting to fix (the
    message names it), not an outage to wait out."""


class CertificateRefused(ConfigurationRefused):
    """TLS: the server's certificate did not verify on the first connection (BUS_TLS_*)."""


class NameTaken(BusError, RuntimeError):
    """Another live process consumes this queue under this worker's name."""

    def __init__(self, queue: str, name: str) -> None:
        super().__init__(
            f"another worker named {name!r} is consuming queue {queue!r} (its lease on the name "
            "is alive); two would take each other's messages in flight: start this one with "
            "another --name"
        )


class HandlerError(BusError, ValueError):
    """The ``--handler`` path does not name a callable."""


class Reject(BusError):
    """Raised by a handler for a message that can never succeed (a payload it cannot use):
    the worker dead-letters it at once, with this reason, instead of retrying it up to
    ``BUS_MAX_ATTEMPTS`` times. Any other exception is a failure worth retrying."""


class TimeLimitExceeded(BusError):
    """A handler ran past its time limit (``BUS_HANDLER_TIMEOUT_S`` or the message's
    ``timeout_s``): its attempt failed. Also raised inside a plain handler's thread once it is
    given up on, so that Python code that catches it may clean up (code blocked in C, a
    ``time.sleep`` say, sees it only when that call returns)."""


class HandlersStuck(BusError, RuntimeError):
    """A worker gave up on more handlers than it has slots, and they are still running (blocked
    where Python cannot interrupt them): the process must be restarted (exit 76; ``--processes``
    does it)."""
