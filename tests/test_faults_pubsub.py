"""Pub/sub under faults, with real processes: at-most-once, fan-out, and exact gap accounting.

Each test runs its own redis-server (``fresh_redis``) and subscribers as ``python -m consumers
subscriber`` processes whose handler (``tests.handlers_for_tests``) writes one JSON line per
message, so the test knows exactly which messages each subscriber process received, and when.
The test publishes at a steady rate with one Producer (one ``src``, consecutive ``seq``) and
injects the fault mid-stream. For each subscriber it then checks, against the independent record
of what Redis accepted:

* ``lost`` (its final stats, written on exit) == published after its first received message
  (the baseline) - received; ``received`` == the number of records; no duplicates;
* it receives again after the fault: every message published after its first post-fault
  message reached it, and it received the last one (so no loss hides in the tail).

A publish that raised a plain ConnectionError or TimeoutError never ran (its sequence number
stays free and is reused), as the producer promises. One that raised ``Unconfirmed`` was sent
and its reply lost: an unknown outcome, its number consumed; the tests count those explicitly,
and the last test cuts a link right after Redis ran the PUBLISH to prove the distinction.
Measured detection and resume times are printed (``pytest -s``) for the release note.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Producer, Settings, Unconfirmed, keys, make_client
from tests.procs import Proc, read_records, wait_for
from tests.proxies import ReplyDroppingProxy
from tests.redisproc import RedisServer

HANDLER = "tests.handlers_for_tests:record"
SLOW_HANDLER = "tests.handlers_for_tests:slow_record"
RATE_S = 0.005  # one message every 5 ms
CHANNEL = keys.channel("default")


# --------------------------------------------------------------------------------------------
# Publishing with an exact record of every attempt


@dataclass
class Attempt:
    n: int
    t0: float  # wall clock before the PUBLISH
    t1: float  # wall clock after it returned or raised
    outcome: str  # "ok" (accepted), "failed" (did not run), "unknown" (Unconfirmed: reply lost)
    seq: int | None = None  # the sequence number it used (ok or unknown), None if failed
    id: str | None = None  # envelope id (ok only)
    receivers: int | None = None  # PUBLISH's answer (ok only)
    error: str = ""


class Publisher:
    """Publishes ``{"n": i, ...}`` with one Producer, on demand or from a thread at a steady
    rate, and remembers every attempt in order."""

    def __init__(self, url: str, pad: int = 0) -> None:
        settings = Settings(redis_url=url, connect_timeout_s=1.0)
        self.producer = Producer(make_client(settings, "producer"))
        self.pad = "x" * pad
        self.attempts: list[Attempt] = []
        self.next_seq = 1  # what the producer must use next (its numbering contract)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def publish_one(self, pad: str | None = None) -> Attempt:
        with self._lock:
            n = len(self.attempts)
            payload: dict[str, Any] = {"n": n}
            pad = self.pad if pad is None else pad
            if pad:
                payload["pad"] = pad
            t0 = time.time()
            try:
                sent = self.producer.publish(payload)
            except Unconfirmed as exc:  # sent, reply lost: may have run, its number is used
                a = Attempt(
                    n,
                    t0,
                    time.time(),
                    "unknown",
                    seq=self.next_seq,
                    error=f"{type(exc).__name__}: {exc}",
                )
                self.next_seq += 1
            except redis.ConnectionError as exc:  # refused or closed: not published
                a = Attempt(n, t0, time.time(), "failed", error=f"{type(exc).__name__}: {exc}")
            else:
                env = sent.envelope
                assert env.seq == self.next_seq, "the producer skipped or reused a number"
                a = Attempt(n, t0, time.time(), "ok", env.seq, env.id, sent.result)
                self.next_seq += 1
            self.attempts.append(a)
            return a

    def start(self, rate_s: float = RATE_S) -> Publisher:
        assert self._thread is None
        self._stop.clear()

        def run() -> None:
            next_at = time.monotonic()
            while not self._stop.is_set():
                self.publish_one()
                next_at = max(next_at + rate_s, time.monotonic())
                self._stop.wait(max(0.0, next_at - time.monotonic()))

        self._thread = threading.Thread(target=run, name="test-publisher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread; when this returns no PUBLISH is in flight."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(10)
            assert not self._thread.is_alive()
            self._thread = None

    # views
    def accepted(self) -> list[Attempt]:
        return [a for a in self.attempts if a.outcome == "ok"]

    def numbered(self) -> list[Attempt]:
        """Attempts that used a sequence number (accepted or unknown outcome)."""
        return [a for a in self.attempts if a.outcome in ("ok", "unknown")]

    def count(self, outcome: str) -> int:
        return sum(1 for a in self.attempts if a.outcome == outcome)

    def last_ok(self) -> Attempt:
        return self.accepted()[-1]


# --------------------------------------------------------------------------------------------
# Reading what the subscriber did: its stats hash, its records, its log


def final_stats(r: redis.Redis, name: str) -> dict[str, str]:
    raw = r.hgetall(keys.stats("subscriber", name))
    return {k.decode(): v.decode() for k, v in raw.items()}


def counter(stats: dict[str, str], name: str) -> int:
    return int(stats[name])


def log_time(line: str) -> float:
    """Wall-clock time of one log line (``%(asctime)s``: local time, milliseconds)."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def log_events(proc: Proc, needle: str) -> list[tuple[float, str]]:
    return [(log_time(line), line) for line in proc.log().splitlines() if needle in line]


