"""The dashboard in real headless chromium against a live stack: redis-server, gunicorn serving
``web.wsgi:app``, a worker ``w1`` on queue ``default`` (handler ``tests.handlers_for_tests:work``:
it records what it handles, reports progress and returns a result) and a subscriber ``s1`` on
channel ``default``. Screenshots go to ``tests/artifacts/``.

The stack runs the quick settings: heartbeat every 0.5 s with a 3 s TTL, two attempts before a
message is dead-lettered, queues ``default`` and ``jobs``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from loadtest.harness.waits import wait_for
from producer import Producer, Settings, decode, keys
from tests.browserkit import (
    FAIL,
    HEARTBEAT_TTL_S,
    WORK,
    Browser,
    Stack,
    chromium,
    live_stack,
    number,
    require_tools,
)
from tests.inhandkit import hands, reporting
from tests.procs import get_json
from web.bus import HISTORY_CACHE_S

pytestmark = pytest.mark.slow

PAGE_LAG_S = 2.0  # /api/stats cached 0.5 s, polled every 1 s, rendered: what the page trails by


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The live stack, once w1 is alive and s1 listens."""
    require_tools()
    with live_stack(tmp_path_factory.mktemp("dashboard")) as s:
        s.start("worker", "w1", "--queue", "default", handler=WORK)
        s.start("subscriber", "s1")

        def ready() -> bool:
            for d in s.daemons:
                assert d.proc.proc.poll() is None, d.proc.log()
            stats = get_json(s.base + "/api/stats") or {}
            alive = [w["name"] for w in stats.get("workers", []) if w["state"] == "alive"]
            return alive == ["w1"] and stats["channels"]["default"]["subscribers"] == 1

        wait_for(ready, 20, "w1 alive and s1 subscribed", every_s=0.1)
        yield s


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Browser]:
    with chromium(stack.base) as b:
        yield b


def test_the_page_loads_without_console_errors(browser: Browser) -> None:
    browser.open()
    assert browser.console_errors() == []
    assert browser.cell("workers", "state", name="w1", queue="default") == "alive"
    assert browser.cell("subscribers", "state", name="s1", state="listening") == "listening"
    assert browser.cell("channels", "subscribers", channel="default") == "1"
    assert browser.row("queues", queue="default") and browser.row("queues", queue="jobs")
    browser.screenshot("dashboard-idle")
    assert browser.console_errors() == []


def test_each_send_button_changes_the_counts(stack: Stack, browser: Browser) -> None:
    browser.open()
    queue = browser.row("queues", queue="default")
    channel = browser.row("channels", channel="default")
    assert queue and channel

    sent = browser.send("send-prodcons")
    assert browser.text("result").startswith(f"sent prodcons id {sent} to default (depth ")
    browser.wait_cell("queues", "pushed", f"{number(queue['pushed']) + 1:,}", 5, queue="default")
    browser.wait_cell("queues", "handled", f"{number(queue['handled']) + 1:,}", 5, queue="default")
    assert sent in stack.daemon("w1").handled_ids()  # the page's count is the message it sent

    published = browser.send("send-pubsub")
    assert browser.text("result") == f"sent pubsub id {published} to default (1 receiver)"
    for column in ("published", "received"):
        want = f"{number(channel[column]) + 1:,}"
        browser.wait_cell("channels", column, want, 5, channel="default")
    assert published in stack.daemon("s1").handled_ids()
    browser.screenshot("dashboard-busy")
    assert browser.console_errors() == []


MESSAGE_POLLS_JS = """
return performance.getEntriesByType("resource")
  .filter((e) => e.name.includes(`/api/messages/${encodeURIComponent(arguments[0])}?`)).length;
"""


