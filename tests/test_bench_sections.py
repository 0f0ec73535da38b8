"""The bench's subscriber, memory, tracking and cluster sections, in smoke runs: the rows are
well formed and the messages all arrived (the figures themselves are the bench's to judge, not a
test's)."""

from __future__ import annotations

import shutil

import pytest

from loadtest.bench import after, balance, cluster, flood, memory, once, priorities, table, tracking
from loadtest.bench.common import Scale


@pytest.fixture(autouse=True)
def _redis_server_installed() -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: `make bootstrap` installs it")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_subscriber_smoke_rows_are_well_formed() -> None:
    rows = flood.run(Scale(smoke=True))
    names = [flood.RECEIVED, "subscriber lost", flood.RAW, "subscriber CPU per message",
             flood.RAW_CPU]  # fmt: skip
    assert [r.name for r in rows] == names
    received, lost, raw, cpu, raw_cpu = rows
    assert all(r.section == flood.SECTION for r in rows)
    assert received.unit == raw.unit == "msg/s" and received.value > 0 and raw.value > 0
    assert received.ref == flood.RAW and table.ratio(received, rows) is not None
    assert cpu.ref == flood.RAW_CPU and not cpu.higher_is_better and cpu.value > 0
    assert raw_cpu.unit == cpu.unit == "µs" and raw_cpu.value > 0
    assert table.ratio(cpu, rows) is not None
    n = received.extra["n"]
    assert lost.extra["received"] == raw.extra["received"] == n  # one turn in a smoke run
    assert lost.value == 0 and lost.extra["duplicates"] == 0, lost.extra
    assert lost.extra["published_to_nobody"] == 0
    assert f"| {flood.RECEIVED} |" in table.markdown(rows, table.meta())


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_memory_smoke_rows_are_well_formed() -> None:
    rows = memory.run(Scale(smoke=True))
    for who in ("worker", "subscriber"):
        mine = [r for r in rows if r.name.startswith(f"{who} RSS")]
        assert [r.unit for r in mine] == ["MiB", "MiB", "MiB", "%"], mine
        warm, top, end, growth = mine
        assert 0 < warm.value <= top.value and 0 < end.value <= top.value
        assert end.ref == top.ref == warm.name and table.ratio(end, rows) is not None
        assert growth.value == pytest.approx(100 * (end.value - warm.value) / warm.value)
        assert growth.target and growth.extra["samples"] >= 2
        assert growth.extra["messages"] == 20_000  # every message handled, none lost
    assert "| worker RSS growth |" in table.markdown(rows, table.meta())


