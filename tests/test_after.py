"""Messages that wait for others (``after``, chains, groups with a callback): a waiting message is
pending only once every message it names is handled, its handler reads their results, and it
ends with them (dead-lettered or cancelled, with the reason) when one of them does. Every
message is accounted for in each queue's balance, waiting ones included."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
import redis

from consumers.tracking import Context
from loadtest.harness.waits import wait_for
from producer import Envelope, Producer, Settings, Step, UnknownPrerequisite, keys
from producer.store import after, scripts
from producer.store.counts import read_balance
from producer.store.tracking import read_record
from tests.inproc import running
from tests.test_worker import make_worker

Q = "default"


def record(r: redis.Redis, msg_id: str, queue: str = Q) -> dict[str, Any]:
    found = read_record(r, queue, msg_id)
    assert found is not None, f"no record of {msg_id} on {queue}"
    return found


def state(r: redis.Redis, msg_id: str, queue: str = Q) -> str:
    return str(record(r, msg_id, queue)["state"])


def balanced(r: redis.Redis, *queues: str) -> dict[str, dict[str, int]]:
    """Each queue's balance once nothing is pending or in a processing list: exact."""
    out = {}
    for queue in queues or (Q,):

        def quiet(queue: str = queue) -> dict[str, int] | None:
            b = read_balance(r, queue)
            return None if b["pending"] or b["processing"] else b

        out[queue] = wait_for(quiet, 5, f"{queue}: nothing pending or in hand")
        assert out[queue]["unaccounted"] == 0, out[queue]
    return out


class Handled:
    """A handler that keeps what it saw: each envelope, and ``ctx.results()`` when asked."""

    def __init__(self, results_of: set[str] | None = None, fail: set[Any] | None = None) -> None:
        self.seen: list[Envelope] = []
        self.results: dict[Any, list[Any]] = {}
        self.fail = fail or set()
        self._lock = threading.Lock()

    def __call__(self, env: Envelope, ctx: Context) -> Any:
        got = ctx.results()
        with self._lock:
            self.seen.append(env)
            if got:
                self.results[_name(env.payload)] = got
        if _name(env.payload) in self.fail:
            raise RuntimeError(f"{env.payload} fails")
        return {"done": env.payload}

    def payloads(self) -> list[Any]:
        with self._lock:
            return [e.payload for e in self.seen]


def _name(payload: Any) -> Any:
    return json.dumps(payload) if isinstance(payload, dict | list) else payload


def test_a_chain_runs_in_order_each_step_reading_the_result_before_it(
    settings: Settings, r: redis.Redis
) -> None:
    producer = Producer.from_settings(settings)
    steps = producer.chain(["fetch", "aggregate", "write"])
    first, second, third = (s.envelope.id for s in steps)
    assert [s.result for s in steps[1:]] == [1, 1]  # each waits for one
    assert state(r, first) == "pending"
    assert (state(r, second), record(r, second)["waiting_for"]) == ("waiting", 1)
    assert record(r, third)["after"] == [{"queue": Q, "id": second}]
    handler = Handled()
    with running(make_worker(settings.replace(concurrency=4), handler)):
        wait_for(lambda: len(handler.seen) >= 3, 5, "three steps handled")
    assert handler.payloads() == ["fetch", "aggregate", "write"]
    assert handler.results == {"aggregate": [{"done": "fetch"}], "write": [{"done": "aggregate"}]}
    assert [state(r, i) for i in (first, second, third)] == ["handled"] * 3
    b = balanced(r)[Q]
    assert (b["pushed"], b["acked"], b["waiting"]) == (3, 3, 0)
    assert r.zcard(keys.waiting(Q)) == 0 and not r.keys("bus:{default}:wait:*")
    assert not r.keys("bus:{default}:then:*") and r.llen(keys.outbox(Q)) == 0


def test_at_most_once_a_chain_goes_on_through_the_movers_pass(
    settings: Settings, r: redis.Redis
) -> None:
    """At-most-once no script settles a handled message: the worker writes its record, which
    writes the outbox entry, and the mover's pass (BUS_MOVER_INTERVAL_S) tells the next step."""
    producer = Producer.from_settings(settings)
    steps = [s.envelope.id for s in producer.chain(["one", "two", "three"])]
    handler = Handled()
    fast = settings.replace(delivery="at-most-once", mover_interval_s=0.1)
    with running(make_worker(fast, handler)):
        wait_for(lambda: len(handler.seen) >= 3, 5, "three steps")
    assert handler.payloads() == ["one", "two", "three"]
    assert handler.results["three"] == [{"done": "two"}]
    assert [state(r, i) for i in steps] == ["handled"] * 3
    assert r.llen(keys.outbox(Q)) == 0