def test_the_send_button_tracks_its_message_until_it_is_handled(
    stack: Stack, browser: Browser
) -> None:
    """The prodcons form sends with "track": true, then shows the message's record, polled
    every 0.5 s: in flight on w1 with the handler's progress, then handled with its result;
    then the polling stops."""
    admin = stack.redis.client()
    browser.open()
    browser.driver.execute_script("performance.setResourceTimingBufferSize(100000)")
    job = {"steps": 5, "step_s": 0.4, "result": {"pages": 5}}  # 2 s of work, a report each 0.4 s
    browser.type('form[data-mode="prodcons"] input[name="payload"]', json.dumps(job))
    sent = browser.send("send-prodcons")
    shown = browser.tracked()
    assert not shown["hidden"]
    assert (shown["id"], shown["shown_id"]) == (sent, f"{sent} on default")

    def mid_progress() -> dict[str, Any] | None:
        area = browser.tracked()
        fraction = area["fraction"]
        running = area["state"] == "in-flight" and fraction is not None and 0 < fraction < 1
        return area if running else None

    mid = wait_for(mid_progress, 5, "the page to show the message in flight, part done")
    print(f"\n[dashboard] tracked {sent} shown {mid['state']} at {mid['fraction']:.2f}: "
          f"{mid['text']!r}")  # fmt: skip
    assert (mid["shown_state"], mid["attempt"], mid["worker"]) == ("in-flight", "1", "w1")
    assert re.fullmatch(r"step [1-4] of 5", mid["text"]), mid
    assert mid["percent"] == f"{int(mid['fraction'] * 100)}%"
    assert mid["watching"] and not mid["final"] and mid["id"] == sent
    browser.screenshot("dashboard-tracked")

    done = wait_for(
        lambda: (area := browser.tracked())["state"] == "handled" and area,
        10,
        "the page to show the message handled",
        every_s=0.1,
    )
    assert (done["id"], done["shown_id"]) == (sent, f"{sent} on default")
    assert (done["shown_state"], done["attempt"], done["worker"]) == ("handled", "1", "w1")
    assert (done["fraction"], done["percent"], done["text"]) == (1.0, "100%", "step 5 of 5")
    assert re.fullmatch(r'handled in [0-9.]+ (ms|s), result \{"pages": ?5\}', done["outcome"]), done
    assert done["final"] and not done["watching"]
    browser.screenshot("dashboard-tracked-handled")

    record = get_json(f"{stack.base}/api/messages/{sent}?queue=default")
    assert record is not None
    assert (record["id"], record["state"], record["final"]) == (sent, "handled", True)
    assert (record["result"], record["progress"], record["worker"]) == ({"pages": 5}, 1.0, "w1")
    assert admin.hget(keys.record("default", sent), "state") == b"handled"
    assert sent in stack.daemon("w1").handled_ids()

    polls = browser.driver.execute_script(MESSAGE_POLLS_JS, sent)
    assert polls >= 3, f"{polls} requests for the record over 2 s of work"
    time.sleep(1.5)  # three poll periods: no request once the record said final
    assert browser.driver.execute_script(MESSAGE_POLLS_JS, sent) == polls
    assert browser.tracked() == done
    assert browser.console_errors() == []
    admin.close()


def test_a_worker_killed_with_kill_9_shows_dead_within_its_heartbeat_ttl(
    stack: Stack, browser: Browser
) -> None:
    w2 = stack.start("worker", "w2", "--queue", "default")
    browser.open()
    browser.wait_cell("queues", "workers alive", "2", 10, queue="default")
    assert browser.cell("workers", "state", name="w2") == "alive"

    w2.kill()
    killed = time.monotonic()
    bound_s = HEARTBEAT_TTL_S + PAGE_LAG_S
    browser.wait_cell("workers", "state", "dead", bound_s + 1, name="w2")
    took_s = time.monotonic() - killed
    print(f"\n[dashboard] w2 shown dead {took_s:.2f}s after kill -9 (bound {bound_s:.1f}s)")
    assert took_s <= bound_s
    assert browser.cell("queues", "workers alive", queue="default") == "1"
    assert browser.cell("workers", "state", name="w1") == "alive"
    browser.screenshot("dashboard-dead-worker", "workers")
    assert browser.console_errors() == []