@pytest.mark.timeout(90)
def test_tracking_smoke_rows_and_accounting() -> None:
    """Every message of each drain handled, none left; the tracked ones' records say handled,
    the untracked ones have none (the gate-open backlog holds one tracked message)."""
    rows = tracking.run(Scale(smoke=True))
    by_name = {r.name: r for r in rows}
    drain_cost, push_cost, gate_cost = (f"{what} ({tracking.RATES})" for what in
                                        (tracking.DRAIN_COST, tracking.PUSH_COST,
                                         tracking.GATE_COST))  # fmt: skip
    assert list(by_name) == [
        tracking.BASELINE, tracking.GATE_OPEN, tracking.TRACKED,
        tracking.PUSH_UNTRACKED, tracking.PUSH_TRACKED,
        drain_cost, f"{tracking.DRAIN_COST}: {tracking.WORKER_CPU}",
        f"{tracking.DRAIN_COST}: {tracking.REDIS_CPU}",
        push_cost, f"{tracking.PUSH_COST}: {tracking.PRODUCER_CPU}",
        f"{tracking.PUSH_COST}: {tracking.REDIS_CPU}",
        gate_cost, f"{tracking.GATE_COST}: {tracking.WORKER_CPU}",
        f"{tracking.GATE_COST}: {tracking.REDIS_CPU}",
        tracking.MEMORY,
    ]  # fmt: skip
    assert all(r.section == tracking.SECTION for r in rows)
    n = 1_000
    for name, tracked, records in ((tracking.BASELINE, 0, {}),
                                   (tracking.GATE_OPEN, 1, {"handled": 1}),
                                   (tracking.TRACKED, n, {"handled": n})):  # fmt: skip
        row = by_name[name]
        assert row.unit == "msg/s" and row.value > 0
        messages = n + (1 if name == tracking.GATE_OPEN else 0)
        assert (row.extra["messages"], row.extra["tracked"]) == (messages, tracked)
        assert row.extra["handled"] == [messages] and row.extra["left"] == [0]
        assert row.extra["records"] == [records], row.extra
    for name in (tracking.GATE_OPEN, tracking.TRACKED, tracking.PUSH_TRACKED):
        assert by_name[name].ref and table.ratio(by_name[name], rows) is not None
    for cost, of, ref in ((drain_cost, tracking.TRACKED, tracking.BASELINE),
                          (push_cost, tracking.PUSH_TRACKED, tracking.PUSH_UNTRACKED),
                          (gate_cost, tracking.GATE_OPEN, tracking.BASELINE)):  # fmt: skip
        expected = 1e6 / by_name[of].value - 1e6 / by_name[ref].value
        assert by_name[cost].value == pytest.approx(expected)
    for row in rows[5:-1]:
        assert row.unit == "µs" and not row.higher_is_better and row.ref is None
    for kind in (tracking.BASELINE, tracking.GATE_OPEN, tracking.TRACKED):
        assert by_name[kind].extra["worker_cpu_us_per_msg"] > 0
        assert by_name[kind].extra["redis_cpu_us_per_msg"] > 0
    memory = by_name[tracking.MEMORY]
    assert memory.unit == "B" and memory.value > 0 and not memory.higher_is_better
    assert f"| {tracking.TRACKED} |" in table.markdown(rows, table.meta())