def test_a_group_callback_runs_once_after_every_member_across_queues(
    settings: Settings, r: redis.Redis
) -> None:
    """Members on two queues, the callback on a third: each queue has its own worker."""
    producer = Producer.from_settings(settings)
    members = [Step(f"page-{i}", "fetch" if i % 2 else "slow") for i in range(6)]
    sent = producer.group(members, then=Step("aggregate", "report"))
    assert sent.callback is not None and sent.callback.result == 6
    cb = sent.callback.envelope.id
    handlers = {q: Handled() for q in ("fetch", "slow", "report")}
    with running(make_worker(settings, handlers["report"], queue="report", name="r1")):
        assert state(r, cb, "report") == "waiting"
        with running(make_worker(settings, handlers["fetch"], queue="fetch", name="f1")):
            wait_for(lambda: record(r, cb, "report")["waiting_for"] == 3, 5, "fetch's three")
            assert state(r, cb, "report") == "waiting" and not handlers["report"].seen
            with running(make_worker(settings, handlers["slow"], queue="slow", name="s1")):
                wait_for(lambda: len(handlers["report"].seen) >= 1, 5, "the callback")
    assert handlers["report"].payloads() == ["aggregate"]
    assert handlers["report"].results["aggregate"] == [{"done": f"page-{i}"} for i in range(6)]
    for queue, b in balanced(r, "fetch", "slow", "report").items():
        assert b["acked"] == b["pushed"] == (1 if queue == "report" else 3), (queue, b)


def test_a_member_dead_lettered_ends_the_rest_of_the_chain_with_its_reason(
    settings: Settings, r: redis.Redis
) -> None:
    producer = Producer.from_settings(settings)
    one, two, three = (s.envelope.id for s in producer.chain(["ok", "boom", "never"]))
    handler = Handled(fail={"boom"})
    with running(make_worker(settings.replace(max_attempts=2), handler)):
        wait_for(lambda: state(r, three) == "dead", 5, "the last step dead")
    assert handler.payloads() == ["ok", "boom", "boom"]  # two attempts, then dead
    assert state(r, one) == "handled" and state(r, two) == "dead"
    reason = record(r, three)["reason"]
    assert f"it waited for {two} on default, which ended dead" in reason, reason
    dead = [json.loads(e) for e in r.lrange(keys.dead(Q), 0, -1)]
    assert [json.loads(d["raw"])["payload"] for d in dead] == ["never", "boom"]
    assert "boom fails" in dead[1]["reason"] and dead[0]["reason"] == reason
    b = balanced(r)[Q]
    assert (b["pushed"], b["acked"], b["dead"], b["waiting"]) == (3, 1, 2, 0)


def test_a_cancelled_prerequisite_cancels_what_waits_and_a_waiting_message_can_be_cancelled(
    settings: Settings, r: redis.Redis
) -> None:
    producer = Producer.from_settings(settings)
    a = producer.push("a", track=True).envelope.id
    w1 = producer.push("after a", after=[a]).envelope.id
    w2 = producer.push("after w1", after=[w1]).envelope.id
    lone = producer.push("lone", after=[a]).envelope.id
    done = producer.cancel(lone)
    assert done is not None and (done.outcome, done.state) == ("cancelled", "waiting")
    assert r.zcard(keys.waiting(Q)) == 2
    assert producer.cancel(a).outcome == "cancelled"  # type: ignore[union-attr]
    assert state(r, w1) == state(r, w2) == "cancelled"  # told at once, in turn
    assert "which ended cancelled" in record(r, w2)["reason"]
    handler = Handled()
    with running(make_worker(settings, handler)):
        b = balanced(r)[Q]
    assert handler.seen == []
    assert (b["pushed"], b["cancelled"], b["waiting"]) == (4, 4, 0)


def test_after_names_a_message_without_a_record_nothing_is_sent(
    settings: Settings, r: redis.Redis
) -> None:
    producer = Producer.from_settings(settings)
    plain = producer.push("untracked").envelope.id
    tracked = producer.push("tracked", track=True).envelope.id
    before = sorted(r.keys("*"))
    with pytest.raises(UnknownPrerequisite) as caught:
        producer.push("w", after=[tracked, plain, ("other", "nope")])
    assert caught.value.missing == ((Q, plain), ("other", "nope"))
    assert f"{plain} on default" in str(caught.value)
    assert sorted(r.keys("*")) == before
    for bad, said in [
        ([], "names no message"),
        ("abc", "not one id"),
        ([42], "is not a message"),
        ([""], "1 to 256 characters"),
        ([("bad queue", "x")], "not a queue name"),
    ]:
        with pytest.raises(ValueError, match=said):
            producer.push("w", after=bad)
    with pytest.raises(ValueError, match="cannot be combined"):
        producer.push("w", after=[tracked], delay_s=1)
    with pytest.raises(ValueError, match="is tracked"):
        producer.push("w", after=[tracked], track=False)
    assert sorted(r.keys("*")) == before


