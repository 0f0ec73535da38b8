"""Cancelling a tracked message: waiting (pending, scheduled, retrying), it is never delivered and
counted; in a handler's hands, ``Context.cancelled`` turns true and the attempt is not retried;
finished, nothing changes. From Python, HTTP (``DELETE /api/messages/<id>``) and the CLI."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis
from flask.testing import FlaskClient

from consumers.lists import QueueOps
from consumers.tracking import Context
from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import Envelope, Producer, Settings, keys
from producer.store.counts import read_balance
from producer.store.tracking import read_record
from tests.inproc import running
from tests.procs import project_env, run_cli
from tests.test_worker import make_worker
from tests.webapp import MakeApp, assert_json

Q = "default"
DELIVERIES = ["at-least-once", "at-most-once"]


def producer_of(settings: Settings) -> Producer:
    return Producer.from_settings(settings)


def state(r: redis.Redis, msg_id: str) -> str | None:
    record = read_record(r, Q, msg_id)
    return None if record is None else record["state"]


def settled(r: redis.Redis) -> dict[str, int]:
    """The queue's balance once nothing is in a list: everything counted out."""

    def quiet() -> dict[str, int] | None:
        balance = read_balance(r, Q)
        return None if balance["processing"] or balance["pending"] else balance

    balance = wait_for(quiet, 5, "nothing pending or in a processing list")
    assert balance["unaccounted"] == 0, balance
    return balance


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_a_pending_message_is_cancelled_and_never_delivered(
    delivery: str, settings: Settings, r: redis.Redis
) -> None:
    producer = producer_of(settings)
    a, b, c = (producer.push(n, track=True).envelope.id for n in ("a", "b", "c"))
    done = producer.cancel(b)
    assert done is not None and (done.outcome, done.state, done.queue) == (
        "cancelled",
        "pending",
        Q,
    )
    assert state(r, b) == "cancelled" and read_record(r, Q, b)["final"] is True
    seen: list[str] = []
    with running(make_worker(settings.replace(delivery=delivery), lambda e: seen.append(e.id))):
        wait_for(lambda: len(seen) >= 2 and not read_balance(r, Q)["pending"], 5, "a and c")
        time.sleep(0.3)
    # (8 slots: a and c may finish in either order)
    assert sorted(seen) == sorted([a, c]) and state(r, b) == "cancelled"
    balance = settled(r)
    assert balance["cancelled"] == (1 if delivery == "at-least-once" else 0)
    again = producer.cancel(b)
    assert again is not None and (again.outcome, again.state) == ("finished", "cancelled")
    assert producer.cancel(a).outcome == "finished"  # type: ignore[union-attr]


def test_a_scheduled_message_is_dropped_by_the_mover(settings: Settings, r: redis.Redis) -> None:
    """Past its due time the mover drops it (it never becomes pending), counted."""
    producer = producer_of(settings)
    mid = producer.push("later", track=True, delay_s=0.2).envelope.id
    assert producer.cancel(mid).state == "scheduled"  # type: ignore[union-attr]
    time.sleep(0.3)
    assert QueueOps(r, Q, 0, 0).move_due() == 1
    assert r.zcard(keys.delayed(Q)) == 0 and read_balance(r, Q)["pending"] == 0
    assert state(r, mid) == "cancelled" and settled(r)["cancelled"] == 1


def test_a_retrying_message_is_not_retried(settings: Settings, r: redis.Redis) -> None:
    attempts: list[int] = []

    def fail(env: Envelope) -> None:
        attempts.append(env.attempt)
        raise RuntimeError("not now")

    producer = producer_of(settings)
    mid = producer.push("flaky", track=True).envelope.id
    s = settings.replace(retry_backoff_s=1.0, mover_interval_s=0.1)
    with running(make_worker(s, fail)):
        wait_for(lambda: state(r, mid) == "retrying", 5, "the first attempt failed")
        assert producer.cancel(mid).state == "retrying"  # type: ignore[union-attr]
        time.sleep(1.5)  # past its backoff: the mover meets it
    assert attempts == [1] and state(r, mid) == "cancelled"
    assert settled(r)["cancelled"] == 1


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_a_handler_sees_cancelled_and_its_attempt_is_not_retried(
    delivery: str, settings: Settings, r: redis.Redis
) -> None:
    """One handler stops when told (it raises): cancelled, not retried, nor dead-lettered; one
    that does not look finishes: handled, the cancel said signalled."""
    started = threading.Event()
    looked: list[int] = []

    def careful(env: Envelope, ctx: Context) -> str:
        started.set()
        for i in range(300):
            if ctx.cancelled:
                looked.append(i)
                raise RuntimeError("stopped: cancelled")
            time.sleep(0.01)
        return "finished anyway"

    producer = producer_of(settings)
    s = settings.replace(delivery=delivery, max_attempts=3, retry_backoff_s=0.0)
    with running(make_worker(s, careful)):
        mid = producer.push("long", track=True).envelope.id
        assert started.wait(5)
        done = producer.cancel(mid)
        assert done is not None and (done.outcome, done.state) == ("signalled", "in-flight")
        wait_for(lambda: state(r, mid) == "cancelled", 5, "the attempt settled as cancelled")
        time.sleep(0.3)
    assert len(looked) == 1 and looked[0] < 100  # seen within about 0.1 s
    record = read_record(r, Q, mid)
    assert record is not None and record["attempt"] == 1 and "cancel_ms" in record
    assert r.llen(keys.dead(Q)) == 0
    assert settled(r)["cancelled"] == (1 if delivery == "at-least-once" else 0)

    def heedless(env: Envelope) -> str:
        time.sleep(0.5)
        return "done"

    with running(make_worker(settings, heedless)):
        mid = producer.push("short", track=True).envelope.id
        wait_for(lambda: state(r, mid) == "in-flight", 5, "in the handler's hands")
        assert producer.cancel(mid).outcome == "signalled"  # type: ignore[union-attr]
        wait_for(lambda: state(r, mid) == "handled", 5, "handled all the same")