def first_log(proc: Proc, needle: str, after: float = 0.0) -> tuple[float, str] | None:
    """The first log line containing ``needle`` stamped at or after ``after`` (ms precision)."""
    for t, line in log_events(proc, needle):
        if t >= after - 0.001:
            return t, line
    return None


def wait_log(proc: Proc, needle: str, after: float, timeout_s: float) -> tuple[float, str]:
    return wait_for(lambda: first_log(proc, needle, after), timeout_s, f"log line {needle!r}")  # type: ignore[no-any-return]


def redis_log_times(server: RedisServer, needle: str) -> list[float]:
    """Wall-clock times of redis-server's own log lines containing ``needle`` (ms precision),
    e.g. ``11564:M 23 Nov 2026 02:15:30.511 # User requested shutdown...``."""
    times = []
    for line in (server.workdir / "redis.log").read_text(errors="replace").splitlines():
        if needle in line and ":M " in line:
            stamp = line.split(":M ", 1)[1][:24]
            times.append(datetime.strptime(stamp, "%d %b %Y %H:%M:%S.%f").timestamp())
    return times


def wait_received(path: Path, attempt: Attempt, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Wait until the subscriber recorded ``attempt``; returns the records."""
    wait_for(lambda: any(x["id"] == attempt.id for x in read_records(path)), timeout_s,
             f"message n={attempt.n} recorded in {path.name}")  # fmt: skip
    return read_records(path)


def wait_subscribed(r: redis.Redis, count: int = 1, timeout_s: float = 10.0) -> None:
    wait_for(lambda: r.pubsub_numsub(CHANNEL)[0][1] == count, timeout_s, f"{count} subscribers")


def stop_cleanly(proc: Proc) -> None:
    """SIGTERM and exit 0: the daemon's last tick writes its final counters."""
    assert proc.stop() == 0, proc.log()


@dataclass
class Accounting:
    baseline_n: int  # attempt number of the first message received
    published: int  # numbered attempts from the baseline on (accepted + unknown outcome)
    unknown: int  # of which TimeoutError (unknown outcome)
    received: int
    lost: int  # published - received


def account(pub: Publisher, records: list[dict[str, Any]], stats: dict[str, str]) -> Accounting:
    """Assert the subscriber's counters against what was published, exactly; return the numbers.

    ``records`` are the records of one subscriber process (one GapCounter)."""
    assert records, "the subscriber received nothing"
    numbered = pub.numbered()
    by_seq = {a.seq: a for a in numbered}
    ids = [x["id"] for x in records]
    assert len(set(ids)) == len(ids), "a message was handled twice"
    accepted_ids = {a.id for a in pub.accepted()}
    for x in records:
        a = by_seq.get(x["seq"])
        assert a is not None, f"received seq {x['seq']}, which no publish used"
        # an accepted message must be the very envelope; an unknown-outcome one was published
        assert a.outcome == "unknown" or x["id"] == a.id, f"seq {x['seq']}: another envelope"
        assert a.outcome == "unknown" or x["id"] in accepted_ids
    seqs = [x["seq"] for x in records]
    assert seqs == sorted(seqs), "pub/sub from one producer must arrive in order"
    first_seq = seqs[0]
    # Loss after the last received message is invisible to any subscriber: the tests make sure
    # the last publish was received.
    assert seqs[-1] == numbered[-1].seq, "the last published message was not received"
    span = [a for a in numbered if a.seq >= first_seq]
    acc = Accounting(
        baseline_n=by_seq[first_seq].n,
        published=len(span),
        unknown=sum(1 for a in span if a.outcome == "unknown"),
        received=len(records),
        lost=len(span) - len(records),
    )
    assert counter(stats, "received") == len(records)
    assert counter(stats, "handled") == len(records)
    assert counter(stats, "duplicates") == 0
    assert counter(stats, "out_of_order") == 0
    assert counter(stats, "lost") == acc.published - acc.received, (acc, stats)
    return acc


def receives_after(
    pub: Publisher, records: list[dict[str, Any]], after_t: float, at_least: int = 20
) -> dict[str, Any]:
    """Assert the subscriber receives again after the fault: from its first message received
    after ``after_t`` (handler time) on, it received every accepted message. Returns that first
    post-fault record."""
    post = [x for x in records if x["wall"] > after_t]
    assert post, "nothing received after the fault"
    got = {x["id"] for x in records}
    later = [a for a in pub.accepted() if a.seq is not None and a.seq >= post[0]["seq"]]
    missing = [a.n for a in later if a.id not in got]
    assert not missing, f"lost after recovery: {missing[:20]}"
    assert len(later) >= at_least, "too few messages after recovery to show it receives again"
    return post[0]


def report(fault: str, **numbers: object) -> None:
    parts = " ".join(
        f"{k}={v:.3f}s" if isinstance(v, float) else f"{k}={v}" for k, v in numbers.items()
    )
    print(f"\n[pubsub fault] {fault}: {parts}")


# --------------------------------------------------------------------------------------------
# The faults


@pytest.mark.slow
def test_client_kill_pubsub_mid_stream(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """CLIENT KILL TYPE pubsub while publishing every 5 ms: one reconnect, lost exact."""
    r = fresh_redis.client()
    sub = spawn("subscriber", fresh_redis.url, "--name", "s1", "--handler", HANDLER)
    records_path = tmp_path / "records.jsonl"
    wait_subscribed(r)
    pub = Publisher(fresh_redis.url).start()
    try:
        wait_for(lambda: len(read_records(records_path)) >= 100, 10, "100 messages received")
        t_kill = time.time()
        assert r.client_kill_filter(_type="pubsub") == 1
        t_lost, lost_line = wait_log(sub, "Redis connection lost", t_kill, 10)
        t_back, _ = wait_log(sub, "reconnected after", t_kill, 10)
        wait_for(lambda: sum(1 for x in read_records(records_path) if x["wall"] > t_back) >= 100,
                 10, "100 messages after the reconnect")  # fmt: skip
    finally:
        pub.stop()
    records = wait_received(records_path, pub.last_ok())
    stop_cleanly(sub)
    stats = final_stats(r, "s1")

    assert pub.count("failed") == pub.count("unknown") == 0  # only the subscriber was cut
    acc = account(pub, records, stats)
    assert counter(stats, "reconnects") == 1
    first_post = receives_after(pub, records, t_lost + 0.001)
    report(
        "CLIENT KILL TYPE pubsub",
        detection=t_lost - t_kill,
        resubscribed=t_back - t_kill,
        resume=first_post["wall"] - t_kill,
        published=acc.published,
        received=acc.received,
        lost=counter(stats, "lost"),
        reconnects=counter(stats, "reconnects"),
    )
    print(f"  {lost_line}")


@pytest.mark.slow
def test_redis_restart_mid_stream(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """Redis restarts (SIGTERM, start on the same port) while publishing: publishes that raised
    while it was down are not published; lost is exact; the subscriber reconnects."""
    r = fresh_redis.client()
    sub = spawn("subscriber", fresh_redis.url, "--name", "s1", "--handler", HANDLER)
    records_path = tmp_path / "records.jsonl"
    wait_subscribed(r)
    pub = Publisher(fresh_redis.url).start()
    try:
        wait_for(lambda: len(read_records(records_path)) >= 100, 10, "100 messages received")
        t_stop = time.time()
        fresh_redis.restart()
        t_ready = time.time()
        t_lost, lost_line = wait_log(sub, "Redis connection lost", t_stop, 10)
        t_back, _ = wait_log(sub, "reconnected after", t_stop, 10)
        wait_for(lambda: sum(1 for x in read_records(records_path) if x["wall"] > t_back) >= 100,
                 10, "100 messages after the reconnect")  # fmt: skip
    finally:
        pub.stop()
    r = fresh_redis.client()
    records = wait_received(records_path, pub.last_ok())
    stop_cleanly(sub)
    stats = final_stats(r, "s1")

    acc = account(pub, records, stats)
    assert counter(stats, "reconnects") >= 1
    first_post = receives_after(pub, records, t_lost + 0.001)
    # From redis-server's log: when the old one began its shutdown, when the new one listened.
    t_down = next(
        t for t in redis_log_times(fresh_redis, "User requested shutdown") if t >= t_stop - 0.001
    )
    t_up = next(
        t for t in redis_log_times(fresh_redis, "Ready to accept connections") if t >= t_down
    )
    assert t_up <= t_ready + 0.001
    report(
        "Redis restart",
        outage=t_up - t_down,
        detection=t_lost - t_down,
        resubscribed_after_up=t_back - t_up,
        resume_after_up=first_post["wall"] - t_up,
        published=acc.published,
        refused=pub.count("failed"),
        unknown=acc.unknown,
        received=acc.received,
        lost=counter(stats, "lost"),
        reconnects=counter(stats, "reconnects"),
    )
    print(f"  {lost_line}")


@pytest.mark.slow
def test_black_hole_sigstop_is_detected_by_the_pong_deadline(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """redis-server SIGSTOPped for 4 s (longer than the PONG deadline): the subscriber's PING
    goes unanswered, it drops the link within interval + deadline + 1 s, keeps trying, and
    receives again after SIGCONT. Nothing is published while Redis is paused."""
    interval_s, deadline_s, pause_s = 1.0, 1.0, 4.0
    r = fresh_redis.client()
    sub = spawn("subscriber", fresh_redis.url, "--name", "s1", "--handler", HANDLER,
                BUS_HEALTH_CHECK_INTERVAL_S=f"{interval_s:g}",
                BUS_PONG_DEADLINE_S=f"{deadline_s:g}")  # fmt: skip
    records_path = tmp_path / "records.jsonl"
    wait_subscribed(r)
    pub = Publisher(fresh_redis.url).start()
    try:
        wait_for(lambda: len(read_records(records_path)) >= 100, 10, "100 messages received")
    finally:
        pub.stop()  # no PUBLISH in flight from here: none can hang on the paused server
    wait_received(records_path, pub.last_ok())
    t_pause = time.time()
    fresh_redis.pause()
    try:
        time.sleep(pause_s)
    finally:
        fresh_redis.resume()
    t_cont = time.time()
    pub.start()
    try:
        t_lost, lost_line = wait_log(sub, "Redis connection lost", t_pause, 10)
        t_back, _ = wait_log(sub, "reconnected after", t_pause, 10)
        wait_for(lambda: sum(1 for x in read_records(records_path) if x["wall"] > t_back) >= 100,
                 10, "100 messages after the reconnect")  # fmt: skip
    finally:
        pub.stop()
    records = wait_received(records_path, pub.last_ok())
    stop_cleanly(sub)
    stats = final_stats(r, "s1")

    assert pub.count("failed") == pub.count("unknown") == 0
    acc = account(pub, records, stats)
    assert "DeadLink" in lost_line and "no PONG" in lost_line, lost_line
    detection = t_lost - t_pause
    assert detection <= interval_s + deadline_s + 1.0, f"detected after {detection:.3f}s"
    assert t_lost < t_cont, "the dead link was only noticed after Redis came back"
    assert counter(stats, "deadline_misses") >= 1
    assert counter(stats, "pings") >= 1
    assert counter(stats, "reconnects") >= 1
    first_post = receives_after(pub, records, t_cont)
    report(
        "black hole (SIGSTOP 4 s)",
        detection=detection,
        resubscribed_after_sigcont=t_back - t_cont,
        resume_after_sigcont=first_post["wall"] - t_cont,
        published=acc.published,
        received=acc.received,
        lost=counter(stats, "lost"),
        deadline_misses=counter(stats, "deadline_misses"),
        reconnects=counter(stats, "reconnects"),
        failed_attempts_while_paused=len(log_events(sub, "Redis connection lost")),
    )
    print(f"  {lost_line}")


@pytest.mark.slow
def test_slow_subscriber_cut_off_by_the_output_buffer_limit(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """A subscriber slower than the stream (20 ms per message) behind a small pubsub output
    buffer limit: Redis cuts it off, it reconnects, and what the cut cost is counted exactly.

    Payloads are 16 KB rather than 2 KB: the kernel socket buffers on loopback hold ~4 MB before
    Redis's own buffer even starts to fill, and at 20 ms per message 2 KB messages would take
    ~40 s to drain; with 16 KB the same bytes are ~250 messages (~5 s)."""
    r = fresh_redis.client()
    r.config_set("client-output-buffer-limit", "pubsub 64kb 32kb 1")
    sub = spawn("subscriber", fresh_redis.url, "--name", "s1", "--handler", SLOW_HANDLER,
                TEST_BUS_HANDLER_SLEEP_S="0.02")  # fmt: skip
    records_path = tmp_path / "records.jsonl"
    wait_subscribed(r)
    pub = Publisher(fresh_redis.url, pad=16_000)
    # The burst: as fast as one connection goes, until Redis reports nobody heard a message
    # (it cut the subscriber off), then 100 more; at most 4000.
    cut: Attempt | None = None
    t_burst = time.time()
    for i in range(4000):
        a = pub.publish_one()
        assert a.outcome == "ok", a
        if cut is None and a.receivers == 0:
            cut = a
        if cut is not None and a.n >= cut.n + 100:
            break
        if i % 20 == 0:
            time.sleep(0.001)
    assert cut is not None, "Redis never cut the slow subscriber off"
    # It drains what the kernel had buffered, then meets the closed connection.
    t_lost, lost_line = wait_log(sub, "Redis connection lost", t_burst, 20)
    t_back, _ = wait_log(sub, "reconnected after", t_lost, 10)
    # A slow tail of small messages, well within its pace, so the last one is received.
    for _ in range(30):
        pub.publish_one(pad="")
        time.sleep(0.03)
    records = wait_received(records_path, pub.last_ok(), 10)
    stop_cleanly(sub)
    stats = final_stats(r, "s1")

    assert pub.count("failed") == pub.count("unknown") == 0
    acc = account(pub, records, stats)
    assert counter(stats, "reconnects") >= 1
    assert acc.lost > 0, "the cut cost nothing?"
    first_post = receives_after(pub, records, t_lost + 0.001, at_least=25)
    heard = {x["id"] for x in records}
    dropped_by_redis = sum(1 for a in pub.accepted() if a.receivers == 1 and a.id not in heard)
    report(
        "slow subscriber, output buffer limit pubsub 64kb 32kb 1",
        cut_after_messages=cut.n,
        detection_after_cut=t_lost - cut.t0,
        resubscribed_after_detection=t_back - t_lost,
        resume_after_detection=first_post["wall"] - t_lost,
        published=acc.published,
        received=acc.received,
        lost=counter(stats, "lost"),
        lost_despite_receivers_1=dropped_by_redis,
        reconnects=counter(stats, "reconnects"),
    )
    print(f"  {lost_line}")


@pytest.mark.slow
def test_fan_out_three_subscribers_one_killed_and_restarted(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """s1, s2, s3 on one channel; s1 is killed -9 mid-stream and started again. PUBLISH's
    receivers go 3...2...3 and nothing else; s2 and s3 receive every message; the new s1
    counts 0 lost and receives everything from its first message (the first publish that
    answered 3 again) on."""
    r = fresh_redis.client()
    paths = {n: tmp_path / f"records-{n}.jsonl" for n in ("s1", "s2", "s3")}
    procs = {
        n: spawn("subscriber", fresh_redis.url, "--name", n, "--handler", HANDLER,
                 TEST_BUS_RECORD=str(paths[n]))
        for n in ("s1", "s2", "s3")
    }  # fmt: skip
    wait_subscribed(r, 3)
    pub = Publisher(fresh_redis.url).start()
    try:
        for p in paths.values():
            wait_for(lambda p=p: len(read_records(p)) >= 100, 10, f"100 messages in {p.name}")
        old_s1 = procs["s1"]
        t_kill = time.time()
        old_s1.signal(signal.SIGKILL)
        assert old_s1.wait(5) == -signal.SIGKILL
        drop = wait_for(
            lambda: next((a for a in pub.accepted() if a.t0 > t_kill and a.receivers == 2), None),
            5, "a publish answering 2 receivers")  # fmt: skip
        time.sleep(0.3)
        t_spawn = time.time()
        new_s1 = spawn("subscriber", fresh_redis.url, "--name", "s1", "--handler", HANDLER,
                       TEST_BUS_RECORD=str(paths["s1"]))  # fmt: skip
        back = wait_for(
            lambda: next((a for a in pub.accepted() if a.t0 > t_spawn and a.receivers == 3), None),
            10, "a publish answering 3 receivers again")  # fmt: skip
        wait_for(lambda: len(pub.accepted()) >= back.n + 100, 10, "100 more publishes")
    finally:
        pub.stop()
    assert pub.count("failed") == pub.count("unknown") == 0
    accepted = pub.accepted()
    last = pub.last_ok()
    records = {n: wait_received(paths[n], last) for n in ("s2", "s3", "s1")}
    for n in ("s2", "s3"):
        stop_cleanly(procs[n])
    stop_cleanly(new_s1)

    # receivers: 3 ... 2 ... 3, nothing else; the 2s only between the kill and the restart
    runs: list[int] = []
    for a in accepted:
        if not runs or runs[-1] != a.receivers:
            runs.append(a.receivers)  # type: ignore[arg-type]
    assert runs == [3, 2, 3], f"receivers went {runs}"
    twos = [a for a in accepted if a.receivers == 2]
    assert twos[0].t1 > t_kill and twos[-1].t0 < back.t0 and back.t1 > t_spawn

    # the survivors: every message, in order, counted without loss
    all_ids = [a.id for a in accepted]
    for n in ("s2", "s3"):
        assert [x["id"] for x in records[n]] == all_ids, f"{n} missed messages"
        stats = final_stats(r, n)
        acc = account(pub, records[n], stats)
        assert acc.lost == 0 and counter(stats, "lost") == 0
        assert counter(stats, "reconnects") == 0

    # s1's first life: a prefix of the stream (what was in flight when it died is gone)
    first_life = [x for x in records["s1"] if x["pid"] == old_s1.pid]
    assert [x["id"] for x in first_life] == all_ids[: len(first_life)]
    # s1's second life: a fresh subscriber, baseline at its first message, which is the first
    # publish that counted it; from there on it has everything
    second_life = [x for x in records["s1"] if x["pid"] == new_s1.pid]
    assert len(first_life) + len(second_life) == len(records["s1"])
    assert second_life[0]["id"] == back.id
    assert [x["id"] for x in second_life] == all_ids[all_ids.index(back.id) :]
    stats = final_stats(r, "s1")
    assert int(stats["pid"]) == new_s1.pid
    acc = account(pub, second_life, stats)
    assert acc.lost == 0 and counter(stats, "lost") == 0
    receivers_3_missed = sum(1 for a in accepted[: drop.n] if a.receivers == 3 and a.t0 > t_kill)
    report(
        "subscriber kill -9 and restart (3 subscribers)",
        redis_noticed_kill=drop.t0 - t_kill,
        publishes_still_counting_dead_s1=receivers_3_missed,
        resubscribed_after_spawn=back.t1 - t_spawn,
        resume_after_spawn=second_life[0]["wall"] - t_spawn,
        published=len(accepted),
        s1_first_life=len(first_life),
        s1_never_received=back.n - len(first_life),  # every attempt was accepted: n is the index
        s1_second_life=len(second_life),
        s1_new_lost=counter(stats, "lost"),
        s2_lost=0,
        s3_lost=0,
    )


# --------------------------------------------------------------------------------------------
# The contract the accounting above rests on


@pytest.mark.slow
def test_a_publish_whose_reply_was_lost_is_unconfirmed_not_retried(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """The producer's link breaks after Redis ran the PUBLISH and before the reply came back (a
    network cut, a proxy or a CLIENT KILL at the wrong moment). The publish raises Unconfirmed
    (unknown outcome), is never resent (pub/sub is at-most-once: no message delivered twice),
    its sequence number is not reused (one seq never names two messages), and the subscriber's
    accounting stays exact: it received the message, so nothing is counted lost."""
    r = fresh_redis.client()
    sub = spawn("subscriber", fresh_redis.url, "--name", "s1", "--handler", HANDLER)
    records_path = tmp_path / "records.jsonl"
    wait_subscribed(r)
    proxy = ReplyDroppingProxy(fresh_redis.port)
    try:
        pub = Publisher(proxy.url)
        for _ in range(5):
            assert pub.publish_one().outcome == "ok"
        proxy.armed.set()
        victim = pub.publish_one()
        proxy.armed.clear()
        for _ in range(5):
            assert pub.publish_one().outcome == "ok"
    finally:
        proxy.close()
    assert victim.outcome == "unknown", victim  # it raised Unconfirmed
    records = wait_received(records_path, pub.last_ok())
    stop_cleanly(sub)
    stats = final_stats(r, "s1")

    victim_deliveries = sum(1 for x in records if x["payload_n"] == victim.n)
    ids_by_seq: dict[int, set[str]] = {}
    for x in records:
        ids_by_seq.setdefault(x["seq"], set()).add(x["id"])
    shared = {seq: len(ids) for seq, ids in ids_by_seq.items() if len(ids) > 1}
    report(
        "PUBLISH ran but its reply was lost (Unconfirmed)",
        replies_dropped=proxy.dropped,
        publish_raised=victim.error,
        delivered_to_s1=victim_deliveries,
        seqs_naming_several_messages=shared,
        duplicates_counted=counter(stats, "duplicates"),
        lost_counted=counter(stats, "lost"),
    )
    assert victim_deliveries == 1, "sent once, never resent"
    assert len({x["id"] for x in records}) == len(records), "pub/sub is at-most-once"
    assert not shared, f"one seq named several distinct messages: {shared}"
    assert counter(stats, "duplicates") == 0 and counter(stats, "lost") == 0
    assert [x["seq"] for x in records] == list(range(1, len(records) + 1))
