"""`make run-cluster`: the stack on a six-node Redis Cluster under honcho serves queues on two
shards and pub/sub, follows a CLUSTER FAILOVER, stops every process on Ctrl-C, and on a second
run comes back from the nodes' nodes.conf without creating the cluster again; every process
logs in as its own ACL user (the replicas' links included), and no node refuses anything."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from loadtest.harness.ports import free_port, free_ports_in_a_row
from loadtest.harness.waits import wait_for
from producer import keys
from tests.procs import ROOT, get_json
from tests.test_run_sentinel import (
    as_admin,
    check_files,
    handled,
    nobody_is_default,
    refusals,
    servers_refused_the_rest,
    status_as_tools,
    users_of_clients,
)
from tests.test_stack import accepts, alive, logged_pids, stack_pids

pytestmark = pytest.mark.slow

NODES = 6
QUEUES = ("default", "orders", "billing")  # run-cluster.sh's BUS_QUEUES: one on each shard


def distinct_port_ranges() -> tuple[int, int, int]:
    """First node port, first cluster bus port (six in a row each), web port: none shared."""
    for _ in range(20):
        nodes, bus, web = free_ports_in_a_row(NODES), free_ports_in_a_row(NODES), free_port()
        node_range, bus_range = set(range(nodes, nodes + NODES)), set(range(bus, bus + NODES))
        if node_range.isdisjoint(bus_range) and web not in node_range | bus_range:
            return nodes, bus, web
    raise AssertionError("no distinct port ranges found")


class Stack:
    """scripts/run-cluster.sh under honcho, its log in a file; stopped like Ctrl-C does."""

    def __init__(self, env: dict[str, str], log_path: Path, node_ports: list[int]) -> None:
        self.log_path = log_path
        self.node_ports = node_ports
        with open(log_path, "wb") as log:
            self.honcho = subprocess.Popen(
                ["bash", "scripts/run-cluster.sh"], cwd=ROOT, env=env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.sessions = {self.honcho.pid}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self, base: str) -> bool:
        assert self.honcho.poll() is None, f"run-cluster.sh exited early:\n{self.log()}"
        return get_json(base + "/readyz") is not None

    def interrupt(self) -> None:
        """SIGINT to honcho (what Ctrl-C delivers); every process of the stack must go."""
        pids = logged_pids(self.log())
        assert {"cluster", "web", "worker", "subscriber"} <= set(pids), pids
        self.sessions.update(pids.values())  # each Procfile process leads a session of its own
        os.kill(self.honcho.pid, signal.SIGINT)
        self.honcho.wait(15)
        wait_for(lambda: not any(alive(p) for p in pids.values()), 10, "no pid left")
        wait_for(lambda: stack_pids(self.sessions, *self.node_ports) == set(), 5,
                 "no process of the stack left")  # fmt: skip

    def kill(self) -> None:
        """SIGKILL honcho and whatever is left of every Procfile process's session."""
        self.sessions.update(logged_pids(self.log()).values())
        if self.honcho.poll() is None:
            os.killpg(self.honcho.pid, signal.SIGKILL)
            self.honcho.wait(5)
        for pid in stack_pids(self.sessions, *self.node_ports):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running(env: dict[str, str], log_path: Path, node_ports: list[int]) -> Iterator[Stack]:
    stack = Stack(env, log_path, node_ports)
    try:
        yield stack
    finally:
        stack.kill()


def shard_of(port: int, queue: str, run_dir: Path) -> tuple[int, list[int]]:
    """(primary port, replica ports) of the shard that holds ``queue``, as node ``port`` sees
    it (CLUSTER SLOTS: a replica shows once that node has heard of it by gossip)."""
    with as_admin(port, run_dir) as c:
        slot = int(c.execute_command("CLUSTER KEYSLOT", keys.pending(queue)))
        ranges: list[Any] = c.execute_command("CLUSTER SLOTS")
    for start, end, primary, *replicas in ranges:
        if int(start) <= slot <= int(end):
            return int(primary[1]), [int(r[1]) for r in replicas]
    raise AssertionError(f"slot {slot} of {queue} is not served")


def role(port: int, run_dir: Path) -> str | None:
    try:
        with as_admin(port, run_dir) as c:
            return str(c.execute_command("ROLE")[0])
    except (redis.RedisError, OSError):
        return None


