"""HTTP edge cases: a body's framing, Redis refusals that are not about load, the outcome of a
requeue whose reply was lost."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from loadtest.harness.ports import free_port
from loadtest.harness.server import RedisServer, redis_binary
from loadtest.harness.waits import wait_for
from producer import Settings, decode, keys
from producer.store.deadletters import dead_entry
from producer.store.envelope import new
from tests.conftest import quick_settings
from tests.procs import get_json
from tests.proxies import ScriptReplyHolder
from tests.webapp import MakeApp, assert_json, post_json, start_gunicorn

PENDING = keys.pending("default")
LIMIT = 65536  # BUS_MAX_PAYLOAD_BYTES's default, which the gunicorn below runs with


# A body over the limit is 413 however it is framed (gunicorn, as in production).


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, redis.Redis]]:
    """gunicorn with web/gunicorn.conf.py and the default body limit, on a Redis of its own:
    (host:port, an admin client)."""
    if redis_binary() is None:
        pytest.fail("redis-server is not installed: `make bootstrap` installs it")
    tmp = tmp_path_factory.mktemp("edges")
    server = RedisServer(tmp / "redis").start()
    gunicorn, base = start_gunicorn(server.url, tmp / "gunicorn.log", BUS_WEB_WORKERS="2")
    try:
        yield base.removeprefix("http://"), server.client()
    finally:
        gunicorn.stop()
        server.kill()


def post_raw(hostport: str, body: bytes, chunked: bool, chunk_size: int = 8192) -> tuple[int, dict]:
    """POST /prodcons with http.client, the body chunked or with a Content-Length."""
    conn = http.client.HTTPConnection(hostport, timeout=10)
    headers = {"Content-Type": "application/json"}
    try:
        if chunked:
            chunks = (body[i : i + chunk_size] for i in range(0, len(body), chunk_size))
            headers["Transfer-Encoding"] = "chunked"
            conn.request("POST", "/prodcons", body=chunks, headers=headers, encode_chunked=True)
        else:
            conn.request("POST", "/prodcons", body=body, headers=headers)
        resp = conn.getresponse()
        assert resp.getheader("Content-Type") == "application/json", resp.read()[:200]
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def body_of(size: int, padding: str = "string") -> bytes:
    """A JSON body of exactly ``size`` bytes: a long string payload, or a short payload followed
    by spaces (still valid JSON when cut anywhere past the object)."""
    if padding == "spaces":
        head = b'{"payload": "fits"}'
        return head + b" " * (size - len(head))
    head = b'{"payload": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


@pytest.mark.slow
def test_a_chunked_body_over_the_limit_is_413(web: tuple[str, redis.Redis]) -> None:
    """100 KB chunked is refused like 100 KB with a Content-Length: 413 JSON, nothing pushed.
    Cut at the limit, the spaces-padded one is still valid JSON: it must not be accepted."""
    hostport, admin = web
    admin.delete(PENDING)
    for padding in ("spaces", "string"):
        body = body_of(100_000, padding)
        for chunked in (True, False):
            code, answer = post_raw(hostport, body, chunked)
            assert code == 413, (padding, chunked, answer)
            assert "error" in answer and answer["status"] == 413
    assert admin.llen(PENDING) == 0


@pytest.mark.slow
def test_a_chunked_body_up_to_the_limit_is_accepted(web: tuple[str, redis.Redis]) -> None:
    """Chunked bodies are read whole: a small one in many chunks and one of exactly the limit
    are accepted intact; one byte more is 413."""
    hostport, admin = web
    admin.delete(PENDING)
    small = json.dumps({"payload": {"text": "été", "n": list(range(50))}}).encode()
    code, answer = post_raw(hostport, small, chunked=True, chunk_size=7)
    assert code == 202, answer
    code, answer = post_raw(hostport, body_of(LIMIT), chunked=True)
    assert code == 202, answer
    code, answer = post_raw(hostport, body_of(LIMIT + 1), chunked=True)
    assert code == 413, answer
    stored = [decode(raw).payload for raw in reversed(admin.lrange(PENDING, 0, -1))]
    assert stored == [json.loads(small)["payload"], json.loads(body_of(LIMIT))["payload"]]


@pytest.mark.slow
def test_a_time_limit_under_gunicorn(web: tuple[str, redis.Redis]) -> None:
    """A "timeout_s" served by gunicorn, with a Content-Length and chunked: a good one is
    pushed in the envelope; 0, 1e999, 400 digits, a string, true or past 7 days is 400 JSON
    naming the field, and nothing is pushed."""
    hostport, admin = web
    admin.delete(PENDING)
    for chunked in (False, True):
        code, answer = post_raw(hostport, b'{"payload": 1, "timeout_s": 12.5}', chunked)
        assert code == 202, answer
        for bad in (b"0", b"1e999", b"9" * 400, b'"12"', b"true", b"604801"):
            body = b'{"payload": 1, "timeout_s": ' + bad + b"}"
            code, answer = post_raw(hostport, body, chunked)
            assert code == 400 and "'timeout_s' must be" in answer["error"], (bad, answer)
    assert [decode(raw).timeout_s for raw in admin.lrange(PENDING, 0, -1)] == [12.5, 12.5]


# A body that ends before its Content-Length (or its last chunk): 400 JSON, nothing sent.

REQUEUE = "/api/queues/default/dead/requeue"
DEAD = keys.dead("default")
CUT = b'{"payload": 1}     '  # 19 bytes, valid JSON: taken for the whole body, it would send


def send_raw(hostport: str, path: str, framing: str, body: bytes, close: str) -> bytes:
    """POST ``path`` over a raw socket: the headers with ``framing`` (a Content-Length or a
    Transfer-Encoding header), then ``body`` as is; then half-close and read the answer
    (``close`` "half"), or close at once ("full": no answer can arrive, b"")."""
    host, port = hostport.split(":")
    head = f"POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"{head}{framing}\r\n\r\n".encode() + body)
        if close == "full":
            return b""
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while data := s.recv(65536):
            answer += data
    return answer


def chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked body."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def parse_answer(raw: bytes) -> tuple[int, dict]:
    """(status, JSON body) of a raw HTTP/1.1 answer, which must be JSON."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    assert headers.get("content-type") == "application/json", raw[:300]
    return int(status_line.split()[1]), json.loads(body)


