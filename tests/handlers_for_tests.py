"""Handlers the tests pass to the daemons with ``--handler tests.handlers_for_tests:NAME``.

Each appends one JSON line per event to the file named by ``TEST_BUS_RECORD``, flushed before
the handler goes on, so a test can account for every message by id, even after kill -9. A line
holds the envelope's id, src, seq and attempt, its payload (and ``payload_n``, the payload's
``"n"`` if it has one), the pid, the thread's name, and two clocks: ``t``
(``time.monotonic()``, one clock for every process of the host, to measure resume times) and
``wall`` (``time.time()``, to compare with log lines).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time

from consumers.tracking import Context
from producer import Envelope, new_envelope


def _append(env: Envelope, event: str, **extra: object) -> None:
    payload = env.payload
    line = {
        "event": event,
        "id": env.id,
        "src": env.src,
        "seq": env.seq,
        "attempt": env.attempt,
        "priority": env.priority,
        "payload": payload,
        "payload_n": payload.get("n") if isinstance(payload, dict) else None,
        "pid": os.getpid(),
        "thread": threading.current_thread().name,
        "t": time.monotonic(),
        "wall": time.time(),
        **extra,
    }
    with open(os.environ["TEST_BUS_RECORD"], "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()


def record(env: Envelope) -> None:
    """Record the message as handled."""
    _append(env, "handled")


def fail_always(env: Envelope) -> None:
    """Record the attempt, then fail."""
    _append(env, "attempt")
    raise RuntimeError(f"refusing {env.id}")


def slow(env: Envelope) -> None:
    """Record the start, sleep for ``payload["sleep_s"]`` seconds if given, record the end."""
    _append(env, "start")
    if isinstance(env.payload, dict):
        time.sleep(float(env.payload.get("sleep_s", 0)))
    _append(env, "handled")


def slow_record(env: Envelope) -> None:
    """Record the message, then sleep ``TEST_BUS_HANDLER_SLEEP_S`` seconds (default 0.02):
    a subscriber that reads its channel slower than it is published to."""
    _append(env, "handled")
    time.sleep(float(os.environ.get("TEST_BUS_HANDLER_SLEEP_S", "0.02")))


def exit_on_die(env: Envelope) -> None:
    """Record the message; on the payload ``"die"`` raise SystemExit, which ends a thread
    quietly: a handler (or a library it calls) that exits, or a bug past ``except Exception``."""
    _append(env, "handled")
    if env.payload == "die":
        raise SystemExit(3)


class Poison(BaseException):
    """Neither an Exception nor an exit: what a bug past ``except Exception`` may raise."""


def poison(env: Envelope) -> object:
    """Record the start; a payload ``{"poison": how}`` then misbehaves: ``exit`` kills the
    process (``os._exit(1)``), ``systemexit`` raises SystemExit, ``keyboard``
    KeyboardInterrupt, ``base`` a bare BaseException, ``coroutine`` returns a coroutine;
    anything else is recorded as handled. ``{"quick": true}`` returns at once, unrecorded."""
    if isinstance(env.payload, dict) and env.payload.get("quick"):
        return None
    _append(env, "start")
    how = env.payload.get("poison") if isinstance(env.payload, dict) else None
    if how == "exit":
        os._exit(1)
    if how == "systemexit":
        raise SystemExit(3)
    if how == "keyboard":
        raise KeyboardInterrupt
    if how == "base":
        raise Poison("a bare BaseException")
    if how == "coroutine":
        return _never_awaited()
    _append(env, "handled")
    return None


async def _never_awaited() -> None:
    _append(new_envelope("ran", mode="prodcons"), "awaited")


async def async_record(env: Envelope) -> None:
    """An ``async def`` handler: the worker awaits it; the subscriber refuses it at start."""
    _append(env, "handled")


def work(env: Envelope, ctx: Context) -> object:
    """A job that reports progress: record the start, then for ``payload["steps"]`` steps
    sleep ``payload["step_s"]`` and report (i + 1) / steps with the text "step i+1 of n"; raise
    if ``payload["fail"]``; return ``payload["result"]``, or a string of
    ``payload["result_bytes"]`` characters if given."""
    _append(env, "start")
    spec = env.payload if isinstance(env.payload, dict) else {}
    steps = int(spec.get("steps", 0))
    for i in range(steps):
        time.sleep(float(spec.get("step_s", 0)))
        ctx.report_progress((i + 1) / steps, f"step {i + 1} of {steps}")
    if spec.get("fail"):
        raise RuntimeError(f"refusing {env.id}")
    _append(env, "handled")
    if "result_bytes" in spec:
        return "x" * int(spec["result_bytes"])
    return spec.get("result")


def stuck(env: Envelope) -> None:
    """Record the start; then a payload ``{"stuck": how}`` never returns: ``sleep`` blocks in C
    (``time.sleep``, as a ``requests.get`` without a timeout does), ``spin`` loops in Python
    (which the worker's time limit can interrupt); a payload with ``"sleep_s"`` sleeps that
    long; then the message is recorded as handled. ``{"quick": true}`` returns at once,
    unrecorded (a handler that takes next to nothing, which the worker runs in its own
    thread)."""
    spec = env.payload if isinstance(env.payload, dict) else {}
    if spec.get("quick"):
        return
    _append(env, "start")
    if spec.get("stuck") == "sleep":
        time.sleep(3600)
    if spec.get("stuck") == "spin":
        while True:
            pass
    time.sleep(float(spec.get("sleep_s", 0)))
    _append(env, "handled")


async def async_stuck(env: Envelope) -> None:
    """The ``async def`` twin of :func:`stuck`: ``{"stuck": "await"}`` awaits forever (a task
    the time limit cancels), ``{"stuck": "block"}`` calls ``time.sleep`` on the event loop for
    ``payload["block_s"]`` (blocking every other handler of that loop); ``"sleep_s"`` awaits that
    long; then the message is recorded as handled."""
    _append(env, "start")
    spec = env.payload if isinstance(env.payload, dict) else {}
    if spec.get("stuck") == "await":
        await asyncio.sleep(3600)
    if spec.get("stuck") == "block":
        time.sleep(float(spec.get("block_s", 3600)))
    await asyncio.sleep(float(spec.get("sleep_s", 0)))
    _append(env, "handled")


async def async_work(env: Envelope, ctx: Context) -> object:
    """An ``async def`` job with a :class:`Context`: report half way, await ``payload["sleep_s"]``,
    record it handled and return ``payload["result"]``."""
    _append(env, "start")
    spec = env.payload if isinstance(env.payload, dict) else {}
    ctx.report_progress(0.5, "half way")
    await asyncio.sleep(float(spec.get("sleep_s", 0)))
    _append(env, "handled")
    return spec.get("result")


def burn(env: Envelope) -> None:
    """Record the start, keep a core busy for ``payload["cpu_s"]`` seconds of this thread's CPU
    time (default 0.05), record the end: a CPU-bound handler."""
    _append(env, "start")
    spec = env.payload if isinstance(env.payload, dict) else {}
    end = time.thread_time() + float(spec.get("cpu_s", 0.05))
    while time.thread_time() < end:
        pass
    _append(env, "handled")


def exit_on_first(env: Envelope) -> None:
    """Record the start; on a first attempt, a payload ``{"exit": code}`` ends the process with
    that code (76: a worker asking to be recycled); otherwise record the message as handled."""
    _append(env, "start")
    spec = env.payload if isinstance(env.payload, dict) else {}
    if "exit" in spec and env.attempt <= 1:
        os._exit(int(spec["exit"]))
    _append(env, "handled")


def hold(env: Envelope) -> None:
    """Record the start, wait (up to 30 s) until the file ``TEST_BUS_RELEASE`` exists, record the
    end: messages held in a handler's hands for as long as a test needs."""
    _append(env, "start")
    _wait_for_release()
    _append(env, "handled")


def _wait_for_release() -> None:
    """Until the file ``TEST_BUS_RELEASE`` exists (at most 30 s)."""
    release = os.environ["TEST_BUS_RELEASE"]
    deadline = time.monotonic() + 30
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)