def may_fail_over(primary: int, replica: int, run_dir: Path) -> bool:
    """Whether a manual failover of ``replica`` can start now: its primary itself counts it
    among its replicas, by gossip (CLUSTER NODES) and as a streaming link (INFO: online).
    CLUSTER FAILOVER answers OK at once either way, but a primary that does not yet know the
    sender as its replica ignores the request, and the failover times out 5 s later."""
    with as_admin(primary, run_dir) as c:
        me = str(c.execute_command("CLUSTER MYID"))
        nodes: dict[str, Any] = c.execute_command("CLUSTER NODES")  # redis-py: by "host:port"
        links = c.info("replication")
    known = any(address.endswith(f":{replica}") and "slave" in node["flags"]
                and node["master_id"] == me for address, node in nodes.items())  # fmt: skip
    online = any(isinstance(v, dict) and v.get("port") == replica and v.get("state") == "online"
                 for v in links.values())  # fmt: skip
    return known and online


def push(base: str, queue: str, payload: object, within_s: float) -> str:
    """POST a tracked message to ``queue`` until a 202 (a 503 is expected while a shard has no
    primary, or its replica is not yet in sync for WAIT 1)."""
    deadline = time.monotonic() + within_s
    while True:
        resp = requests.post(f"{base}/prodcons", timeout=5,
                             json={"queue": queue, "payload": payload, "track": True})  # fmt: skip
        if resp.status_code == 202:
            return str(resp.json()["id"])
        assert resp.status_code == 503, resp.text
        assert time.monotonic() < deadline, f"no 202 within {within_s} s: {resp.text}"
        time.sleep(0.2)


def queue_stats(base: str, queue: str) -> dict[str, Any]:
    return dict(((get_json(base + "/api/stats") or {}).get("queues") or {}).get(queue) or {})


def drained(base: str, queue: str, handled_total: int) -> bool:
    stats = queue_stats(base, queue)
    return stats.get("depth") == 0 and stats.get("handled_total", 0) >= handled_total


def linked(port: int, run_dir: Path) -> bool:
    """True for a primary, or a replica whose link to its primary is up."""
    with as_admin(port, run_dir) as c:
        info = c.info("replication")
    return info["role"] == "master" or info.get("master_link_status") == "up"


def check_acl(node_ports: list[int], run_dir: Path) -> None:
    """After a failover: every replica (the old primary included)
    replicates as bus-replica, the web, the worker and the subscriber are on the primaries as
    their own users, no node refused anything, nobody can be the default user, and the env
    files let a shell follow the cluster (status as bus-tools)."""
    wait_for(lambda: all(linked(p, run_dir) for p in node_ports), 20,
             "every replica linked to its primary", every_s=0.5)  # fmt: skip
    primaries = {p for p in node_ports if role(p, run_dir) == "master"}
    assert len(primaries) == 3, primaries
    seen: set[str] = set()
    for port in primaries:
        users = users_of_clients(port, run_dir)
        assert "bus-replica" in users, (port, users)  # its replica's link
        seen |= users
    assert seen >= {"bus-web", "bus-worker", "bus-subscriber", "bus-replica"}, seen
    for port in sorted(set(node_ports) - primaries):
        users_of_clients(port, run_dir)  # whoever is there, as their own user
    wait_for(lambda: status_as_tools(run_dir).returncode == 0, 30,
             "status as bus-tools to exit 0", every_s=1)  # fmt: skip
    for port in node_ports:
        assert refusals(port, run_dir) == [], (port, refusals(port, run_dir))
        nobody_is_default(port)
    check_files(run_dir, "passwords.env", "users.acl", "replication.conf")
    servers_refused_the_rest(node_ports[0], run_dir, "bus-replica")