def rejected(hostport: str) -> int:
    """How many requests the web processes refused with a 4xx, bus-wide (/api/stats)."""
    stats = get_json(f"http://{hostport}/api/stats")
    assert stats is not None
    return int(stats["totals"].get("web", {}).get("rejected", 0))


@pytest.fixture
def watched(web: tuple[str, redis.Redis]) -> Iterator[tuple[str, redis.Redis, Any]]:
    """The gunicorn above, its queue emptied, 3 dead letters, and a subscriber of the default
    channel: (host:port, an admin client, the subscriber)."""
    hostport, admin = web
    admin.delete(PENDING, DEAD)
    fill_dead(admin, 3)
    sub = admin.pubsub()
    sub.subscribe("bus:ch:default")
    assert sub.get_message(timeout=5)["type"] == "subscribe"
    try:
        yield hostport, admin, sub
    finally:
        sub.close()


def sent(admin: redis.Redis, sub: Any) -> tuple[int, int, int]:
    """(messages pending, published, requeued) since the fixture set up."""
    published = 0
    while sub.get_message(timeout=0.2) is not None:
        published += 1
    return admin.llen(PENDING), published, 3 - admin.llen(DEAD)


LENGTH_30 = "Content-Length: 30"
CHUNKED = "Transfer-Encoding: chunked"


@pytest.mark.parametrize("close", ["half", "full"])
@pytest.mark.parametrize(
    ("path", "framing", "cut", "whole"),
    [
        ("/prodcons", LENGTH_30, CUT, CUT.ljust(30)),
        ("/pubsub", LENGTH_30, CUT, CUT.ljust(30)),
        (REQUEUE, LENGTH_30, b'{"count": 1}', b'{"count": 1}'.ljust(30)),
        # Taken for an empty body, it would requeue every dead letter.
        (REQUEUE, LENGTH_30, b"", b"".ljust(30)),
        ("/prodcons", CHUNKED, chunk(CUT), chunk(CUT) + b"0\r\n\r\n"),  # no last chunk
    ],
    ids=["prodcons", "pubsub", "requeue-count", "requeue-empty", "prodcons-chunked"],
)
def test_a_body_cut_short_is_400_and_sends_nothing(
    watched: tuple[str, redis.Redis, Any],
    path: str,
    framing: str,
    cut: bytes,
    whole: bytes,
    close: str,
) -> None:
    """The client sends 19 of the 30 bytes it announced (or a chunked body without its last
    chunk), then half-closes (it can still read: 400 JSON saying so) or closes: nothing is
    pushed, published or requeued. The body sent whole is accepted (the check sees a send)."""
    hostport, admin, sub = watched
    before = rejected(hostport)
    answer = send_raw(hostport, path, framing, cut, close)
    if close == "half":
        status, error = parse_answer(answer)
        assert status == 400 and error["status"] == 400, error
        assert "nothing was sent" in error["error"], error
        if framing == LENGTH_30:
            assert f"after {len(cut)} of the 30 bytes" in error["error"], error
    # Refused, not merely slow: the web counted the refusal.
    wait_for(lambda: rejected(hostport) > before, 10, "the web to count the refusal")
    assert sent(admin, sub) == (0, 0, 0)
    status, _ = parse_answer(send_raw(hostport, path, framing, whole, "half"))
    assert status in (200, 202)
    assert sent(admin, sub) != (0, 0, 0)


