"""The load-test scenarios: what load, which consumers, which fault, when.

Every scenario runs redis-bus and the naive baseline (:mod:`loadtest.baseline`) side by side on
one redis-server, under the same locust load and the same faults, so the report can say what
each one delivered, lost, duplicated or left stranded. Fault times are fractions of the traffic
time, so the quick suite keeps the same story in fewer seconds. The soak instead repeats a
:class:`~loadtest.runner.spec.Rotation` of faults on a clock (one a minute), for as long as it
runs.
"""

from __future__ import annotations

from loadtest.runner.spec import Fault, Rotation, Scenario

AMO_QUEUE = "amo"  # the queue worker-crash consumes at-most-once, beside the default one
SLOW_LIMIT = "pubsub 0 64kb 1"  # no hard limit: only a subscriber behind for a second is cut
SOAK_TIMEOUT_S = 2  # the soak's Redis closes connections idle this long
SOAK_FREEZE_S = 0.5  # the soak's black hole: under every deadline (1 s), so no one reconnects
SLOW_LIMIT_S = 2  # slow-handlers: BUS_HANDLER_TIMEOUT_S
SLOW_ATTEMPTS = 3  # ... BUS_MAX_ATTEMPTS: a poisoned message is dead after this many
SLOW_PROCESSES = 3  # ... each redis-bus worker's --processes


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
        shape="step",  # four steps (see loadgen.command)
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
    Scenario(
        "slow-handlers",
        "Slow handlers: 1% hang, 1% kill their process",
        f"Each message takes 20 ms to handle, except 1% whose handler never returns (it sleeps "
        f"far past `BUS_HANDLER_TIMEOUT_S={SLOW_LIMIT_S}`) and 1% whose handler ends its process "
        f"(`os._exit(1)`). Two redis-bus workers, each `--processes {SLOW_PROCESSES}` under a "
        "supervisor that restarts a process that dies, at-least-once, "
        f"`BUS_MAX_ATTEMPTS={SLOW_ATTEMPTS}`: every poisoned message ends dead-lettered within the "
        "run, saying why. The oldest message in each worker's hands is sampled throughout. The "
        "baseline does not run: its loop has no time limit and nothing restarts it, so the "
        "first hanging message would stop it for good.",
        ("prodcons",),
        traffic_s=40,
        quick_traffic_s=10,
        users=("BusProdcons",),
        users_per_class=2,
        rate=10,
        handler_sleep_s=0.02,
        baseline=False,
        processes=SLOW_PROCESSES,
        bus_settings=(
            ("BUS_HANDLER_TIMEOUT_S", str(SLOW_LIMIT_S)),
            ("BUS_MAX_ATTEMPTS", str(SLOW_ATTEMPTS)),
        ),
        hang_share=0.01,
        die_share=0.01,
        drain_s=(SLOW_LIMIT_S + 2) * SLOW_ATTEMPTS + 5,
        inhand_every_s=0.5,
    ),
    Scenario(
        "soak",
        "Soak: 30 minutes of bursts, idle gaps and a fault every minute",
        f"Both modes at a modest rate in bursts of 25 s, each followed by 5 s of silence, on a "
        f"Redis whose `timeout` is {SOAK_TIMEOUT_S} s (it closes idle pooled connections in every "
        "gap). Every minute a fault, in turn: `CLIENT KILL` of every normal and pub/sub client, "
        f"a Redis restart (AOF on), a {SOAK_FREEZE_S:g} s black hole (SIGSTOP, shorter than the "
        "deadlines). The RSS of every process and Redis's `used_memory` are sampled throughout: "
        "what grows, and by how much a minute.",
        BOTH,
        traffic_s=1800,
        quick_traffic_s=180,
        users=BOTH_USERS,
        users_per_class=4,
        rate=5,
        shape="bursts",
        rotation=Rotation(
            (
                Fault("client-kill", 0.0, arg="normal,pubsub"),
                Fault("restart", 0.0),
                Fault("blackhole", 0.0, hold_s=SOAK_FREEZE_S),
            )
        ),
        redis_timeout_s=SOAK_TIMEOUT_S,
        memory_every_s=5.0,
        in_quick_suite=False,
    ),
)

BY_NAME = {s.name: s for s in SCENARIOS}


def select(name: str, quick: bool) -> list[Scenario]:
    """The scenarios ``name`` names (``all``: the suite, quick or full)."""
    if name == "all":  # the quick suite: the scenarios with a quick form that belong to it
        return [s for s in SCENARIOS if not quick or (s.quick_traffic_s and s.in_quick_suite)]
    if name not in BY_NAME:
        raise KeyError(name)
    return [BY_NAME[name]]