def test_run_cluster_serves_follows_a_failover_stops_and_restarts(tmp_path: Path) -> None:
    first, bus, web = distinct_port_ranges()
    node_ports = list(range(first, first + NODES))
    base, run_dir = f"http://127.0.0.1:{web}", tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUS_", "REDISCLI_"))}
    env.update(RUN_CLUSTER_PORT=str(first), RUN_CLUSTER_BUS_PORT=str(bus),
               RUN_DIR=str(run_dir), BUS_WEB_BIND=f"127.0.0.1:{web}",
               BUS_BLOCK_TIMEOUT_S="1", BUS_BACKOFF_CAP_S="0.5")  # fmt: skip

    with running(env, tmp_path / "run1.log", node_ports) as stack:
        wait_for(lambda: stack.ready(base), 40, "/readyz", every_s=0.2)
        wait_for(lambda: "cluster: ok on every node" in stack.log(), 30, "the cluster ok",
                 every_s=0.2)  # fmt: skip
        assert "cluster: creating the cluster" in stack.log()
        for port in node_ports:
            assert (tmp_path / "run" / "cluster" / f"node-{port}" / "nodes.conf").is_file()
        shards = {q: shard_of(first, q, run_dir) for q in QUEUES}
        assert len({primary for primary, _ in shards.values()}) == 3, shards
        one, two = QUEUES[:2]

        ids = {q: push(base, q, {"to": q}, 20) for q in (one, two)}  # WAIT 1: replicas in sync
        for q, msg_id in ids.items():
            wait_for(partial(handled, base, msg_id), 20, f"handled on {q}", every_s=0.2)
            wait_for(partial(drained, base, q, 1), 10, f"{q} drained, counted", every_s=0.2)

        def subscribed() -> bool:
            stats = get_json(base + "/api/stats") or {}
            return bool(stats) and stats["channels"]["default"]["subscribers"] == 1

        wait_for(subscribed, 20, "the subscriber to subscribe", every_s=0.2)
        resp = requests.post(base + "/pubsub", json={"payload": "hi"}, timeout=5)
        assert resp.status_code == 202 and resp.json()["receivers"] == 1, resp.text
        wait_for(lambda: ((get_json(base + "/api/stats") or {}).get("totals", {})
                          .get("subscriber", {}).get("handled", 0)) >= 1, 20,
                 "the subscriber to count a handled message", every_s=0.2)  # fmt: skip

        old = shards[one][0]
        replica = wait_for(lambda: shard_of(first, one, run_dir)[1], 20,
                           f"a replica of {one}'s shard", every_s=0.2)[0]  # fmt: skip
        wait_for(lambda: may_fail_over(old, replica, run_dir), 20,
                 f"{old} to count {replica} as its replica", every_s=0.2)  # fmt: skip
        with as_admin(replica, run_dir) as c:
            c.execute_command("CLUSTER FAILOVER")
        wait_for(lambda: role(replica, run_dir) == "master", 20, "the replica promoted",
                 every_s=0.2)  # fmt: skip
        wait_for(lambda: shard_of(first, one, run_dir)[0] == replica, 20, "the slot map to follow",
                 every_s=0.2)  # fmt: skip
        after = push(base, one, "after the failover", 20)
        wait_for(lambda: handled(base, after), 20, "handled after the failover", every_s=0.2)
        wait_for(lambda: drained(base, one, 2), 10, f"{one} drained again", every_s=0.2)
        wait_for(lambda: role(old, run_dir) == "slave", 20, "the old primary to follow",
                 every_s=0.2)  # fmt: skip
        check_acl(node_ports, run_dir)
        stack.interrupt()

    with running(env, tmp_path / "run2.log", node_ports) as stack:
        wait_for(lambda: stack.ready(base), 40, "/readyz after a restart", every_s=0.2)
        wait_for(lambda: "cluster: ok on every node" in stack.log(), 30, "the cluster ok",
                 every_s=0.2)  # fmt: skip
        assert "came back from their nodes.conf" in stack.log()
        assert "creating the cluster" not in stack.log()
        assert shard_of(first, one, run_dir)[0] == replica  # the failover's roles were kept
        again = push(base, one, "after a restart", 20)
        wait_for(lambda: handled(base, again), 20, "handled after a restart", every_s=0.2)
        wait_for(lambda: all(linked(p, run_dir) for p in node_ports), 20,
                 "every replica linked to its primary after a restart", every_s=0.5)  # fmt: skip
        for port in node_ports:
            users_of_clients(port, run_dir)  # each connection as its role's user
            assert refusals(port, run_dir) == [], (port, refusals(port, run_dir))
        stack.interrupt()
    assert not any(accepts(p) for p in [*node_ports, web])
