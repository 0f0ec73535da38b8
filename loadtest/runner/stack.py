"""The processes of one scenario: redis-server (or a Redis Cluster), both web apps under
gunicorn, redis-bus's daemons and the baseline's consumers, started on free loopback ports
(:mod:`loadtest.runner.procs` runs and stops them), and the waits until they are ready.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from loadtest import baseline
from loadtest.harness import slots
from loadtest.harness.answers import http_status
from loadtest.harness.ports import free_port
from loadtest.harness.server import server_command
from loadtest.ledger import records
from loadtest.runner.procs import ROOT, Proc, Procs, StackError, wait_until
from producer import keys
from producer.connection.cluster import ClusterClient

CLUSTER_READY_S = 30.0  # bound on a new cluster's nodes agreeing
NODE_TIMEOUT_MS = 15_000  # long: a node slowed by the load must not be marked failing


@dataclass
class Work:
    """A consumer's simulated work per message; ``windowed``: only during a fault's window."""

    sleep_s: float = 0.0
    windowed: bool = False


@dataclass
class Consumer:
    """A consumer of the stack and what it reads."""

    who: str
    sys: str  # "bus" or "baseline"
    mode: str  # "prodcons" or "pubsub"
    dest: str  # queue or channel name
    delivery: str  # "at-least-once", "at-most-once", "naive", "fan-out"
    proc: Proc = field(init=False)
    ledger: Path = field(init=False)
    slow: bool = False  # slowed down during the fault's window
    processes: int = 0  # > 0: a supervisor of that many worker processes (``--processes``)

    @property
    def names(self) -> list[str]:
        """The names it consumes under: its own, or its processes' (``<who>-1`` ..)."""
        return [f"{self.who}-{i}" for i in range(1, self.processes + 1)] or [self.who]