def chord(env: Envelope, ctx: Context) -> object:
    """A group's member or its callback. A member (payload ``{"n": n}``) with ``"hold": true``
    records its start and waits for ``TEST_BUS_RELEASE`` as :func:`hold` does; every member
    records its end and returns ``{"n": n}``. The callback (payload ``{"callback": true}``)
    records what ``ctx.results()`` read (``results``)."""
    payload = env.payload if isinstance(env.payload, dict) else {}
    if payload.get("callback"):
        _append(env, "handled", results=ctx.results())
        return {"members": len(ctx.results())}
    if payload.get("hold"):
        _append(env, "start")
        _wait_for_release()
    _append(env, "handled")
    return {"n": payload.get("n")}


def misbehave(env: Envelope, ctx: Context) -> object:
    """A group's member that does what its payload's ``"do"`` says: ``ok`` (returns ``{"n"}``),
    ``exit`` (``os._exit(1)`` on every attempt), ``systemexit`` (raises SystemExit),
    ``base`` (raises a bare BaseException), ``nonjson`` (returns a set: no result stored).
    A callback (``{"callback": true}``) records ``ctx.results()`` as :func:`chord` does."""
    payload = env.payload if isinstance(env.payload, dict) else {}
    if payload.get("callback"):
        _append(env, "handled", results=ctx.results())
        return None
    _append(env, "start")
    do = payload.get("do")
    if do == "exit":
        os._exit(1)
    if do == "systemexit":
        raise SystemExit(3)
    if do == "base":
        raise BaseException("a bare BaseException")
    _append(env, "handled")
    return {1, 2} if do == "nonjson" else {"n": payload.get("n")}


_probe: list[object] = []


def probe_first(env: Envelope) -> None:
    """Record the message with ``before``: how many messages wait in the pending list of the
    queue ``TEST_BUS_PROBE_QUEUE`` (on ``TEST_BUS_PROBE_URL``) as its handler starts."""
    import redis

    if not _probe:
        _probe.append(redis.Redis.from_url(os.environ["TEST_BUS_PROBE_URL"]))
    client = _probe[0]
    assert isinstance(client, redis.Redis)
    before = client.llen(f"bus:{{{os.environ['TEST_BUS_PROBE_QUEUE']}}}:pending")
    _append(env, "handled", before=before)