def test_an_async_handler_sees_cancelled(settings: Settings, r: redis.Redis) -> None:
    """An ``async def`` handler on the event loop reads ``ctx.cancelled`` between awaits and
    stops: cancelled, not retried."""
    started = threading.Event()

    async def careful(env: Envelope, ctx: Context) -> str:
        started.set()
        for _ in range(300):
            if ctx.cancelled:
                raise RuntimeError("stopped: cancelled")
            await asyncio.sleep(0.01)
        return "finished anyway"

    producer = producer_of(settings)
    with running(make_worker(settings.replace(max_attempts=3, retry_backoff_s=0.0), careful)):
        mid = producer.push("long", track=True).envelope.id
        assert started.wait(5)
        assert producer.cancel(mid).outcome == "signalled"  # type: ignore[union-attr]
        wait_for(lambda: state(r, mid) == "cancelled", 5, "the attempt settled as cancelled")
    record = read_record(r, Q, mid)
    assert record is not None and record["attempt"] == 1 and r.llen(keys.dead(Q)) == 0
    assert settled(r)["cancelled"] == 1


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_a_message_cancelled_before_an_idle_worker_pops_it_is_dropped(
    delivery: str, settings: Settings, r: redis.Redis
) -> None:
    """Pushed and cancelled in one transaction while a worker blocks in its pop: the worker gets
    it from the pop, finds it cancelled and drops it (no handler), counted."""
    seen: list[Envelope] = []
    producer = producer_of(settings)
    with running(make_worker(settings.replace(delivery=delivery), seen.append)):
        producer.push("warm-up", track=True)
        wait_for(lambda: len(seen) == 1, 5, "the warm-up handled")
        wait_for(lambda: any(c.get("cmd") in ("blmove", "brpop") for c in r.client_list()), 5,
                 "the worker blocked in its pop")  # fmt: skip
        env = producer.push("never", track=True, delay_s=3600).envelope  # its record, waiting
        pipe = r.pipeline(transaction=True)  # then: cancelled, and pushed now, in one step
        pipe.zrem(keys.delayed(Q), env.encode())
        pipe.hset(keys.record(Q, env.id), "state", "cancelled")
        pipe.lpush(keys.pending(Q), env.encode())
        pipe.execute()
        time.sleep(0.5)
    assert [e.payload for e in seen] == ["warm-up"]
    assert state(r, env.id) == "cancelled" and r.llen(keys.pending(Q)) == 0
    assert settled(r)["cancelled"] == (1 if delivery == "at-least-once" else 0)


def test_delete_api_messages_cancels_and_says_what_it_did(
    client: FlaskClient, make_app: MakeApp, settings: Settings, r: redis.Redis
) -> None:
    producer = producer_of(settings)
    mid = producer.push("x", track=True).envelope.id
    resp = client.delete(f"/api/messages/{mid}")
    assert resp.status_code == 200
    assert {k: v for k, v in assert_json(resp).items() if k != "meaning"} == {
        "id": mid, "queue": Q, "outcome": "cancelled", "state": "pending"}  # fmt: skip
    again = client.delete(f"/api/messages/{mid}?queue={Q}")
    assert again.status_code == 200 and assert_json(again)["outcome"] == "finished"
    untracked = producer.push("y").envelope.id
    for url, code in ((f"/api/messages/{untracked}", 404), ("/api/messages/nope?queue=zz", 404),
                      ("/api/messages/%01", 400)):  # fmt: skip
        resp = client.delete(url)
        assert resp.status_code == code and assert_json(resp)["status"] == code, url
    guarded = make_app(settings.replace(api_token="s3cret-s3cret-s3cret")).test_client()
    other = producer.push("z", track=True).envelope.id
    assert guarded.delete(f"/api/messages/{other}").status_code == 401
    assert state(r, other) == "pending"
    ok = guarded.delete(
        f"/api/messages/{other}", headers={"Authorization": "Bearer s3cret-s3cret-s3cret"}
    )
    assert ok.status_code == 200 and state(r, other) == "cancelled"


def test_the_cli_cancels(redis_server: RedisServer, settings: Settings, r: redis.Redis) -> None:
    mid = producer_of(settings).push("x", track=True).envelope.id
    env = project_env(redis_server.url)
    done = run_cli("message", "cancel", mid, env=env)
    assert done.returncode == 0 and f"{mid} (queue default, pending): cancelled" in done.stdout
    assert state(r, mid) == "cancelled"
    assert '"outcome": "finished"' in run_cli("message", "cancel", mid, "--json", env=env).stdout
    assert run_cli("message", "cancel", "unknown-id", env=env).returncode == 1
    assert run_cli("message", "a", "b", "c", env=env).returncode == 2
    shown = run_cli("message", mid, env=env)
    assert shown.returncode == 0 and "state:          cancelled" in shown.stdout
