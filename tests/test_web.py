"""The web producers against a real redis-server, through Flask's test client."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient

from loadtest.harness.ports import free_port
from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import Settings, decode, keys, new_envelope
from producer.observe.stats import Stats
from producer.store.deadletters import dead_entry
from producer.store.envelope import now_ms
from tests.conftest import quick_settings
from tests.proxies import ReplyDroppingProxy
from tests.webapp import MakeApp, assert_json, post_json
from web.bus import OVERVIEW_CACHE_S

PENDING = "bus:{default}:pending"
CHANNEL = "bus:ch:default"


def subscribe(server: RedisServer, pattern: str = "", channel: str = "") -> redis.client.PubSub:
    """A real subscriber on ``server``, returned once Redis has confirmed the subscription."""
    sub = server.client().pubsub()
    if pattern:
        sub.psubscribe(pattern)
    else:
        sub.subscribe(channel or CHANNEL)
    msg = sub.get_message(timeout=5)
    assert msg and msg["type"] in ("subscribe", "psubscribe"), msg
    return sub


def test_prodcons_post_lands_in_the_list(client: FlaskClient, r: redis.Redis) -> None:
    """POST /prodcons answers 202 with id, queue, depth, src and seq; the envelope is pending."""
    payloads = [{"n": 1, "s": "été"}, [1, 2], "text"]
    ids = []
    for i, payload in enumerate(payloads, start=1):
        code, body = post_json(client, "/prodcons", {"payload": payload})
        assert code == 202, body
        assert set(body) == {"id", "queue", "depth", "src", "seq"}
        assert body["queue"] == "default" and body["depth"] == i and body["seq"] == i
        ids.append(body["id"])
    assert r.llen(PENDING) == 3
    stored = [decode(raw) for raw in reversed(r.lrange(PENDING, 0, -1))]  # oldest first
    assert [e.id for e in stored] == ids
    assert [e.payload for e in stored] == payloads
    assert all(e.mode == "prodcons" and e.attempt == 1 for e in stored)
    assert {e.src for e in stored} == {body["src"]}


def test_pubsub_post_counts_receivers(client: FlaskClient, redis_server: RedisServer) -> None:
    """POST /pubsub: receivers 0 with nobody listening, 1 with a subscriber, which gets it."""
    code, body = post_json(client, "/pubsub", {"payload": "nobody"})
    assert code == 202 and set(body) == {"id", "channel", "receivers", "src", "seq"}
    assert body["channel"] == "default" and body["receivers"] == 0 and body["seq"] == 1
    sub = subscribe(redis_server)
    try:
        code, body = post_json(client, "/pubsub", {"payload": {"k": "v"}, "channel": "default"})
        assert code == 202 and body["receivers"] == 1
        msg = sub.get_message(timeout=5)
        assert msg and msg["channel"] == CHANNEL.encode()
        env = decode(msg["data"])
        assert env.id == body["id"] and env.payload == {"k": "v"} and env.mode == "pubsub"
        assert (env.src, env.seq) == (body["src"], body["seq"]) and env.seq == 2
    finally:
        sub.close()


@pytest.mark.parametrize(
    ("url", "data", "code"),
    [
        ("/prodcons", "{not json", 400),
        ("/prodcons", "[1, 2]", 400),
        ("/pubsub", '"just a string"', 400),
        ("/prodcons", '{"queue": "default"}', 400),
        ("/prodcons", '{"payload": 1, "extra": 2}', 400),
        ("/pubsub", '{"payload": 1, "queue": "default"}', 400),
        ("/prodcons", '{"payload": 1, "queue": 7}', 400),
        ("/prodcons", '{"payload": NaN}', 400),
        ("/pubsub", '{"payload": 1e999}', 400),
        ("/prodcons", '{"payload": "\\ud800"}', 400),
        ("/prodcons", "[" * 5000 + "]" * 5000, 400),
    ],
)
def test_bad_bodies_are_json_errors(
    client: FlaskClient, r: redis.Redis, url: str, data: str, code: int
) -> None:
    """Malformed, non-object, incomplete, over-specified or non-strict JSON: 400, JSON body."""
    resp = client.post(url, data=data, content_type="application/json")
    assert resp.status_code == code
    assert "error" in assert_json(resp)
    assert r.llen(PENDING) == 0


JSON = "application/json"
HUGE = "9" * 400  # an integer past any float (float() of it raises OverflowError)


@pytest.mark.parametrize("field", ["delay_s", "not_before"])
@pytest.mark.parametrize("sign", ["", "-"])
def test_a_delay_of_400_digits_is_400_naming_the_field(
    client: FlaskClient, r: redis.Redis, field: str, sign: str
) -> None:
    """An integer too large for a float is out of range: 400 JSON naming the field (it was a
    500, OverflowError); nothing pushed or scheduled."""
    data = f'{{"payload": 1, "{field}": {sign}{HUGE}}}'
    resp = client.post("/prodcons", data=data, content_type=JSON)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert f"'{field}' must be" in assert_json(resp)["error"]
    assert r.llen(PENDING) == 0 and r.zcard(keys.delayed("default")) == 0


def test_a_time_limit_rides_in_the_envelope(client: FlaskClient, r: redis.Redis) -> None:
    """A "timeout_s" on /prodcons: 202, and the envelope carries it, pushed now, delayed or
    tracked; null is as if absent (the worker's BUS_HANDLER_TIMEOUT_S)."""
    for body in ({"timeout_s": 90}, {"timeout_s": 0.25, "track": True},
                 {"timeout_s": 604800}, {"timeout_s": None}):  # fmt: skip
        code, answer = post_json(client, "/prodcons", {"payload": 1, **body})
        assert code == 202, answer
    code, answer = post_json(client, "/prodcons", {"payload": 2, "delay_s": 60, "timeout_s": 5})
    assert code == 202 and answer["scheduled"] == 1, answer
    pending = [decode(raw) for raw in r.lrange(PENDING, 0, -1)][::-1]
    assert [e.timeout_s for e in pending] == [90.0, 0.25, 604800.0, None]
    assert b"timeout_s" not in r.lindex(PENDING, 0)
    (delayed,) = r.zrange(keys.delayed("default"), 0, -1)
    assert decode(delayed).timeout_s == 5.0


BAD_TIMEOUTS = ["0", "-1", "-0.5", '"30"', "true", "false", HUGE, "-" + HUGE, "1e999", "604801",
                "604800.5", "[30]", "{}"]  # fmt: skip


@pytest.mark.parametrize("value", BAD_TIMEOUTS)
def test_a_bad_time_limit_is_400_naming_the_field(
    client: FlaskClient, r: redis.Redis, value: str
) -> None:
    """0, negative, a string, a bool, 400 digits, 1e999 (infinity to Python's parser), past
    7 days: 400 JSON naming 'timeout_s' and its range; nothing pushed or scheduled."""
    for extra in ("", ', "delay_s": 10', ', "track": true'):
        data = f'{{"payload": 1, "timeout_s": {value}{extra}}}'
        resp = client.post("/prodcons", data=data, content_type=JSON)
        assert resp.status_code == 400, resp.get_data(as_text=True)
        error = assert_json(resp)["error"]
        assert "'timeout_s' must be a number of seconds" in error and "604800" in error, error
    # Nothing pushed, scheduled or recorded (the app's own stats, written every 0.1 s, aside).
    assert [k for k in r.scan_iter() if not k.startswith(keys.STATS.encode())] == []


@pytest.mark.parametrize("value", ["30", "null", "0"])
def test_pubsub_refuses_a_time_limit(
    client: FlaskClient, redis_server: RedisServer, r: redis.Redis, value: str
) -> None:
    """A subscriber has no time limit: /pubsub answers 400 JSON saying time limits are for
    queue messages, and publishes nothing."""
    sub = subscribe(redis_server)
    try:
        data = f'{{"payload": 1, "timeout_s": {value}}}'
        resp = client.post("/pubsub", data=data, content_type=JSON)
        assert resp.status_code == 400, resp.get_data(as_text=True)
        error = assert_json(resp)["error"]
        assert "'timeout_s'" in error and "queue messages only" in error, error
        assert sub.get_message(timeout=0.3) is None  # nothing published
    finally:
        sub.close()


def test_the_other_numbers_of_400_digits(client: FlaskClient, r: redis.Redis) -> None:
    """The requeue's count is "at most n": 400 digits requeue every dead letter. The dead
    list's start and count, 400 or 5,000 digits: 400 JSON naming the argument and its range."""
    for i in range(3):
        raw = new_envelope({"dead": i}, src="t", seq=i + 1).encode()
        r.lpush(keys.dead("default"), dead_entry(raw, "test", queue="default"))
    data = f'{{"count": {HUGE}}}'
    resp = client.post("/api/queues/default/dead/requeue", data=data, content_type=JSON)
    assert resp.status_code == 200 and assert_json(resp)["requeued"] == 3
    for arg in ("start", "count"):
        for digits in (HUGE, "9" * 5000):
            resp = client.get(f"/api/queues/default/dead?{arg}={digits}")
            error = assert_json(resp)["error"]
            assert resp.status_code == 400 and f"'{arg}' must be" in error and "between" in error


LIMIT_DIGITS = sys.get_int_max_str_digits()  # 4300 unless PYTHONINTMAXSTRDIGITS says otherwise


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/prodcons", '{"payload": {"n": %s}}'),
        ("/pubsub", '{"payload": [%s]}'),
        ("/prodcons", '{"payload": 1, "delay_s": %s}'),
        ("/api/queues/default/dead/requeue", '{"count": %s}'),
    ],
    ids=["prodcons", "pubsub", "delay_s", "requeue"],
)
def test_an_integer_past_the_digits_limit_is_400_naming_the_limit(
    client: FlaskClient, r: redis.Redis, url: str, body: str
) -> None:
    """Valid JSON holding an integer of more digits than Python parses (int_max_str_digits):
    400 JSON that says so and names the limit, not "not valid JSON"; nothing sent."""
    resp = client.post(url, data=body % ("9" * 5000), content_type=JSON)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    error = assert_json(resp)["error"]
    assert f"at most {LIMIT_DIGITS} digits" in error and "int_max_str_digits" in error, error
    assert "not valid JSON" not in error
    assert r.llen(PENDING) == 0 and r.zcard(keys.delayed("default")) == 0


