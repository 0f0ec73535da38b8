"""Message handlers: the defaults, and loading one by dotted path (``pkg.module:function``).

A handler is any callable taking one :class:`producer.Envelope` (the worker also awaits an
``async def``; the subscriber refuses one, see :func:`check_handler`); returning means success and
raising means failure (the worker retries, then dead-letters; the subscriber dead-letters);
raising :class:`Reject` dead-letters the message at once. A
queue handler that takes a second positional parameter also receives a
:class:`consumers.tracking.Context` (progress reports for tracked messages); what it returns is
a tracked message's result.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable

from producer import Envelope
from producer.errors import HandlerError
from producer.errors import (
    Reject as Reject,  # a handler's own: from consumers.handlers import Reject
)

log = logging.getLogger("consumers.handler")

Handler = Callable[..., object]  # (Envelope) or, for a queue, (Envelope, Context)
DEFAULT = "consumers.handlers:log_message"


def log_message(env: Envelope) -> None:
    """Log each message at INFO: the demo handler, so you can watch messages arrive."""
    text = repr(env.payload)
    if len(text) > 200:
        text = text[:200] + "..."
    origin = f"src={env.src} seq={env.seq}" if env.src else "src=- seq=-"
    age = f"{env.age_ms()}" if env.ts else "-"  # ts 0: the producer did not say when it sent
    log.info(
        "%s id=%s %s attempt=%d age_ms=%s payload=%s",
        env.mode,
        env.id,
        origin,
        env.attempt,
        age,
        text,
    )


def noop(env: Envelope) -> None:
    """Do nothing (for benchmarks)."""


def load_handler(path: str, allow_async: bool = False) -> Handler:
    """Import ``pkg.module:function`` (or ``pkg.module.function``) and return the callable;
    an ``async def`` only with ``allow_async`` (the worker awaits it; the subscriber cannot)."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise HandlerError(f"handler {path!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HandlerError(f"cannot import handler module {module_name!r}: {exc}") from None
    target = getattr(module, attr, None)
    if not callable(target):
        raise HandlerError(f"{module_name!r} has no callable named {attr!r}")
    if not allow_async:
        check_handler(target, path)
    return target


def check_handler(handler: Handler, name: str = "") -> None:
    """Refuse a handler the subscriber could only call without running it: an ``async def``
    (its call returns a coroutine that nothing there would await)."""
    call = getattr(handler, "__call__", None)  # noqa: B004 -- an instance's async __call__
    checks = (inspect.iscoroutinefunction, inspect.isasyncgenfunction)
    if any(check(handler) or check(call) for check in checks):
        raise HandlerError(
            f"handler {name or getattr(handler, '__qualname__', repr(handler))!r} is an "
            "async def: the subscriber calls plain functions, so it would never run (the "
            "worker awaits them); wrap it (def handler(env): asyncio.run(your_handler(env)))"
        )
