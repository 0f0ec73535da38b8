"""Helpers of the Redis Cluster tests: queues placed on distinct shards, the bus's settings and
environment for a cluster, and a producer thread that pushes to several queues and notes the
outcome of each push (for the exact accounting of a failover)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
import redis

from producer import NotReplicated, Producer, Settings, Unconfirmed, keys
from tests.conftest import quick_settings
from tests.topology import RedisCluster, redis_cli_binary

URL = "redis://127.0.0.1:1/0"  # on a cluster only the credentials of the URL are used


def start_cluster(workdir: Path) -> Iterator[RedisCluster]:
    """The body of a ``cluster`` fixture: 3 primaries, 3 replicas, killed at teardown."""
    if redis_cli_binary() is None:
        pytest.fail("redis-cli is missing: the bootstrap installs redis-server, which has it")
    topo = RedisCluster(workdir).start()
    try:
        yield topo
    finally:
        topo.kill()


def queues_on_shards(topo: RedisCluster, count: int, prefix: str = "q") -> list[str]:
    """``count`` queue names whose keys live on ``count`` different primaries."""
    return names_on_shards(topo, count, prefix, keys.pending)


def channels_on_shards(topo: RedisCluster, count: int, prefix: str = "ch") -> list[str]:
    """``count`` channel names whose slots are on ``count`` different primaries."""
    return names_on_shards(topo, count, prefix, keys.channel)


def names_on_shards(topo: RedisCluster, count: int, prefix: str,
                    key: Callable[[str], str]) -> list[str]:  # fmt: skip
    found: dict[int, str] = {}
    for i in range(1000):
        name = f"{prefix}{i}"
        port = topo.primary_for_key(key(name)).port
        found.setdefault(port, name)
        if len(found) == count:
            return list(found.values())
    raise AssertionError(f"no {count} shards found for queues")


def bus_env(topo: RedisCluster, queues: Iterable[str] = ("default",),
            channels: Iterable[str] = ("default",)) -> dict[str, str]:  # fmt: skip
    return {"BUS_CLUSTER_NODES": ",".join(topo.seeds[:2]), "BUS_QUEUES": ",".join(queues),
            "BUS_CHANNELS": ",".join(channels)}  # fmt: skip


def bus_settings(topo: RedisCluster, **overrides: object) -> Settings:
    return quick_settings(URL, cluster_nodes=tuple(topo.seeds[:2]), **overrides)


def shard_subscribers(topo: RedisCluster, channel: str) -> int:
    """Sharded subscribers of ``channel`` on the primary that holds its slot."""
    with topo.primary_for_key(keys.channel(channel)).admin() as c:
        ((_, count),) = c.pubsub_shardnumsub(keys.channel(channel))
        return int(count)


def depth(topo: RedisCluster, queue: str) -> int:
    """Pending messages of ``queue``, asked of the primary that holds it now."""
    with topo.primary_for_key(keys.pending(queue)).admin() as c:
        return int(c.llen(keys.pending(queue)))


class Stream:
    """Pushes ``{"n": i}`` round-robin to ``queues`` (or publishes on them as channels, with
    ``publish``) every ``every_s`` until stopped, noting each one's outcome by id (confirmed,
    not-replicated, unconfirmed) and when it was confirmed; one refused before it was sent is
    only counted."""

    def __init__(self, producer: Producer, queues: list[str], every_s: float = 0.005,
                 publish: bool = False) -> None:  # fmt: skip
        self.producer = producer
        self.queues = queues
        self.send = producer.publish if publish else producer.push
        self.every_s = every_s
        self.outcomes: dict[str, str] = {}
        self.queue_of: dict[str, str] = {}
        self.confirmed_at: dict[str, float] = {}
        self.sent_at: dict[str, float] = {}  # when each push with an outcome was made
        self.refused: Counter[str] = Counter()
        self._at = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        n = 0
        while not self.stop.wait(self.every_s):
            n += 1
            queue = self.queues[n % len(self.queues)]
            self._at = time.monotonic()
            try:
                sent = self.send({"n": n}, queue)
                self._note(sent.envelope.id, queue, "confirmed")
                self.confirmed_at[sent.envelope.id] = time.monotonic()
            except NotReplicated as exc:
                self._note(exc.envelopes[0].id, queue, "not-replicated")
            except Unconfirmed as exc:
                self._note(exc.envelopes[0].id, queue, "unconfirmed")
            except redis.RedisError as exc:
                self.refused[type(exc).__name__] += 1

    def _note(self, msg_id: str, queue: str, outcome: str) -> None:
        self.outcomes[msg_id] = outcome
        self.queue_of[msg_id] = queue
        self.sent_at[msg_id] = self._at

    def ids(self, outcome: str, queue: str | None = None) -> set[str]:
        return {
            i
            for i, o in self.outcomes.items()
            if o == outcome and (queue is None or self.queue_of[i] == queue)
        }

    def run_for(self, seconds: float) -> None:
        self.thread.start()
        time.sleep(seconds)
        self.stop.set()
        self.thread.join(10)