@pytest.mark.timeout(120)
def test_cluster_smoke_rows_and_accounting() -> None:
    """On one shard and on three: every queue's worker handled exactly what was pushed to it,
    no node holds anything of a queue afterwards; the queues lie two on each of three shards."""
    if shutil.which("redis-cli") is None:
        pytest.fail("redis-cli is not installed: it comes with redis-server")
    rows = cluster.run(Scale(smoke=True))
    assert [r.name for r in rows] == [
        cluster.PUSH_1, cluster.PUSH_3, cluster.DRAIN_1, cluster.DRAIN_3,
        cluster.REDIS_1, cluster.REDIS_3, cluster.REDIS_3_BUSIEST,
        cluster.WORKER_1, cluster.WORKER_3, cluster.PRODUCER_1, cluster.PRODUCER_3,
    ]  # fmt: skip
    by_name = {r.name: r for r in rows}
    assert all(r.section == cluster.SECTION for r in rows)
    n = 500
    for name, shards in ((cluster.PUSH_1, 1), (cluster.PUSH_3, 3), (cluster.DRAIN_1, 1),
                         (cluster.DRAIN_3, 3)):  # fmt: skip
        row = by_name[name]
        assert row.unit == "msg/s" and row.value > 0 and row.higher_is_better
        assert row.extra["shards"] == shards and row.extra["messages_per_queue"] == n
        queues = row.extra["queues"]
        assert len(queues) == cluster.QUEUES and row.extra["messages"] == n * cluster.QUEUES
        assert row.extra["handled"] == [dict.fromkeys(queues, n)], row.extra
        assert row.extra["left"] == [{}], row.extra
    for row in rows:
        if row.ref is not None:
            assert row.ref in by_name and table.ratio(row, rows) is not None, row
    assert [r.name for r in rows if r.ref is None] == [
        cluster.PUSH_1, cluster.DRAIN_1, cluster.REDIS_1, cluster.WORKER_1, cluster.PRODUCER_1,
    ]  # fmt: skip
    assert len(by_name[cluster.DRAIN_3].extra["redis_busy_cores"]) == 3
    one = by_name[cluster.REDIS_1]
    assert one.extra["messages_per_shard"] == [n * cluster.QUEUES]
    for name in (cluster.REDIS_3, cluster.REDIS_3_BUSIEST):
        row = by_name[name]
        # Two queues on each of the three shards.
        assert row.extra["messages_per_shard"] == [2 * n] * 3, row.extra
        per_shard = row.extra["per_shard"]
        assert len(per_shard) == 3 and all(v > 0 for v in per_shard)
    assert by_name[cluster.REDIS_3].value == pytest.approx(
        sum(by_name[cluster.REDIS_3].extra["per_shard"]) / 3, rel=1e-3
    )
    assert by_name[cluster.REDIS_3_BUSIEST].value == pytest.approx(
        max(by_name[cluster.REDIS_3_BUSIEST].extra["per_shard"]), rel=1e-3
    )
    for row in rows[4:]:
        assert not row.higher_is_better and row.value > 0
        assert row.unit == (cluster.PER_1000 if row.name.startswith("Redis") else "µs")
    assert f"| {cluster.DRAIN_3} |" in table.markdown(rows, table.meta())


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_balance_smoke_rows_compare_each_counted_path_with_its_bare_one() -> None:
    rows = balance.run(Scale(smoke=True))
    assert len(rows) == 8 and all(r.section == balance.SECTION for r in rows)
    bare, counted = rows[0::2], rows[1::2]
    assert all(c.ref == b.name and b.ref is None for b, c in zip(bare, counted, strict=True))
    assert all(r.value > 0 and table.ratio(r, rows) is not None for r in counted)
    assert {r.unit for r in rows} == {"msg/s", "µs"}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_idempotency_smoke_rows_compare_each_keyed_push_with_a_plain_one() -> None:
    rows = once.run(Scale(smoke=True))
    assert [r.name for r in rows] == [
        once.PLAIN, once.KEYED, once.REPEAT,
        *(f"Redis time per call: {name}" for name in (once.PLAIN, once.KEYED, once.REPEAT)),
        once.MEMORY,
    ]  # fmt: skip
    assert all(r.section == once.SECTION and r.value > 0 for r in rows)
    assert all(table.ratio(r, rows) is not None for r in rows if r.ref)
    assert [r.unit for r in rows] == ["msg/s"] * 3 + ["µs"] * 3 + ["bytes"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_priorities_smoke_rows_compare_each_level_with_priority_0() -> None:
    rows = priorities.run(Scale(smoke=True))
    p = priorities
    assert [r.name for r in rows] == [
        p.PUSH_PLAIN, p.PUSH_LEVEL, f"Redis time per call: {p.PUSH_PLAIN}",
        f"Redis time per call: {p.PUSH_LEVEL}", p.CLAIM_PLAIN, p.CLAIM_LEVELS, p.TAKE_PLAIN,
        p.TAKE_LEVELS,
    ]  # fmt: skip
    assert all(r.section == p.SECTION and r.value > 0 for r in rows)
    assert all(table.ratio(r, rows) is not None for r in rows if r.ref)
    assert [r.ref for r in rows[4:]] == [None, p.CLAIM_PLAIN, None, p.TAKE_PLAIN]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_after_smoke_rows_compare_with_tracked_messages_and_time_the_callback() -> None:
    rows = after.run(Scale(smoke=True))
    a = after
    assert [r.name for r in rows] == [
        a.PUSH, a.PUSH_AFTER, a.DRAIN, a.DRAIN_AFTER, a.GROUP_PUSH.format(n="100"),
        a.GROUP_LAG.format(n="100"),
    ]  # fmt: skip
    assert [r.ref for r in rows] == [None, a.PUSH, None, a.DRAIN, None, None]
    assert all(r.section == a.SECTION and r.value > 0 for r in rows[:5])
    assert 0 <= rows[5].value < 2_000, rows[5]  # told by the settle, not a 30 s sweep