def test_waiting_for_what_finished_already_is_pending_at_once(
    settings: Settings, r: redis.Redis
) -> None:
    producer = Producer.from_settings(settings)
    a = producer.push("a", track=True).envelope.id
    handler = Handled()
    with running(make_worker(settings, handler)):
        wait_for(lambda: state(r, a) == "handled", 5, "a handled")
        w = producer.push("after a", after=[a])
        assert w.result == 0
        wait_for(lambda: len(handler.seen) >= 2, 5, "w handled")
    assert handler.results["after a"] == [{"done": "a"}]
    assert balanced(r)[Q]["acked"] == 2


def test_the_sweep_finds_what_a_lost_link_or_a_lost_outbox_entry_hid(
    settings: Settings, r: redis.Redis
) -> None:
    """A producer killed between keeping its message aside and linking it, and a worker killed
    between its settle and telling the outbox: the mover's pass finds both."""
    producer = Producer.from_settings(settings)
    a = producer.push("a", track=True).envelope.id
    unlinked = producer.push("unlinked", after=[a]).envelope.id
    r.delete(keys.then(Q, a))  # as if the link never ran
    b = producer.push("b", track=True).envelope.id
    untold = producer.push("untold", after=[b]).envelope.id
    # b is handled by a settle whose worker never drains the outbox
    claimed = scripts.CLAIM(r, [keys.pending(Q), keys.processing(Q, "gone"), keys.tracking(Q)],
                            [10])  # fmt: skip
    assert len(claimed) == 2
    hows = [f"A\n{json.loads(raw)['id']}\n1\n" for raw in claimed]
    args: list[Any] = [0, ""]
    for raw, how in zip(claimed, hows, strict=True):
        args += [raw, b"", how]
    settle_keys = [keys.processing(Q, "gone"), keys.pending(Q), keys.dead(Q),
                   keys.dead_dropped(Q), keys.delayed(Q), keys.tracking(Q),
                   keys.settled(Q, "gone")]  # fmt: skip
    assert [int(x) for x in scripts.SETTLE(r, settle_keys, args)] == [2, 0, 1]
    assert r.llen(keys.outbox(Q)) == 1 and state(r, untold) == "waiting"
    r.zadd(keys.waiting(Q), {unlinked: 0, "deleted-by-hand": 0})  # their sweep is due now
    handler = Handled()
    with running(make_worker(settings.replace(mover_interval_s=0.1), handler)):
        wait_for(lambda: len(handler.seen) >= 2, 5, "both released and handled")
    assert sorted(handler.payloads()) == ["unlinked", "untold"]
    assert r.llen(keys.outbox(Q)) == 0 and r.zcard(keys.waiting(Q)) == 0


def test_telling_twice_changes_nothing(settings: Settings, r: redis.Redis) -> None:
    producer = Producer.from_settings(settings)
    a, b = (s.envelope.id for s in producer.push_many(["a", "b"], track=True))
    w = producer.push("w", after=[a, b]).envelope.id
    handled = (w, f"{Q}\n{a}", "handled", "")
    assert after.resolve(r, Q, [handled, handled]) == (0, 0)
    assert record(r, w)["waiting_for"] == 1
    assert after.resolve(r, Q, [(w, f"{Q}\n{b}", "handled", "")] * 3) == (1, 0)
    assert after.resolve(r, Q, [(w, f"{Q}\n{b}", "dead", "late")]) == (0, 0)
    assert state(r, w) == "pending" and read_balance(r, Q)["pending"] == 3


def test_async_handlers_a_hung_member_and_a_callback_reading_results(
    settings: Settings, r: redis.Redis
) -> None:
    """An ``async def`` worker: a member that never returns is given up on at its time limit
    and dead-lettered (BUS_MAX_ATTEMPTS=1), which ends its group's callback; the other group's
    callback reads its members' results from the event loop."""
    seen: list[Any] = []

    async def handler(env: Envelope, ctx: Context) -> Any:
        if env.payload == "hang":
            await asyncio.sleep(3600)
        if env.payload == "callback":
            seen.append(ctx.results())
        return {"done": env.payload}

    producer = Producer.from_settings(settings)
    good = producer.group(["a", "b"], then="callback")
    hung = producer.group([Step("c"), Step("hang", timeout_s=0.3)], then="callback")
    assert good.callback is not None and hung.callback is not None
    with running(make_worker(settings.replace(max_attempts=1), handler)):
        wait_for(lambda: state(r, hung.callback.envelope.id) == "dead", 5, "the hung group")
        wait_for(lambda: seen, 5, "the good group's callback")
    assert seen == [[{"done": "a"}, {"done": "b"}]]
    hung_id = hung.members[1].envelope.id
    assert "TimeLimitExceeded" in record(r, hung_id)["reason"]
    assert f"it waited for {hung_id}" in record(r, hung.callback.envelope.id)["reason"]
    b = balanced(r)[Q]
    assert (b["pushed"], b["acked"], b["dead"], b["waiting"]) == (6, 4, 2, 0)
