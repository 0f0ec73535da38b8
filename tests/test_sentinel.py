"""Behind Sentinel: every role finds the primary through the sentinels and follows a failover.

One primary, one replica, three sentinels (:mod:`loadtest.harness.sentinel`). A worker and a
subscriber run as processes with ``BUS_SENTINELS``; a producer thread pushes (and publishes)
through the sentinels while ``SENTINEL FAILOVER`` moves the primary. Accounting is exact: with
``BUS_WAIT_REPLICAS=1`` every push the producer saw confirmed is handled (0 lost), every push
it saw fail is counted by kind, and duplicates (acks the old primary took with it) are counted.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from loadtest.harness.sentinel import RedisSentinel
from loadtest.harness.waits import wait_for
from producer import NotReplicated, Producer, Settings, Unconfirmed, keys, make_client
from tests.conftest import quick_settings
from tests.procs import Proc, project_env, read_records, run_cli

Q = "default"
# Promotion -> every role on the new primary. Redis 7.0's sentinels reconfigure the old primary
# (and so close its clients' connections) about 10 s after they promote the replica; until then
# clients that hold a connection to the old one go on using it (with WAIT, pushes there are not
# confirmed). Then a reconnect with backoff, and slack.
FOLLOW_BOUND_S = 14.0


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[RedisSentinel]:
    setup = RedisSentinel(tmp_path / "sentinel").start()
    try:
        yield setup
    finally:
        setup.stop()


def bus_env(setup: RedisSentinel) -> dict[str, str]:
    return {
        "BUS_SENTINELS": ",".join(f"{h}:{p}" for h, p in setup.sentinels),
        "BUS_SENTINEL_MASTER": setup.master_name,
    }


def bus_settings(setup: RedisSentinel, **overrides: object) -> Settings:
    return quick_settings(
        "redis://127.0.0.1:1/0",  # behind Sentinel only the db of the URL is used
        sentinels=tuple(f"{h}:{p}" for h, p in setup.sentinels),
        sentinel_master=setup.master_name,
        **overrides,
    )


def primary(setup: RedisSentinel) -> redis.Redis:
    host, port = setup.master_address()
    return redis.Redis(host, port)


@pytest.mark.slow
def test_every_role_finds_the_primary_through_the_sentinels(
    sentinel: RedisSentinel, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    env = bus_env(sentinel)
    spawn("worker", "redis://127.0.0.1:1/0", "--name", "w1", "--handler",
          "tests.handlers_for_tests:record", **env)  # fmt: skip
    spawn("subscriber", "redis://127.0.0.1:1/0", "--name", "s1", "--handler",
          "tests.handlers_for_tests:record", **env)  # fmt: skip
    settings = bus_settings(sentinel)
    producer = Producer(make_client(settings, "producer", "t"), wait_replicas=1)
    r = primary(sentinel)
    wait_for(lambda: r.pubsub_numsub(keys.channel("default"))[0][1] == 1, 15, "s1 subscribed")
    pushed = {producer.push({"n": i}, Q).envelope.id for i in range(50)}
    published = {producer.publish({"n": i}, "default").envelope.id for i in range(10)}
    records = tmp_path / "records.jsonl"
    wait_for(lambda: {x["id"] for x in read_records(records)} >= pushed | published, 15,
             "every message handled or received")  # fmt: skip
    assert r.llen(keys.pending(Q)) == 0


class Stream:
    """Pushes and publishes ``{"n": i}`` every ``every_s`` until stopped, noting each push's
    outcome by id, and the ids published."""

    def __init__(self, producer: Producer, every_s: float = 0.01) -> None:
        self.producer = producer
        self.every_s = every_s
        self.outcomes: dict[str, str] = {}  # id -> confirmed, not-replicated, unconfirmed
        self.confirmed_at: dict[str, float] = {}  # id -> when its push was confirmed
        self.published: set[str] = set()
        self.refused = 0  # surely not sent (an error before the send)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        n = 0
        while not self.stop.wait(self.every_s):
            n += 1
            try:
                sent = self.producer.push({"n": n}, Q)
                self.outcomes[sent.envelope.id] = "confirmed"
                self.confirmed_at[sent.envelope.id] = time.monotonic()
            except NotReplicated as exc:
                self.outcomes[exc.envelopes[0].id] = "not-replicated"
            except Unconfirmed as exc:
                self.outcomes[exc.envelopes[0].id] = "unconfirmed"
            except redis.RedisError:
                self.refused += 1
            try:
                self.published.add(self.producer.publish({"n": n}, "default").envelope.id)
            except redis.RedisError:
                self.refused += 1


def first_after(records: list[dict], ids: set[str], at: float) -> float:
    """Seconds from ``at`` to the first handling of one of ``ids`` after it."""
    times = [x["t"] for x in records if x["id"] in ids and x["t"] > at]
    return min(times) - at if times else float("inf")


@pytest.mark.slow
def test_a_sentinel_failover_mid_stream_loses_no_confirmed_push(
    sentinel: RedisSentinel, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """SENTINEL FAILOVER while a producer pushes (WAIT 1) and publishes every 10 ms: every
    push confirmed by a replica is handled; the producer, the worker and the subscriber are on
    the new primary within FOLLOW_BOUND_S of its promotion; what pub/sub lost is counted."""
    env = bus_env(sentinel)
    for kind, name in (("worker", "w1"), ("subscriber", "s1")):
        spawn(kind, "redis://127.0.0.1:1/0", "--name", name, "--handler",
              "tests.handlers_for_tests:record", **env)  # fmt: skip
    settings = bus_settings(sentinel)
    stream = Stream(Producer(make_client(settings, "producer", "t"), wait_replicas=1,
                             wait_timeout_s=0.5))  # fmt: skip
    records = tmp_path / "records.jsonl"
    wait_for(lambda: primary(sentinel).pubsub_numsub(keys.channel("default"))[0][1] == 1, 15,
             "s1 subscribed")  # fmt: skip
    stream.thread.start()
    wait_for(lambda: len(read_records(records)) >= 200, 15, "200 handled before the failover")
    old = sentinel.master_address()
    started = time.monotonic()
    timing = sentinel.failover()
    promoted_at = started + timing.promoted_s
    assert sentinel.master_address() != old
    time.sleep(3.0)
    stream.stop.set()
    stream.thread.join(5)
    confirmed = {i for i, o in stream.outcomes.items() if o == "confirmed"}
    r = primary(sentinel)
    wait_for(lambda: confirmed <= {x["id"] for x in read_records(records)}, 20,
             "every confirmed push handled")  # fmt: skip
    wait_for(lambda: r.llen(keys.pending(Q)) == 0, 10, "the queue drained")
    seen = read_records(records)
    handled = Counter(x["id"] for x in seen if x["id"] in stream.outcomes)
    # A push confirmed by a replica after the promotion went to the new primary.
    followed = {i for i, t in stream.confirmed_at.items() if t > promoted_at}
    producer_s = min(stream.confirmed_at[i] for i in followed) - promoted_at
    worker_s = first_after(seen, followed, promoted_at)
    subscriber_s = first_after(seen, stream.published, promoted_at + producer_s)
    others = set(stream.outcomes) - confirmed
    lost_others = len(others - set(handled))
    duplicates = sum(n - 1 for n in handled.values() if n > 1)
    lost_published = len(stream.published - {x["id"] for x in seen})
    print(f"\nsentinel failover: {timing}; on the new primary after its promotion: the "
          f"producer {producer_s:.2f} s, the worker {worker_s:.2f} s, the subscriber "
          f"{producer_s + subscriber_s:.2f} s; pushes "
          f"{dict(Counter(stream.outcomes.values()))}, refused {stream.refused}; confirmed "
          f"lost 0; unconfirmed lost {lost_others} of {len(others)}; duplicates {duplicates}; "
          f"published {len(stream.published)}, not received {lost_published}")  # fmt: skip
    assert max(producer_s, worker_s, producer_s + subscriber_s) <= FOLLOW_BOUND_S


SENTINEL_PASSWORD = "sentinel-Passw0rd-5150"


def sentinels_with_users(setup: RedisSentinel) -> None:
    """On every sentinel: ``asker`` may ask where the primary is, ``mute`` may only PING."""
    for s in setup.sentinel_servers:
        with s.admin() as c:
            for user, rules in (("asker", ["+sentinel|masters"]), ("mute", [])):
                c.execute_command("ACL", "SETUSER", user, "on", f">{SENTINEL_PASSWORD}",
                                  "+ping", *rules)  # fmt: skip


@pytest.mark.slow
def test_the_sentinels_own_login_is_used_and_a_refused_one_is_a_setting_to_fix(
    sentinel: RedisSentinel, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """BUS_SENTINEL_USERNAME / BUS_SENTINEL_PASSWORD log in to the sentinels (their own ACL):
    the right ones find the primary; a wrong password, a user without SENTINEL MASTERS, and no
    login where the sentinels ask for one stop a worker with exit 78 and the tools with 69,
    each in one line naming those settings (not BUS_REDIS_URL), without the password."""
    sentinels_with_users(sentinel)
    env = bus_env(sentinel)
    url = "redis://127.0.0.1:1/0"
    cases = [("wrong password", "asker", "wrong-Passw0rd-0000", "refused the login"),
             ("no right to ask", "mute", SENTINEL_PASSWORD, "SENTINEL MASTERS")]  # fmt: skip

    def check(case: str, user: str, password: str, says: str) -> None:
        login = {"BUS_SENTINEL_USERNAME": user, "BUS_SENTINEL_PASSWORD": password} if user else {}
        proc = spawn("worker", url, "--name", "w-refused", **env, **login)
        assert proc.wait(20) == 78, f"{case}:\n{proc.log()}"
        done = run_cli("status", env={**project_env(url), **env, **login})
        for text in (proc.log(), done.stderr):
            assert "BUS_SENTINEL_USERNAME" in text and says in text, f"{case}:\n{text}"
            assert "BUS_REDIS_URL" not in text and "Traceback" not in text, f"{case}:\n{text}"
            assert password not in text or not password, f"{case}: the password is shown"
        assert done.returncode == 69 and done.stderr.count("\n") == 1, (case, done.stderr)

    for case in cases:
        check(*case)
    login = {"BUS_SENTINEL_USERNAME": "asker", "BUS_SENTINEL_PASSWORD": SENTINEL_PASSWORD}
    spawn("worker", url, "--name", "w1", "--handler", "tests.handlers_for_tests:record",
          **env, **login)  # fmt: skip
    settings = bus_settings(sentinel, sentinel_username="asker",
                            sentinel_password=SENTINEL_PASSWORD)  # fmt: skip
    sent = Producer(make_client(settings, "producer", "t")).push({"n": 1}, Q).envelope.id
    records = tmp_path / "records.jsonl"
    wait_for(lambda: [x["id"] for x in read_records(records)] == [sent], 15, "the push handled")
    for s in sentinel.sentinel_servers:  # now they ask everyone to log in
        with s.admin() as c:
            c.execute_command("ACL", "SETUSER", "default", "off")
    check("no login", "", "", "refused the login")