@dataclass
class Stack:
    """One scenario's processes on free loopback ports."""

    procs: Procs
    work: Path  # ledgers and Redis data of this scenario
    logs: Path
    bus_env: dict[str, str]  # BUS_* settings of redis-bus's web and daemons
    redis_port: int = field(default_factory=free_port)
    bus_port: int = field(default_factory=free_port)
    baseline_port: int = field(default_factory=free_port)
    shards: int = 0  # > 0: a Redis Cluster of that many primaries, one replica each
    redis_options: tuple[str, ...] = ()  # more redis-server options (every start, restarts too)
    consumers: list[Consumer] = field(default_factory=list)
    redis_procs: list[Proc] = field(default_factory=list)
    node_ports: list[int] = field(default_factory=list)  # the cluster's nodes
    _admin: redis.Redis | None = None

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def bus_url(self) -> str:
        return f"http://127.0.0.1:{self.bus_port}"

    @property
    def baseline_url(self) -> str:
        return f"http://127.0.0.1:{self.baseline_port}"

    def admin(self) -> redis.Redis:
        """The runner's own client (faults, drain, accounting): short deadlines, no retries;
        a connection closed by a restart is replaced when it leaves the pool. On a cluster it
        sends each command to the primary of its key's slot."""
        if self._admin is None:
            opts = {
                "socket_timeout": 5,
                "socket_connect_timeout": 2,
                "protocol": 2,
                "retry": Retry(NoBackoff(), 0),
            }
            if self.shards:
                seeds = [("127.0.0.1", port) for port in self.node_ports]
                self._admin = ClusterClient(seeds, opts)
            else:
                self._admin = redis.Redis(port=self.redis_port, **opts)  # type: ignore[arg-type]
        return self._admin

    def env(self, **extra: str) -> dict[str, str]:
        """A child's environment: ours without stray settings, plus redis-bus's."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("BUS_") and k not in (records.ENV_FILE, records.ENV_WHO)
        }
        env.update(self.bus_env, BUS_REDIS_URL=self.redis_url, PYTHONUNBUFFERED="1")
        if self.shards:
            env["BUS_CLUSTER_NODES"] = ",".join(f"127.0.0.1:{p}" for p in self.node_ports)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env.update(extra)
        return env

    # Redis -------------------------------------------------------------------------------

    def start_redis(self) -> None:
        """redis-server with AOF (everysec: a graceful stop fsyncs it), on our port and dir;
        or, for a cluster, its nodes, created as a cluster and waited on until they agree."""
        if self.shards:
            self._start_cluster()
            return
        self._start_node("redis", self.redis_port)
        wait_until(lambda: self.admin().ping(), "redis-server")

    def _start_cluster(self) -> None:
        self.node_ports = [self.redis_port] + [free_port() for _ in range(2 * self.shards - 1)]
        for i, port in enumerate(self.node_ports):
            cluster_opts = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            cluster_opts += ["--cluster-port", str(free_port())]
            cluster_opts += ["--cluster-node-timeout", str(NODE_TIMEOUT_MS)]
            self._start_node(f"redis-{i + 1}", port, *cluster_opts)
        for port in self.node_ports:
            wait_until(lambda port=port: _pings(port), f"redis-server on {port}")  # type: ignore[misc]
        try:
            slots.create([f"127.0.0.1:{p}" for p in self.node_ports], replicas=1)
            slots.wait_agreed(self.node_ports, CLUSTER_READY_S)
        except slots.ClusterError as exc:
            raise StackError(str(exc)) from exc

    def _start_node(self, name: str, port: int, *options: str) -> None:
        data = self.work / name
        data.mkdir(parents=True, exist_ok=True)
        options = (*self.redis_options, *options)
        log = str(self.logs / f"{name}.log")
        cmd = server_command(port, data, *options, appendonly=True, appendfsync="everysec",
                             logfile=log)  # fmt: skip
        proc = self.procs.start(name, cmd, self.env(), self.logs / f"{name}.out")
        proc.is_redis = True
        self.redis_procs.append(proc)

    def stop_redis(self) -> None:
        """Stop every redis-server of the stack (and forget them: a restart starts new ones)."""
        self.procs.stop_many(self.redis_procs, timeout_s=10)
        self.redis_procs = []

    def signal_redis(self, sig: int) -> None:
        for proc in self.redis_procs:
            os.kill(proc.popen.pid, sig)

    # The rest ----------------------------------------------------------------------------

    def start_webs(self, with_baseline: bool = True) -> None:
        """redis-bus's web and the baseline app, both under gunicorn with the production config.
        They are stopped with SIGQUIT (no graceful second): by then the traffic is drained."""
        gunicorn = [sys.executable, "-m", "gunicorn", "-c", "web/gunicorn.conf.py"]
        bus_env = self.env(BUS_WEB_BIND=f"127.0.0.1:{self.bus_port}")
        web = self.procs.start("web", [*gunicorn, "web.wsgi:app"], bus_env, self.logs / "web.log")
        web.stop_signal = signal.SIGQUIT
        if not with_baseline:
            return
        naive_env = self.env(
            BUS_WEB_BIND=f"127.0.0.1:{self.baseline_port}", **{baseline.ENV_URL: self.redis_url}
        )
        naive_app = ["--bind", f"127.0.0.1:{self.baseline_port}", "loadtest.baseline:create_app()"]
        naive = self.procs.start(
            "baseline-web", [*gunicorn, *naive_app], naive_env, self.logs / "baseline-web.log"
        )
        naive.stop_signal = signal.SIGQUIT

    def start_bus_worker(
        self, who: str, queue: str, delivery: str, work: Work, processes: int = 0
    ) -> None:
        """``python -m consumers worker`` with the load-test handler (``--processes``: a
        supervisor, its processes named ``<who>-1`` ..)."""
        args = ["worker", "--queue", queue, "--delivery", delivery]
        if processes:
            args += ["--processes", str(processes)]
        c = Consumer(who, "bus", "prodcons", queue, delivery, processes=processes)
        self._consumer(c, _bus(who, args), work)

    def start_bus_subscriber(self, who: str, work: Work) -> None:
        """``python -m consumers subscriber`` on the default channel."""
        args = ["subscriber", "--channel", "default"]
        self._consumer(Consumer(who, "bus", "pubsub", "default", "fan-out"), _bus(who, args), work)

    def start_baseline(self, who: str, mode: str, work: Work) -> None:
        """The naive worker or subscriber of :mod:`loadtest.baseline`."""
        role, dest = (
            ("worker", baseline.QUEUE) if mode == "prodcons" else ("subscriber", baseline.CHANNEL)
        )
        cmd = [sys.executable, "-m", "loadtest.baseline", role, "--redis-url", self.redis_url]
        self._consumer(Consumer(who, "baseline", mode, dest, "naive"), [*cmd, "--name", who], work)

    def _consumer(self, c: Consumer, cmd: list[str], work: Work) -> None:
        c.ledger = self.work / "records" / f"{c.who}.jsonl"
        c.ledger.parent.mkdir(parents=True, exist_ok=True)
        c.slow = work.sleep_s > 0 and work.windowed
        env = {
            records.ENV_FILE: str(c.ledger),
            records.ENV_WHO: c.who,
            records.ENV_SLEEP: str(work.sleep_s),
            records.ENV_START: "1",
        }
        if c.slow:
            env[records.ENV_SLOW_FLAG] = str(self.work / "slow.flag")
        c.proc = self.procs.start(c.who, cmd, self.env(**env), self.logs / f"{c.who}.log")
        self.consumers.append(c)

    def wait_ready(self) -> None:
        """Both webs answer, every worker is registered or blocked, every subscriber counted."""
        r = self.admin()
        wait_until(lambda: http_status(f"{self.bus_url}/healthz") == 200, "redis-bus's web")
        if any(p.name == "baseline-web" for p in self.procs.all):
            wait_until(lambda: http_status(f"{self.baseline_url}/nope") == 404, "the baseline web")
        for c in self.consumers:
            if not c.proc.alive():
                raise StackError(f"{c.who} exited at start: {c.proc.last_error()}")
        bus_workers = [c for c in self.consumers if c.sys == "bus" and c.mode == "prodcons"]
        for c in bus_workers:
            for name in c.names:
                wait_until(lambda c=c, n=name: r.zscore(keys.consumers(c.dest), n) is not None,  # type: ignore[misc]
                           name)  # fmt: skip
        naive = sum(1 for c in self.consumers if c.sys == "baseline" and c.mode == "prodcons")
        if naive:
            wait_until(lambda: _blocked(r, "blpop") >= naive, "the baseline workers")
        for channel, sys_ in ((keys.channel("default"), "bus"), (baseline.CHANNEL, "baseline")):
            n = sum(1 for c in self.consumers if c.sys == sys_ and c.mode == "pubsub")
            if n:
                sharded = bool(self.shards) and sys_ == "bus"
                wait_until(lambda ch=channel, n=n, sh=sharded: _numsub(r, ch, sh) >= n,  # type: ignore[misc]
                           f"{sys_} subscribers")  # fmt: skip


def _bus(who: str, args: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "consumers",
        *args,
        "--name",
        who,
        "--handler",
        "loadtest.ledger.handlers:record",
    ]


def _pings(port: int) -> bool:
    with slots.node(port) as client:
        return bool(client.ping())


def _blocked(r: redis.Redis, command: str) -> int:
    return sum(1 for c in r.client_list() if c.get("cmd") == command)


def _numsub(r: redis.Redis, channel: str, sharded: bool = False) -> int:
    """Subscribers of ``channel`` (of the sharded channel, with ``sharded``)."""
    if sharded:
        reply = r.execute_command("PUBSUB", "SHARDNUMSUB", channel)
        return int(dict(zip(reply[::2], reply[1::2], strict=True)).get(channel.encode(), 0))
    return int(dict(r.pubsub_numsub(channel)).get(channel.encode(), 0))
