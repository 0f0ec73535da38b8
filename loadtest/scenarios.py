"""The load-test scenarios: what load, which consumers, which fault, when.

Every scenario runs redis-bus and the naive baseline (:mod:`loadtest.baseline`) side by side on
one redis-server, under the same locust load and the same faults, so the report can say what
each one delivered, lost, duplicated or left stranded. Fault times are fractions of the traffic
time, so the quick suite keeps the same story in fewer seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

AMO_QUEUE = "amo"  # the queue worker-crash consumes at-most-once, beside the default one
SLOW_LIMIT = "pubsub 0 64kb 1"  # no hard limit: only a subscriber behind for a second is cut


@dataclass(frozen=True)
class Fault:
    """One fault: ``kind`` (see :mod:`loadtest.faults`) at ``at`` x traffic time."""

    kind: str
    at: float
    hold_s: float = 0.0  # how long it lasts (black hole)
    until: float = 0.0  # or until when, as a fraction of the traffic time
    arg: str = ""  # e.g. the client type a CLIENT KILL targets

    def hold(self, traffic_s: float) -> float:
        """Seconds the fault lasts in a suite whose traffic lasts ``traffic_s``."""
        return self.hold_s or max(0.0, (self.until - self.at) * traffic_s)


@dataclass(frozen=True)
class Scenario:
    """One scenario of the suite."""

    name: str
    title: str
    description: str
    modes: tuple[str, ...]
    traffic_s: float
    quick_traffic_s: float | None  # None: left out of the quick suite
    users: tuple[str, ...]  # locust user classes; every class gets ``users_per_class`` users
    users_per_class: int = 10
    rate: float = 15.0  # messages per second per user
    payload_bytes: int = 0  # padding added to each payload
    shape: str = "steady"
    shape_args: tuple[str, ...] = ()
    faults: tuple[Fault, ...] = ()
    setup: tuple[str, ...] = ()  # faults applied before the traffic starts, kept to the end
    handler_sleep_s: float = 0.0
    slow_subscriber_sleep_s: float = 0.0  # > 0: the second subscriber of each system is slow
    # during the window of the "slow-subscriber" fault
    at_most_once_queue: bool = False
    queues: tuple[str, ...] = ("default",)  # more than one: one redis-bus worker each
    cluster_shards: int = 0  # > 0: a Redis Cluster of that many primaries, a replica each
    baseline: bool = True  # the naive app and consumers run beside redis-bus

    def duration_s(self, quick: bool) -> float:
        """Traffic seconds in this suite."""
        return self.quick_traffic_s if quick and self.quick_traffic_s else self.traffic_s


PRODCONS_USERS = ("BusProdcons", "BaselineProdcons")
PUBSUB_USERS = ("BusPubsub", "BaselinePubsub")
BOTH_USERS = PRODCONS_USERS + PUBSUB_USERS
BOTH = ("prodcons", "pubsub")

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "prodcons-steady",
        "List mode, steady load",
        "A steady 200 messages/s on each system's list, and 200/s more from a producer that "
        "talks to Redis directly: HTTP and end-to-end latency, nothing lost.",
        ("prodcons",),
        traffic_s=30,
        quick_traffic_s=None,
        users=(*PRODCONS_USERS, "RedisPush"),
        rate=20,
    ),
    Scenario(
        "pubsub-steady",
        "Pub/sub, steady load",
        "A steady 200 messages/s published on each system's channel, two subscribers each: "
        "fan-out latency, and what reaches every subscriber with no fault at all.",
        ("pubsub",),
        traffic_s=30,
        quick_traffic_s=None,
        users=PUBSUB_USERS,
        rate=20,
    ),
    Scenario(
        "mixed",
        "Both modes, stepped load, every kind of producer",
        "Both modes at once, users added in steps; beside the JSON POSTs, the seed articles' "
        "GET routes and a producer that talks to Redis directly (so the web's own cost shows).",
        BOTH,
        traffic_s=30,
        quick_traffic_s=4,
        users=(*BOTH_USERS, "SeedGet", "RedisPush"),
        users_per_class=8,
        rate=8,
        shape="step",  # four steps (see runner.locust_cmd)
    ),
    Scenario(
        "idle-timeout",
        "Bursts with idle gaps longer than Redis's timeout",
        "`CONFIG SET timeout 2`, then bursts of traffic separated by 5 s of silence: Redis "
        "closes every idle pooled connection between bursts.",
        BOTH,
        traffic_s=16,
        quick_traffic_s=9,
        users=BOTH_USERS,
        shape="bursts",
        shape_args=("--burst", "2", "--idle", "5"),
        setup=("idle-timeout",),
    ),
    Scenario(
        "idle-long",
        "A queue idle for a minute",
        "A burst, 60 s without a message, another burst. Nothing is wrong with Redis or the "
        "network: the naive `blpop(q, 0)` runs on redis-py's 5 s socket timeout, re-sends the "
        "pop after each timeout, and gives up after 10 retries.",
        ("prodcons", "pubsub"),
        traffic_s=64,
        quick_traffic_s=None,
        users=BOTH_USERS,
        shape="bursts",
        shape_args=("--burst", "2", "--idle", "60"),
        faults=(Fault("idle", 2 / 64, hold_s=60),),
    ),
    Scenario(
        "client-kill",
        "CLIENT KILL of every connection",
        "`CLIENT KILL TYPE normal` (producers' pools, blocked workers) and later "
        "`CLIENT KILL TYPE pubsub` (every subscriber), mid-stream.",
        BOTH,
        traffic_s=20,
        quick_traffic_s=5,
        users=BOTH_USERS,
        faults=(Fault("client-kill", 0.35, arg="normal"), Fault("client-kill", 0.65, arg="pubsub")),
    ),
    Scenario(
        "restart",
        "Redis restart (AOF on)",
        "redis-server stopped (SIGTERM, AOF fsynced) and started again on the same port with "
        "the same data, mid-stream.",
        BOTH,
        traffic_s=20,
        quick_traffic_s=5,
        users=BOTH_USERS,
        faults=(Fault("restart", 0.4),),
    ),
    Scenario(
        "blackhole",
        "Black hole: Redis stops answering (SIGSTOP), then resumes",
        "redis-server frozen with SIGSTOP for 6 s, longer than every deadline (redis-bus's, "
        "and redis-py's 5 s default socket timeout the baseline runs on), then SIGCONT. "
        "Connections stay open; nothing answers.",
        BOTH,
        traffic_s=24,
        quick_traffic_s=9,
        users=BOTH_USERS,
        faults=(Fault("blackhole", 0.15, hold_s=6.0),),
    ),
    Scenario(
        "worker-crash",
        "Worker kill -9 mid-message: at-least-once, at-most-once and the naive loop",
        "Each message takes 10 ms to handle. One worker of each kind is killed with SIGKILL "
        "while a message is in its hands; a second worker of each kind stays alive. redis-bus "
        "runs one queue at-least-once (the default) and one at-most-once, side by side.",
        ("prodcons",),
        traffic_s=20,
        quick_traffic_s=5,
        users=PRODCONS_USERS,
        rate=12,
        faults=(Fault("worker-crash", 0.35),),
        handler_sleep_s=0.01,
        at_most_once_queue=True,
    ),
    Scenario(
        "cluster-failover",
        "Redis Cluster: a shard fails over mid-stream",
        "Three primaries with a replica each. List mode on three queues, one per shard "
        "(`orders`, `default`, `billing`), and sharded pub/sub on one channel. Mid-stream "
        "`CLUSTER FAILOVER` promotes the replica of the shard that holds `billing` and the "
        "channel. The naive baseline does not run here: a plain redis-py client would get "
        "`MOVED` for every key on another shard.",
        BOTH,
        traffic_s=30,
        quick_traffic_s=8,
        users=("BusProdcons", "BusPubsub", "RedisPush"),
        users_per_class=6,
        rate=20,
        faults=(Fault("cluster-failover", 0.4, arg="billing"),),
        queues=("orders", "default", "billing"),
        cluster_shards=3,
        baseline=False,
    ),
    Scenario(
        "slow-subscriber",
        "Slow subscriber cut off by the output-buffer limit",
        "16 KB messages at 200/s. During the fault window one subscriber of each system takes "
        "20 ms per message, slower than the channel, and `client-output-buffer-limit` is "
        f"`{SLOW_LIMIT}`: once the socket buffers are full and Redis holds more than 64 KB for "
        "it for a second, Redis cuts it off.",
        ("pubsub",),
        traffic_s=20,
        quick_traffic_s=6,
        users=PUBSUB_USERS,
        rate=20,
        payload_bytes=16_000,
        faults=(Fault("slow-subscriber", 0.1, until=0.75),),
        slow_subscriber_sleep_s=0.02,
    ),
)

BY_NAME = {s.name: s for s in SCENARIOS}


def select(name: str, quick: bool) -> list[Scenario]:
    """The scenarios ``name`` names (``all``: the suite, quick or full)."""
    if name == "all":
        return [s for s in SCENARIOS if not quick or s.quick_traffic_s is not None]
    if name not in BY_NAME:
        raise KeyError(name)
    return [BY_NAME[name]]
