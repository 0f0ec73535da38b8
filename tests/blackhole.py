"""The black hole with a ghost pop: redis-server SIGSTOPped for longer than a worker's block
timeout plus its read deadline, with two messages pushed across the stop.

The server must take DEBUG from loopback (:func:`stoppable_server`): :func:`black_hole` stops
it inside a ``DEBUG SLEEP`` to make the ghost pop happen every time, not by chance.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import make_client
from tests.conftest import quick_settings
from tests.ledger import Ledger, handled_ids
from tests.procs import read_records
from tests.queuekit import BLOCK_S, PENDING, READ_DEADLINE_S, wait_blocked, wait_drained

PAUSE_S = 4.0  # longer than the block timeout + the read deadline
assert PAUSE_S > BLOCK_S + READ_DEADLINE_S


def stoppable_server(tmp_path: Path) -> Iterator[RedisServer]:
    """For a fixture: ``fresh_redis`` (AOF, appendfsync always) that also takes DEBUG from
    loopback, so that :func:`black_hole` can stop it inside a command."""
    server = RedisServer(tmp_path / "redis", "--enable-debug-command", "local", appendonly=True)
    server.start()
    yield server
    server.kill()


def settle_then_black_hole(
    server: RedisServer, r: redis.Redis, path: Path, ledger: Ledger, n: int
) -> tuple[str, str, float]:
    """Push ``n`` and let w1 drain them, then one marker, so that a fresh blocking pop (reissued
    right after the marker) is surely still blocked when :func:`black_hole` stops Redis."""
    ledger.push_many(n)
    wait_drained(r, path, ledger)
    marker = ledger.push()
    wait_for(lambda: marker in handled_ids(read_records(path)), 5, "the marker handled", 0.02)
    wait_blocked(r, "w1")
    return black_hole(server, ledger)


def black_hole(server: RedisServer, ledger: Ledger) -> tuple[str, str, float]:
    """SIGSTOP Redis for PAUSE_S, then SIGCONT, with two messages pushed across it through
    connections opened before (both accepted: their replies come after SIGCONT):

    * ``ghost``: sent in one write after ``DEBUG SLEEP 0.3``; Redis is stopped while it sleeps
      inside that command, so on SIGCONT it runs the LPUSH in the same pass, before its event
      loop times out blocked clients: the worker's BLMOVE (or BRPOP), sent before the stop,
      expired and on a connection the worker dropped during the stop, is served: the ghost pop.
      (Stopped in epoll_wait instead, Redis returns EINTR on SIGCONT (signal(7)) and times the
      pop out first: no ghost pop, or only by chance.)
    * ``queued``: LPUSHed during the stop; it waits in the kernel and runs after SIGCONT.

    Returns (ghost id, queued id, when Redis was resumed)."""
    parked, late = _open_client(server, "parked"), _open_client(server, "late")
    ghost_raw, ghost_payload, ghost_id = ledger.envelope("ghost")
    queued_raw, queued_payload, queued_id = ledger.envelope("queued")
    replies: dict[str, Any] = {}

    def park() -> None:
        pipe = parked.pipeline(transaction=False)
        pipe.execute_command("DEBUG", "SLEEP", "0.3")
        pipe.lpush(PENDING, ghost_raw)
        replies["ghost"] = pipe.execute(raise_on_error=False)

    def queue() -> None:
        try:
            replies["queued"] = late.lpush(PENDING, queued_raw)
        except redis.RedisError as exc:  # reported by the assertion below
            replies["queued"] = exc

    parker = threading.Thread(target=park, daemon=True)
    queuer = threading.Thread(target=queue, daemon=True)
    parker.start()
    time.sleep(0.1)  # Redis is now inside DEBUG SLEEP
    server.pause()
    try:
        time.sleep(0.2)
        queuer.start()
        time.sleep(PAUSE_S - 0.2)
    finally:
        server.resume()
    resumed = time.monotonic()
    parker.join(10)
    queuer.join(10)
    assert isinstance(replies.get("queued"), int), f"push during the stop failed: {replies}"
    assert len(replies.get("ghost", [])) == 2 and isinstance(replies["ghost"][1], int), replies
    ledger.adopt(ghost_id, ghost_payload)
    ledger.adopt(queued_id, queued_payload)
    return ghost_id, queued_id, resumed


def _open_client(server: RedisServer, name: str) -> redis.Redis:
    """A connection opened now, whose read deadline outlasts the black hole."""
    client = make_client(quick_settings(server.url, socket_timeout_s=PAUSE_S + 6), "producer", name)
    assert client.ping()
    return client
