"""The load test's ledger: one JSON line per event, written by every process that sends or
handles a message, so the runner can account for each message by its load-test id (``lid``).

Every message a load generator sends carries a payload ``{"lid": <unique id>, ...}``; a few may
also carry ``"fate": "hang"`` or ``"fate": "die"`` (:class:`Fates`): the load-test handler then
never returns, or ends its process. The lid
exists for both systems under test: redis-bus wraps the payload in its envelope (which has its own
``id``), the naive baseline pushes the payload's JSON as it is. Each process appends to a file of
its own (named by ``LOADTEST_RECORD``), one ``os.write`` per line on an ``O_APPEND`` descriptor,
so a line is on disk before the process goes on and survives a ``kill -9`` after it.

Lines (compact JSON; absent fields are null):

``{"k": "sent", "sys", "mode", "via", "dest", "lid", "t0", "t1", "st", "out", "id", "src", "seq",
"rc", "err"[, "fate"]}``
    a producer's attempt: ``sys`` ``"bus"`` or ``"baseline"``; ``mode`` ``"prodcons"`` or
    ``"pubsub"``; ``via`` ``"http"``, ``"redis"`` (the direct Producer) or ``"close"`` (the
    runner's stream-closing messages); ``dest`` the queue or channel; ``t0``/``t1`` wall-clock
    seconds before and after; ``st`` the HTTP status (0 when there was no answer); ``out`` one of
    :data:`OUTCOMES`; ``id``, ``src``, ``seq``, ``rc`` (receivers) from a 202 answer; ``fate``
    only when the payload carries one.
``{"k": "got", "sys", "mode", "who", "lid", "id", "src", "seq", "att", "t"}``
    a consumer finished handling a message (written after the handler's work, so a message whose
    handler was cut short by a crash has no line); ``who`` the consumer's name (the runner knows
    which queue or channel each consumer reads); ``id``, ``src``, ``seq`` and ``att`` (attempt)
    from the envelope, null for the baseline; ``t`` wall-clock seconds.
``{"k": "phase", "what", "t"}``
    the load generator's test began (``what`` ``"start"``: the runner's clock zero, faults are
    timed from it) or ended (``"stop"``).
``{"k": "start", "who", "lid", "t"}``
    a consumer started handling a message (only with ``LOADTEST_RECORD_START=1``: the runner uses
    it to kill a worker while a message is in its hands).
``{"k": "doomed", "who", "lid", "fate", "att", "t"}``
    the load-test handler met a message marked to ``hang`` or ``die``, on attempt ``att``: written
    just before it sleeps past every time limit, or ends its process with ``os._exit(1)``.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

ENV_FILE = "LOADTEST_RECORD"  # path of this process's ledger file
ENV_WHO = "LOADTEST_WHO"  # the consumer's name in its lines
ENV_START = "LOADTEST_RECORD_START"  # "1": also write a "start" line per message
ENV_SLEEP = "LOADTEST_HANDLER_SLEEP_S"  # seconds of simulated work per message
ENV_SLOW_FLAG = "LOADTEST_SLOW_FLAG"  # if set, the work is done only while this file exists

FATES = ("hang", "die")  # what a payload may ask of the load-test handler
HANG_S = 3600.0  # a hanging handler sleeps this long: far past any time limit of a run
EXIT_DIE = 1  # the exit status of a process whose handler met a "die" message

SLOW_RCVBUF = 64 * 1024  # a slow consumer's TCP receive buffer (see small_receive_buffers)

SYSTEMS = ("bus", "baseline")
# accepted: the producer said the message is in (2xx). rejected: it said surely not (4xx, or a 503
# whose outcome is "rejected"). unknown: no answer, a timeout, a 503 "unknown", or any error of
# the baseline, which cannot tell.
OUTCOMES = ("accepted", "rejected", "unknown")


class Ledger:
    """Appends lines to one file; cheap enough for thousands of lines a second."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    @classmethod
    def from_env(cls) -> Ledger | None:
        """The ledger named by ``LOADTEST_RECORD``, or None when it is not set."""
        path = os.environ.get(ENV_FILE)
        return cls(path) if path else None

    def write(self, **fields: Any) -> None:
        """Append one line (one write call: whole, or not at all)."""
        os.write(self._fd, json.dumps(fields, separators=(",", ":")).encode() + b"\n")

    def close(self) -> None:
        os.close(self._fd)