def test_an_integer_of_the_digits_limit_passes_through_exactly(
    client: FlaskClient, r: redis.Redis
) -> None:
    """An integer of exactly the limit's digits is carried exactly and decodes as it was sent
    (producer.decode: what a worker reads); one more digit in a form field is refused, not
    sent as a string."""
    number = int("7" * LIMIT_DIGITS)
    data = f'{{"payload": [{number}, -{number}]}}'
    resp = client.post("/prodcons", data=data, content_type=JSON)
    assert resp.status_code == 202, resp.get_data(as_text=True)
    assert decode(r.lindex(PENDING, 0)).payload == [number, -number]
    resp = client.post("/prodcons", data={"payload": "7" * (LIMIT_DIGITS + 1)})
    assert resp.status_code == 400 and "int_max_str_digits" in assert_json(resp)["error"]
    assert r.llen(PENDING) == 1


def test_body_over_the_limit_is_413(make_app: MakeApp, settings: Settings, r: redis.Redis) -> None:
    """A body past max_payload_bytes is refused with 413 JSON, a smaller one is accepted."""
    c = make_app(settings.replace(max_payload_bytes=1024)).test_client()
    resp = c.post("/prodcons", json={"payload": "x" * 2000})
    assert resp.status_code == 413 and "error" in assert_json(resp)
    assert r.llen(PENDING) == 0
    assert c.post("/prodcons", json={"payload": "x" * 900}).status_code == 202


