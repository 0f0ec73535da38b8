"""A group with a callback when things break: kill -9 of the worker while the group is half done,
and a restart of Redis (AOF) between members. Every member is handled, the callback exactly
once, after the last member, with every member's result in order; nothing is left waiting,
and each queue's balance is exact.

Real processes: worker daemons (``--handler tests.handlers_for_tests:chord``) and a
redis-server with AOF, accounted for by id from the handlers' records."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import Group, Producer, Settings, Step, keys
from producer.store.counts import read_balance
from tests.procs import Proc, read_records

pytestmark = pytest.mark.slow
CHORD = "tests.handlers_for_tests:chord"
MEMBERS = 40


def send_group(url: str, hold_from: int, queue: str = "default") -> Group:
    """MEMBERS members on ``queue`` (those from ``hold_from`` on hold until released), the
    callback on ``report``."""
    producer = Producer.from_settings(Settings(redis_url=url))
    members = [Step({"n": n, "hold": n >= hold_from}, queue) for n in range(MEMBERS)]
    return producer.group(members, then=Step({"callback": True}, "report"))


def assert_callback_once(path: Path, group: Group, r: redis.Redis) -> dict[str, Any]:
    """Every member handled, the callback handled once, last, with every result in order."""
    assert group.callback is not None
    members = {s.envelope.id for s in group.members}
    cb = group.callback.envelope.id

    def done() -> list[dict[str, Any]] | None:
        records = read_records(path)
        return records if any(x["id"] == cb for x in records) else None

    records = wait_for(done, 20, "the callback")
    handled = Counter(x["id"] for x in records if x["event"] == "handled")
    assert set(handled) == members | {cb}, "a member or the callback was never handled"
    assert handled[cb] == 1, "the callback ran more than once"
    callback = next(x for x in records if x["id"] == cb)
    assert callback["results"] == [{"n": n} for n in range(MEMBERS)]
    last_member = max(x["t"] for x in records if x["id"] in members and x["event"] == "handled")
    assert callback["t"] > last_member
    for queue in ("default", "report"):
        balance = wait_for(lambda q=queue: _quiet(r, q), 10, f"{queue} quiet")
        assert balance["unaccounted"] == 0 and balance["waiting"] == 0, (queue, balance)
        assert r.llen(keys.outbox(queue)) == 0
    return {"members_handled": sum(handled[m] for m in members), "callback_runs": handled[cb]}


def _quiet(r: redis.Redis, queue: str) -> dict[str, int] | None:
    b = read_balance(r, queue)
    return None if b["pending"] or b["processing"] or b["waiting"] else b


def start_half_held(r: redis.Redis, url: str, spawn: Callable[..., Proc], tmp_path: Path,
                    ) -> tuple[Group, dict[str, str], Proc]:  # fmt: skip
    """A group whose second half waits for ``tmp_path/release``; a worker for the callback's
    queue and one (``w1``, 4 slots) for the members; returned once the first half is handled
    and settled (the callback waits for the other half) and 4 members are held. (the group,
    w1's env, w1)"""
    env = {"TEST_BUS_RELEASE": str(tmp_path / "release"), "BUS_CONCURRENCY": "4"}
    group = send_group(url, hold_from=MEMBERS // 2)
    spawn("worker", url, "--name", "r1", "--queue", "report", "--handler", CHORD)
    w1 = spawn("worker", url, "--name", "w1", "--handler", CHORD, **env)
    path = tmp_path / "records.jsonl"

    def half() -> bool:
        records = read_records(path)
        return sum(x["event"] == "handled" for x in records) >= MEMBERS // 2 and sum(
            x["event"] == "start" for x in records) >= 4  # fmt: skip

    wait_for(half, 10, "half the members handled, 4 held")
    assert group.callback is not None
    cb_record = keys.record("report", group.callback.envelope.id)
    wait_for(lambda: int(r.hget(cb_record, "waiting_for") or 0) == MEMBERS // 2, 5,
             "the first half settled")  # fmt: skip
    return group, env, w1


def test_kill_9_while_the_group_is_half_done(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    r = fresh_redis.client()
    path, release = tmp_path / "records.jsonl", tmp_path / "release"
    group, env, first = start_half_held(r, fresh_redis.url, spawn, tmp_path)
    assert group.callback is not None
    first.signal(signal.SIGKILL)
    first.wait(5)
    assert r.hget(keys.record("report", group.callback.envelope.id), "state") == b"waiting"
    release.touch()
    spawn("worker", fresh_redis.url, "--name", "w1", "--handler", CHORD, **env)
    seen = assert_callback_once(path, group, r)
    assert seen["members_handled"] == MEMBERS  # none of the held ones had finished
    print(f"\n[fault] after: kill -9 with the group half done: {seen}")


def test_redis_restarts_between_members(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    r = fresh_redis.client()
    path, release = tmp_path / "records.jsonl", tmp_path / "release"
    group, _, _ = start_half_held(r, fresh_redis.url, spawn, tmp_path)
    assert group.callback is not None
    cb = group.callback.envelope.id
    fresh_redis.restart()  # SIGTERM (the AOF written), then the same server again
    after_restart = fresh_redis.client()
    assert after_restart.hlen(keys.wait("report", cb)) == MEMBERS // 2 + 1  # the envelope too
    assert after_restart.scard(keys.then("default", group.members[-1].envelope.id)) == 1
    release.touch()
    seen = assert_callback_once(path, group, after_restart)
    # a graceful restart loses nothing: each member once, though the 4 held ones were settled
    # by a worker that reconnected
    assert seen["members_handled"] == MEMBERS
    print(f"\n[fault] after: Redis restarted (AOF) between members: {seen}")
    r.close()


MISBEHAVE = "tests.handlers_for_tests:misbehave"


@pytest.mark.parametrize("do", ["exit", "systemexit", "base"])
def test_a_member_whose_handler_kills_its_worker_ends_the_callback_dead(
    do: str, fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """One member's handler calls os._exit(1), raises SystemExit or a bare BaseException on
    every attempt (BUS_MAX_ATTEMPTS=2); the worker is started again each time it ends. The other
    members are handled; that one is dead-lettered with its reason, and the callback after it,
    naming it; nothing is left waiting."""
    r = fresh_redis.client()
    path = tmp_path / "records.jsonl"
    producer = Producer.from_settings(Settings(redis_url=fresh_redis.url))
    members = [Step({"do": "ok", "n": 0}), Step({"do": do}), Step({"do": "nonjson"})]
    group = producer.group(members, then=Step({"callback": True}))
    assert group.callback is not None
    bad, cb = group.members[1].envelope.id, group.callback.envelope.id
    env = {"BUS_MAX_ATTEMPTS": "2", "BUS_CONCURRENCY": "1"}
    worker: Proc | None = None
    runs = 0

    def ended() -> bool:
        nonlocal worker, runs
        if r.hget(keys.record("default", cb), "state") in (b"dead", b"cancelled"):
            return True
        if worker is None or worker.proc.poll() is not None:  # ended: started again
            runs += 1
            assert runs <= 5, f"the worker was started {runs} times"
            worker = spawn("worker", fresh_redis.url, "--name", "w1", "--handler", MISBEHAVE,
                           **env)  # fmt: skip
        return False

    wait_for(ended, 40, "the callback ended")
    record = {k.decode(): v.decode() for k, v in r.hgetall(keys.record("default", cb)).items()}
    assert record["state"] == "dead" and f"it waited for {bad} on default" in record["reason"]
    assert r.hget(keys.record("default", bad), "state") == b"dead"
    handled = {x["id"] for x in read_records(path) if x["event"] == "handled"}
    assert handled == {group.members[0].envelope.id, group.members[2].envelope.id}
    nonjson = r.hget(keys.record("default", group.members[2].envelope.id), "result_error")
    assert nonjson is not None and b"not JSON" in nonjson
    balance = _quiet(r, "default")
    assert balance is not None and balance["unaccounted"] == 0 and balance["dead"] == 2
    print(
        f"\n[fault] after: a member's handler {do} every attempt: {runs} worker runs, "
        f"member and callback dead-lettered, {balance}"
    )