class Lids:
    """Unique load-test ids: a random prefix per generator, then a counter."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix + uuid.uuid4().hex[:10]
        self._n = count(1)

    def next(self) -> str:
        return f"{self.prefix}-{next(self._n)}"


class Work:
    """The simulated work of a load-test handler: ``LOADTEST_HANDLER_SLEEP_S`` seconds per
    message, always, or only while the file ``LOADTEST_SLOW_FLAG`` names exists (a consumer
    that is slow for a while: the runner creates and removes the file)."""

    def __init__(self, sleep_s: float, flag: str | None) -> None:
        self.sleep_s = sleep_s
        self.flag = flag

    @classmethod
    def from_env(cls) -> Work:
        return cls(float(os.environ.get(ENV_SLEEP, "0") or 0), os.environ.get(ENV_SLOW_FLAG))

    def do(self) -> None:
        if self.sleep_s and (self.flag is None or os.path.exists(self.flag)):
            time.sleep(self.sleep_s)


class Fates:
    """Which messages a generator marks to hang or to kill their handler's process:
    ``hang_share`` and ``die_share`` of them, evenly spaced (the n-th is marked when the
    share's running count steps up; the "die" steps half a period later), so the same run marks
    the same messages and no share is ever off by more than one."""

    def __init__(self, hang_share: float = 0.0, die_share: float = 0.0) -> None:
        self.hang_share = hang_share
        self.die_share = die_share
        self._n = 0

    def next(self) -> str | None:
        """The fate of the next message: "hang", "die", or None (handled normally)."""
        self._n += 1
        if _steps(self._n, self.hang_share, 0.0):
            return "hang"
        if _steps(self._n, self.die_share, 0.5):
            return "die"
        return None


def _steps(n: int, share: float, phase: float) -> bool:
    return share > 0 and int(n * share + phase) > int((n - 1) * share + phase)


def payload(lid: str, pad_bytes: int = 0, fate: str | None = None) -> dict[str, Any]:
    """The payload a load generator sends: the lid, its fate if any, padding to reach a size."""
    body: dict[str, Any] = {"lid": lid}
    if fate is not None:
        body["fate"] = fate
    if pad_bytes > 0:
        body["pad"] = "x" * pad_bytes
    return body


def fate_of(value: Any) -> str | None:
    """The fate a payload asks of the load-test handler ("hang", "die"), or None."""
    fate = value.get("fate") if isinstance(value, dict) else None
    return fate if fate in FATES else None


def lid_of(value: Any) -> str | None:
    """The lid in a payload (a dict, or the baseline's raw JSON bytes), or None."""
    if isinstance(value, bytes | str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, dict):
        lid = value.get("lid")
        return lid if isinstance(lid, str) else None
    return None


def now() -> float:
    """Wall-clock seconds: comparable between the processes of one host."""
    return time.time()


def read(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every whole line of a ledger file (a torn last line of a killed process is skipped)."""
    with open(path, "rb") as f:
        for line in f:
            if line.endswith(b"\n"):
                yield json.loads(line)


def read_dir(directory: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every line of every ``*.jsonl`` ledger in ``directory``."""
    for path in sorted(Path(directory).glob("*.jsonl")):
        yield from read(path)


class Tail:
    """New whole lines of a growing ledger file, parsed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        whole = data[: data.rfind(b"\n") + 1]
        self.offset += len(whole)
        new = [json.loads(line) for line in whole.splitlines() if line]
        self.lines.extend(new)
        return new


def small_receive_buffers() -> None:
    """Give every TCP connection this process opens from now on a fixed receive buffer of
    :data:`SLOW_RCVBUF`, set before it connects (which turns the kernel's autotuning off). The
    slow consumers of the slow-subscriber fault run so: autotuning grows a receive buffer up to
    ``net.ipv4.tcp_rmem``'s maximum (32 MB on some hosts), and a reader that slow would take
    longer to fill the kernel's buffers, and reach Redis's output-buffer limit, than the fault
    lasts; whether it was cut off then depended on the host, not on the consumer."""
    original = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and self.type == socket.SOCK_STREAM:
            self.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
        original(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign,assignment]


if os.environ.get(ENV_SLOW_FLAG):  # imported by the slow consumer's handler, before it connects
    small_receive_buffers()