def test_unknown_destination_is_404_and_creates_nothing(
    client: FlaskClient, r: redis.Redis, redis_server: RedisServer
) -> None:
    """A queue or channel outside the allow-list: 404 JSON, no key, nothing published."""
    watcher = subscribe(redis_server, pattern="bus:ch:*")
    try:
        code, body = post_json(client, "/prodcons", {"payload": 1, "queue": "nope"})
        assert code == 404 and "error" in body and body["allowed"] == ["default"]
        code, body = post_json(client, "/pubsub", {"payload": 1, "channel": "nope"})
        assert code == 404 and "error" in body
        assert watcher.get_message(timeout=0.5) is None
    finally:
        watcher.close()
    assert [k for k in r.keys("*") if b"nope" in k] == []
    assert not r.exists("bus:{nope}:pending")


def test_unknown_url_and_wrong_method(client: FlaskClient) -> None:
    """Unknown URL: 404 JSON; wrong method: 405 JSON with an Allow header; never HTML."""
    resp = client.get("/no/such/page")
    assert resp.status_code == 404 and "error" in assert_json(resp)
    resp = client.delete("/prodcons")
    assert resp.status_code == 405 and "error" in assert_json(resp)
    assert "POST" in resp.headers["Allow"]
    resp = client.put("/api/stats")
    assert resp.status_code == 405 and "error" in assert_json(resp)