def test_requeue_from_the_page_empties_the_dead_list(stack: Stack, browser: Browser) -> None:
    """Messages a handler refused twice are dead; once the failing worker is replaced by one
    that handles them, the page's requeue button sends every one back and the list empties."""
    admin = stack.redis.client()
    dead_key = keys.dead("jobs")
    failing = stack.start("worker", "jfail", "--queue", "jobs", handler=FAIL)
    browser.open()
    browser.wait_cell("workers", "state", "alive", 10, name="jfail")
    browser.select("queue", "jobs")
    ids = [browser.send("send-prodcons") for _ in range(3)]

    browser.wait_cell("queues", "dead", "3", 10, queue="jobs")
    wait_for(lambda: browser.text("requeue-jobs") == "Requeue all 3", 5, "the requeue button")
    assert (browser.dead_box("jobs") or "").startswith("jobs: 3 dead, newest first")
    entries = [json.loads(e) for e in admin.lrange(dead_key, 0, -1)]
    assert sorted(decode(e["raw"].encode()).id for e in entries) == sorted(ids)
    assert {e["reason"].split(":")[0] for e in entries} == {"handler failed on attempt 2"}
    browser.screenshot("dashboard-dead-letters", "dead")

    assert failing.proc.stop() == 0
    fixed = stack.start("worker", "jok", "--queue", "jobs")
    browser.wait_cell("workers", "state", "alive", 10, name="jok")
    browser.click("requeue-jobs")

    wait_for(lambda: browser.text("result") == "requeued 3 from jobs", 5, "the requeue's answer")
    browser.wait_cell("queues", "dead", "0", 5, queue="jobs")
    assert admin.llen(dead_key) == 0
    wait_for(lambda: fixed.handled_ids() == set(ids), 5, "jok to handle the requeued messages")
    wait_for(
        lambda: browser.dead_box("jobs") == "jobs: no dead letters", 5, "jobs' dead area empty"
    )
    browser.screenshot("dashboard-requeued", "dead")
    assert browser.console_errors() == []
    admin.close()


def test_the_chart_has_points_after_a_reload(browser: Browser) -> None:
    """The history lives in Redis: a reloaded page draws it at once, and (once the gunicorn
    worker that answers has a history as new as the one drawn before: each caches it for
    HISTORY_CACHE_S, and the page redraws every 2 s) no fewer points."""
    browser.open()
    before = wait_for(browser.chart_points, 10, "the chart's first points", every_s=0.1)
    browser.driver.execute_script("window.beforeReload = true")
    browser.driver.refresh()
    reloaded = time.monotonic()
    assert browser.driver.execute_script("return window.beforeReload") is None  # a new page
    after = wait_for(browser.chart_points, 5, "the chart's points after the reload", every_s=0.1)
    print(f"\n[dashboard] chart: {before} points, {after} after the reload "
          f"(drawn {time.monotonic() - reloaded:.2f}s after it)")  # fmt: skip
    wait_for(lambda: browser.chart_points() >= before, HISTORY_CACHE_S + 2 + 1,
             f"at least the {before} points drawn before the reload", every_s=0.1)  # fmt: skip
    browser.screenshot("dashboard-reloaded")
    assert browser.console_errors() == []


CELL_LOOK_JS = """
const [name, column] = arguments;
const tr = document.querySelector(`#workers tbody tr[data-name="${CSS.escape(name)}"]`);
const heads = [...document.querySelectorAll("#workers thead th")];
const i = heads.findIndex((th) => th.textContent === column);
return {cls: tr.cells[i].className, background: getComputedStyle(tr).backgroundColor};
"""


def test_a_stuck_worker_is_flagged_overdue(stack: Stack, browser: Browser) -> None:
    """Workers reporting what their handlers hold: one 3/8 busy within its limit, one whose
    oldest message is past its limit, one holding an abandoned handler. The page shows each
    in hand, the stuck ones OVERDUE in red on a tinted row; the stack's own idle worker w1
    shows its 8 slots free; the queue sums busy/slots."""
    admin = stack.redis.client()
    busy = hands(8, 3, oldest_age_ms=12_300, limit_ms=30_000)
    late = hands(8, 1, oldest_age_ms=45_000, limit_ms=30_000)
    with (
        reporting(admin, "default", "busy", **busy),
        reporting(admin, "default", "late", **late),
        reporting(admin, "default", "gave-up", **hands(4, abandoned=2)),
    ):
        browser.open()
        wait_for(lambda: browser.row("workers", name="gave-up", overdue="true"), 5,
                 "gave-up shown overdue", every_s=0.1)  # fmt: skip
        shown = {n: browser.cell("workers", "in hand", name=n) or "" for n in
                 ("busy", "late", "gave-up", "w1")}  # fmt: skip
        print(f"\n[dashboard] in hand: {shown}")
        assert re.fullmatch(r"busy 3/8, oldest 1[2-6]\.\d s \(limit 30\.0 s\)", shown["busy"])
        assert re.fullmatch(r"busy 1/8, oldest 4[5-9]\.\d s \(limit 30\.0 s\) · OVERDUE",
                            shown["late"]), shown  # fmt: skip
        assert shown["gave-up"] == "busy 0/4, 2 abandoned · OVERDUE"
        assert shown["w1"] == "busy 0/8"
        assert browser.row("workers", name="busy", overdue="false")
        assert browser.row("workers", name="late", overdue="true")
        look = browser.driver.execute_script(CELL_LOOK_JS, "late", "in hand")
        calm = browser.driver.execute_script(CELL_LOOK_JS, "busy", "in hand")
        assert look["cls"] == "bad" and calm["cls"] == ""
        assert look["background"] != calm["background"]
        assert browser.cell("queues", "busy", queue="default") == "4/28"
        assert browser.cell("queues", "busy", queue="jobs") == "0/8"  # w1 serves it too
        browser.screenshot("dashboard-stuck", "workers")
    browser.wait_cell("workers", "state", "stopped", 5, name="late")
    assert browser.cell("workers", "in hand", name="late") == "-"
    assert browser.console_errors() == []
    admin.close()