# A path with "//" is no route: 404 JSON, never a redirect (with an HTML body) to follow.


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api//queues/default/dead/requeue", b""),
        ("POST", "//prodcons", b'{"payload": 1}'),
        ("GET", "/api//stats", b""),
        ("GET", "//healthz", b""),
    ],
)
def test_a_path_with_a_double_slash_is_404_json(
    web: tuple[str, redis.Redis], method: str, path: str, body: bytes
) -> None:
    """Werkzeug answered a "//" inside a path with a 308 and an HTML page (a client following
    it would requeue), and served a leading "//" as "/" (it pushed). Now 404 JSON, no
    Location, and nothing sent."""
    hostport, admin = web
    admin.delete(PENDING, DEAD)
    fill_dead(admin, 3)
    conn = http.client.HTTPConnection(hostport, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status == 404, (resp.status, data[:300])
        assert resp.getheader("Content-Type") == "application/json", data[:300]
        assert resp.getheader("Location") is None
        assert json.loads(data)["status"] == 404
    finally:
        conn.close()
    assert admin.llen(PENDING) == 0 and admin.llen(DEAD) == 3


# Redis refusals: 503 only when a retry can succeed.


@pytest.mark.parametrize("max_queue_depth", [0, 5], ids=["no-limit", "depth-limit"])
def test_a_permanent_redis_refusal_is_500_not_503(
    make_app: MakeApp,
    settings: Settings,
    r: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    max_queue_depth: int,
) -> None:
    """The queue's key holds a string (WRONGTYPE): a retry would be refused again, so 500 JSON
    saying what Redis refused, no Retry-After, logged; not counted as unavailable."""
    app = make_app(
        settings.replace(max_queue_depth=max_queue_depth) if max_queue_depth else settings
    )
    c = app.test_client()
    r.set(PENDING, "not a list")
    with caplog.at_level(logging.ERROR, logger="web.errors"):
        for resp in (c.post("/prodcons", json={"payload": 1}), c.get("/prodcons")):
            assert resp.status_code == 500, resp.get_data(as_text=True)
            assert "Retry-After" not in resp.headers
            body = assert_json(resp)
            assert body["status"] == 500 and "WRONGTYPE" in body["error"]
    assert [rec for rec in caplog.records if "WRONGTYPE" in rec.getMessage()]
    assert app.extensions["bus"].get_stats().get("unavailable") == 0
    assert r.get(PENDING) == b"not a list"


def test_redis_busy_with_a_script_is_503(make_app: MakeApp, tmp_path: Path) -> None:
    """A script running past busy-reply-threshold makes Redis answer BUSY: that passes, so 503
    with Retry-After, outcome "rejected"; nothing is pushed."""
    server = RedisServer(tmp_path / "busy", "--lua-time-limit", "50").start()
    admin = server.client()
    blocker = server.client(socket_timeout=None)
    c = make_app(quick_settings(server.url)).test_client()
    errors: list[Exception] = []

    def spin() -> None:
        try:
            blocker.eval("while true do end", 0)
        except redis.RedisError as exc:  # SCRIPT KILL below
            errors.append(exc)

    def busy() -> bool:
        try:
            admin.ping()
        except redis.ResponseError as exc:
            return str(exc).startswith("BUSY")
        return False

    thread = threading.Thread(target=spin, daemon=True)
    try:
        assert c.post("/prodcons", json={"payload": "before"}).status_code == 202
        thread.start()
        wait_for(busy, 5, "Redis to answer BUSY")
        resp = c.post("/prodcons", json={"payload": "while busy"})
        assert resp.status_code == 503, resp.get_data(as_text=True)
        assert int(resp.headers["Retry-After"]) >= 1
        body = assert_json(resp)
        assert body["outcome"] == "rejected" and "busy" in body["error"]
        admin.script_kill()
        thread.join(5)
        assert errors and "killed" in str(errors[0]).lower()
        assert [decode(raw).payload for raw in admin.lrange(PENDING, 0, -1)] == ["before"]
    finally:
        with contextlib.suppress(redis.RedisError):
            admin.script_kill()
        thread.join(5)
        server.kill()


def test_redis_loading_its_data_is_503_rejected(make_app: MakeApp, tmp_path: Path) -> None:
    """Redis restarted and still loading its data answers LOADING to the push itself: a reply,
    so the outcome is "rejected" (nothing ran), not "unknown"; 503 with Retry-After."""
    workdir = tmp_path / "loading"
    server = RedisServer(workdir).start()
    admin = server.client()
    pipe = admin.pipeline(transaction=False)
    for i in range(1000):
        pipe.set(f"filler:{i}", "v" * 100)
    pipe.execute()
    admin.save()
    server.stop()
    binary = redis_binary()
    assert binary
    port = free_port()
    # key-load-delay (µs per key) makes the load last ~2 s; events are served meanwhile.
    loading = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
         "--logfile", "redis.log", "--key-load-delay", "2000",
         "--loading-process-events-interval-bytes", "1024"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"redis://127.0.0.1:{port}/0"
        probe = redis.Redis(port=port, protocol=2, socket_timeout=5, retry=Retry(NoBackoff(), 0))

        def is_loading() -> bool:
            try:
                probe.ping()
            except redis.BusyLoadingError:
                return True
            except redis.ConnectionError:
                pass  # not listening yet
            return False

        wait_for(is_loading, 10, "Redis to answer LOADING")
        c = make_app(quick_settings(url, stats_interval_s=60.0)).test_client()
        resp = c.post("/prodcons", json={"payload": "while loading"})
        assert probe.info("persistence")["loading"] == 1, "the load ended too early to tell"
        assert resp.status_code == 503, resp.get_data(as_text=True)
        assert int(resp.headers["Retry-After"]) >= 1
        body = assert_json(resp)
        assert body["outcome"] == "rejected" and "loading" in body["error"], body
        wait_for(lambda: not is_loading(), 20, "the load to end")
        assert probe.llen(PENDING) == 0
        code, answer = post_json(c, "/prodcons", {"payload": "after"})
        assert code == 202 and answer["depth"] == 1
    finally:
        loading.kill()
        loading.wait(10)


# The outcome of a requeue: "unknown" once a move was sent without a reply.


def fill_dead(admin: redis.Redis, n: int) -> None:
    """``n`` dead letters of queue default, each a valid envelope."""
    for i in range(n):
        raw = new({"dead": i}, src="t", seq=i + 1, mode="prodcons").encode()
        admin.lpush(keys.dead("default"), dead_entry(raw, "test", queue="default"))


def test_a_requeue_whose_reply_is_lost_is_503_unknown(
    make_app: MakeApp, settings: Settings, r: redis.Redis, redis_server: RedisServer
) -> None:
    """The requeue script reached Redis and ran, but its reply never came back: 503 with
    outcome "unknown" (it may have run, and it did), not "rejected"."""
    fill_dead(r, 20)
    proxy = ScriptReplyHolder(redis_server.port)
    try:
        c = make_app(settings.replace(redis_url=proxy.url, socket_timeout_s=0.5)).test_client()
        resp = c.post("/api/queues/default/dead/requeue")
        assert resp.status_code == 503, resp.get_data(as_text=True)
        assert int(resp.headers["Retry-After"]) >= 1
        body = assert_json(resp)
        assert body["outcome"] == "unknown" and "may or may not" in body["error"], body
        assert proxy.held >= 1
    finally:
        proxy.close()
    moved = r.llen(PENDING)
    assert moved >= 1 and moved + r.llen(keys.dead("default")) == 20  # it had run


def test_a_requeue_refused_before_any_move_is_503_rejected(
    make_app: MakeApp, fresh_redis: RedisServer
) -> None:
    """Redis frozen before the requeue: its first read times out, no move was sent, so the
    outcome is "rejected" (safe to retry), and indeed nothing moved."""
    admin = fresh_redis.client()
    fill_dead(admin, 5)
    c = make_app(quick_settings(fresh_redis.url, socket_timeout_s=0.5)).test_client()
    assert c.get("/api/queues/default/dead").status_code == 200  # a pooled connection, warm
    fresh_redis.pause()
    try:
        resp = c.post("/api/queues/default/dead/requeue", json={"count": 2})
    finally:
        fresh_redis.resume()
    assert resp.status_code == 503, resp.get_data(as_text=True)
    assert assert_json(resp)["outcome"] == "rejected"
    assert admin.llen(keys.dead("default")) == 5 and admin.llen(PENDING) == 0