def test_redis_unreachable_is_503(make_app: MakeApp, settings: Settings) -> None:
    """Nothing listening: POSTs and GETs 503 JSON with Retry-After; readyz 503, healthz 200."""
    c = make_app(settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0")).test_client()
    for resp in (
        c.post("/prodcons", json={"payload": 1}),
        c.post("/pubsub", json={"payload": 1}),
        c.get("/prodcons"),
        c.get("/api/stats"),
    ):
        assert resp.status_code == 503
        assert int(resp.headers["Retry-After"]) >= 1
        body = assert_json(resp)
        assert "error" in body and body["outcome"] == "rejected"  # nothing sent: safe to retry
    resp = c.get("/readyz")
    assert resp.status_code == 503 and "Retry-After" in resp.headers
    assert assert_json(resp)["status"] == "unavailable"
    resp = c.get("/healthz")
    assert resp.status_code == 200 and assert_json(resp)["status"] == "ok"


def test_a_lost_reply_is_503_with_an_unknown_outcome(
    make_app: MakeApp, settings: Settings, redis_server: RedisServer
) -> None:
    """Redis ran the PUBLISH but its reply never came back: 503 saying the outcome is unknown
    (a retry could deliver twice), the message was published once, and the next answer uses
    the next sequence number (the lost one's stays used)."""
    proxy = ReplyDroppingProxy(redis_server.port)
    sub = subscribe(redis_server)
    try:
        quiet = settings.replace(redis_url=proxy.url, stats_interval_s=60.0, stats_ttl_s=120.0)
        c = make_app(quiet).test_client()
        code, first = post_json(c, "/pubsub", {"payload": 1})
        assert code == 202 and first["receivers"] == 1
        # The stats thread's first write (its only one for a minute) must not be the reply
        # the proxy drops.
        wait_for(lambda: redis_server.client().zcard(keys.STATS_INDEX), 5, "the first stats write")
        proxy.armed.set()
        resp = c.post("/pubsub", json={"payload": 2})
        proxy.armed.clear()
        assert resp.status_code == 503 and int(resp.headers["Retry-After"]) >= 1
        body = assert_json(resp)
        assert body["outcome"] == "unknown" and "may or may not" in body["error"]
        code, third = post_json(c, "/pubsub", {"payload": 3})
        assert code == 202 and third["seq"] == first["seq"] + 2
        got = [decode(m["data"]).payload for m in iter(lambda: sub.get_message(timeout=2), None)
               if m["type"] == "message"]  # fmt: skip
        assert got == [1, 2, 3]  # the unknown one ran, once
    finally:
        sub.close()
        proxy.close()


@pytest.mark.parametrize("max_queue_depth", [0, 1000], ids=["no-limit", "depth-limit"])
def test_redis_out_of_memory_is_503_and_nothing_lost(
    make_app: MakeApp, settings: Settings, tmp_path: Path, max_queue_depth: int
) -> None:
    """Redis over maxmemory (noeviction): 503 with Retry-After; the list keeps what it had.
    The same with a depth limit, where the push is a script."""
    server = RedisServer(tmp_path / "oom", "--maxmemory", "1mb", "--maxmemory-policy", "noeviction")
    server.start()
    admin = server.client()
    if max_queue_depth:
        settings = settings.replace(max_queue_depth=max_queue_depth)
    try:
        c = make_app(settings.replace(redis_url=server.url)).test_client()
        admin.config_set("maxmemory", 0)  # lift the limit: one message and a big value in
        assert c.post("/prodcons", json={"payload": "before"}).status_code == 202
        admin.set("filler", b"x" * (2 * 1024 * 1024))
        admin.config_set("maxmemory", "1mb")
        assert admin.info("memory")["used_memory"] > 1024 * 1024
        for _ in range(3):
            resp = c.post("/prodcons", json={"payload": "after"})
            assert resp.status_code == 503, resp.get_data(as_text=True)
            assert int(resp.headers["Retry-After"]) >= 1
            body = assert_json(resp)
            assert "memory" in body["error"] and body["outcome"] == "rejected"
        assert admin.llen(PENDING) == 1
        assert decode(admin.lindex(PENDING, 0)).payload == "before"
        assert c.get("/readyz").status_code == 200  # reads still work
    finally:
        admin.close()
        server.kill()


def test_get_endpoints_send_and_redirect(
    client: FlaskClient, r: redis.Redis, redis_server: RedisServer
) -> None:
    """GET /prodcons pushes and GET /pubsub publishes, each answering 303 to /."""
    resp = client.get("/prodcons")
    assert resp.status_code == 303 and resp.headers["Location"] == "/"
    assert r.llen(PENDING) == 1 and isinstance(decode(r.lindex(PENDING, 0)).payload, int)
    sub = subscribe(redis_server)
    try:
        resp = client.get("/pubsub")
        assert resp.status_code == 303 and resp.headers["Location"] == "/"
        msg = sub.get_message(timeout=5)
        assert msg and decode(msg["data"]).mode == "pubsub"
    finally:
        sub.close()


def test_form_post_redirects_and_pushes(client: FlaskClient, r: redis.Redis) -> None:
    """A urlencoded form POST (no JavaScript) answers 303 and the message is in the list."""
    resp = client.post("/prodcons", data={"payload": "hello"})
    assert resp.status_code == 303 and resp.headers["Location"] == "/"
    resp = client.post("/prodcons", data={"payload": '{"a": 1}', "queue": "default"})
    assert resp.status_code == 303
    payloads = [decode(raw).payload for raw in reversed(r.lrange(PENDING, 0, -1))]
    assert payloads == ["hello", {"a": 1}]
    resp = client.post("/prodcons", data={"payload": "x", "queue": "nope"})
    assert resp.status_code == 404 and "error" in assert_json(resp)


def test_index_and_stats(client: FlaskClient, r: redis.Redis) -> None:
    """GET / is HTML with both forms; /api/stats is JSON whose queue depth matches LLEN."""
    resp = client.get("/")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    html = resp.get_data(as_text=True)
    assert 'action="/prodcons"' in html and 'action="/pubsub"' in html
    assert html.count("<form") == 2 and "<option>default</option>" in html
    for _ in range(4):
        assert client.post("/prodcons", json={"payload": 1}).status_code == 202
    stats = assert_json(client.get("/api/stats"))
    for key in ("queues", "channels", "processes", "totals", "latency_ms"):
        assert key in stats
    assert stats["queues"]["default"]["depth"] == r.llen(PENDING) == 4
    assert stats["channels"]["default"]["subscribers"] == 0


def write_calls(admin: redis.Redis) -> dict[str, int]:
    """Calls so far of every command that may change data (flag write or may_replicate)."""
    stats = admin.info("commandstats")
    names = [k.removeprefix("cmdstat_") for k in stats]
    flags = admin.execute_command("COMMAND", "INFO", *names)
    writes = {n for n, info in flags.items() if {"write", "may_replicate"} & set(info["flags"])}
    return {n: stats[f"cmdstat_{n}"]["calls"] for n in names if n in writes}


def test_reading_the_stats_writes_nothing(make_app: MakeApp, tmp_path: Path) -> None:
    """GET /api/stats only reads: write counters stay put across several uncached reads. An
    index entry past the stats TTL is not shown; the writers' own flush prunes it."""
    server = RedisServer(tmp_path / "reads").start()
    admin = server.client()
    try:
        # A quiet stats thread: its first write, then none for a minute.
        quiet = quick_settings(server.url, stats_interval_s=60.0, stats_ttl_s=120.0)
        app = make_app(quiet)
        c = app.test_client()
        assert c.get("/api/stats").status_code == 200
        own = app.extensions["bus"].get_stats().key
        wait_for(lambda: admin.zscore(keys.STATS_INDEX, own), 5, "the first stats write")
        ghost = "bus:{stats}:web:ghost"
        admin.hset(ghost, mapping={"role": "web", "id": "ghost", "updated_ms": 1})
        admin.zadd(keys.STATS_INDEX, {ghost: now_ms() - 121_000})  # past the 120 s TTL
        before = write_calls(admin)
        for _ in range(3):
            time.sleep(OVERVIEW_CACHE_S + 0.05)  # past the cache: each one reads Redis
            stats = assert_json(c.get("/api/stats"))
            assert [p["id"] for p in stats["processes"]] == [own.rsplit(":", 1)[1]]
        assert write_calls(admin) == before
        assert admin.zscore(keys.STATS_INDEX, ghost) is not None  # the reads left it
        pipe = admin.pipeline(transaction=False)
        Stats("worker", "w1").flush(pipe, quiet.stats_ttl_s)
        pipe.execute()
        assert admin.zscore(keys.STATS_INDEX, ghost) is None  # a writer pruned it
        assert admin.zscore(keys.STATS_INDEX, "bus:{stats}:worker:w1") is not None
    finally:
        server.kill()


def test_idle_timeout_is_invisible(make_app: MakeApp, settings: Settings, r: redis.Redis) -> None:
    """Redis closing the idle pooled connection (timeout 1) never shows up as a 5xx."""
    # A slow stats thread, so nothing but the requests uses the pool and it really goes idle.
    c = make_app(settings.replace(stats_interval_s=60.0)).test_client()
    r.config_set("timeout", 1)
    try:
        assert c.post("/prodcons", json={"payload": 1}).status_code == 202
        time.sleep(2.5)
        names = [cl["name"] for cl in r.client_list()]
        assert not any(n.startswith("bus:producer:") for n in names), names  # really closed
        resp = c.post("/prodcons", json={"payload": 2})
        assert resp.status_code == 202, resp.get_data(as_text=True)
        assert assert_json(resp)["depth"] == 2
    finally:
        r.config_set("timeout", 0)
    assert r.llen(PENDING) == 2


def test_factory_reads_the_environment(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer, r: redis.Redis
) -> None:
    """create_app() without arguments takes BUS_REDIS_URL and BUS_QUEUES from the env."""
    for name in [k for k in os.environ if k.startswith("BUS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BUS_REDIS_URL", redis_server.url)
    monkeypatch.setenv("BUS_QUEUES", "a,b")
    app = make_app(None)
    assert app.extensions["bus"].settings.queues == ("a", "b")
    c = app.test_client()
    code, body = post_json(c, "/prodcons", {"payload": 1})
    assert code == 202 and body["queue"] == "a"
    code, body = post_json(c, "/prodcons", {"payload": 2, "queue": "b"})
    assert code == 202 and body["queue"] == "b"
    code, _ = post_json(c, "/prodcons", {"payload": 3, "queue": "default"})
    assert code == 404
    assert r.llen("bus:{a}:pending") == 1 and r.llen("bus:{b}:pending") == 1
    assert r.llen(PENDING) == 0