def test_the_schedules_and_the_priority_levels_show(stack: Stack, browser: Browser) -> None:
    """A worker w2 that fires an every-2-s schedule: its row shows when it fires, its next tick
    ahead and its last tick behind, both moving; a depth with priority levels shows each one."""
    plan = stack.workdir / "schedules.toml"
    plan.write_text("[beat]\nqueue = 'default'\nevery_s = 2\npayload = 'beat'\n")
    w2 = stack.start("worker", "w2", "--queue", "default", BUS_SCHEDULE_FILE=str(plan))
    try:
        browser.open()
        browser.wait_cell("schedules", "fires", "every 2 s", 10, queue="default", schedule="beat")
        first = browser.cell("schedules", "next tick", schedule="beat") or ""
        # ahead, or passed since the last mover pass wrote it (sent at the next one)
        assert re.fullmatch(r"in [0-9.]+ (ms|s)|due now", first), first
        wait_for(lambda: (browser.cell("schedules", "last tick", schedule="beat") or "")
                 .endswith(" ago"), 5, "a tick behind", every_s=0.1)  # fmt: skip
        wait_for(lambda: any(i.startswith("beat-") for d in (w2, stack.daemon("w1"))
                             for i in d.handled_ids()), 6, "a beat handled")  # fmt: skip
        assert browser.driver.execute_script("return nextTick(1000, 2500)") == "due now"
        assert browser.driver.execute_script("return nextTick(2500, 1000)") == "in 1.5 s"
        shown = browser.driver.execute_script(
            "return depth({depth: 3, priorities: {'0': 2, '9': 1}})"
        )
        assert shown == "3 (p9 1 · p0 2)"
        assert (
            browser.driver.execute_script("return depth({depth: 2, priorities: {'0': 2}})") == "2"
        )
        browser.screenshot("dashboard-schedules", "schedules")
        assert browser.console_errors() == []
    finally:
        w2.proc.stop()


def test_messages_waiting_for_others_show_per_queue(stack: Stack, browser: Browser) -> None:
    """Two messages that wait for one due in a minute: the queue's row says 2 waiting; the
    one they wait for cancelled, they end with it and the row says 0."""
    producer = Producer.from_settings(Settings(redis_url=stack.redis.url))
    first = producer.push("later", track=True, delay_s=60)
    producer.push("then", after=[first])
    producer.push("and then", after=[first])
    browser.open()
    browser.wait_cell("queues", "waiting", "2", 5, queue="default")
    producer.cancel(first.envelope.id)
    browser.wait_cell("queues", "waiting", "0", 5, queue="default")
    assert browser.console_errors() == []
    producer.close()


def test_the_whole_session_logged_no_console_error(browser: Browser) -> None:
    """Once more, a load and a few polls; then nothing SEVERE in all the browser logged."""
    browser.open()
    first = browser.text("status")
    wait_for(lambda: browser.text("status") != first, 5, "the next stats poll", every_s=0.1)
    wait_for(browser.chart_points, 10, "the chart drawn", every_s=0.1)
    browser.driver.execute_script("console.info('dashboard test: the console is read')")
    browser.console_errors()
    assert any("the console is read" in e["message"] for e in browser.console), browser.console
    assert [e for e in browser.console if e["level"] == "SEVERE"] == []
