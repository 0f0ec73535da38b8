"""TLS to Redis: a redis-server on TLS only (with and without client certificates, a password
too), the producer, a worker and a subscriber process over it, and the failures a user meets:
a wrong CA, no client certificate, an untrusted one, a name mismatch. Errors come within the
connect deadline, name the setting to check, and never show the password or a key."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from loadtest.harness.ports import free_port
from loadtest.harness.server import redis_binary
from loadtest.harness.waits import wait_for
from producer import Producer, Settings, SettingsError, keys, make_client
from producer.connection.client import FollowingSSLConnection
from tests.conftest import quick_settings
from tests.procs import Proc, read_records
from tests.tlskit import PASSWORD, Pki, TlsRedisServer, make_pki, openssl_binary

pytestmark = pytest.mark.slow

RECORD = "tests.handlers_for_tests:record"
CONNECT_TIMEOUT_S = 1.0  # quick_settings'
SLACK_S = 0.5


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if openssl_binary() is None or redis_binary() is None:
        pytest.fail("the TLS tests need the openssl CLI and redis-server (built with TLS)")
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(params=[True, False], ids=["client-certs", "no-client-certs"])
def server(request: pytest.FixtureRequest, tmp_path: Path, pki: Pki) -> Iterator[TlsRedisServer]:
    """A TLS-only redis-server with a password; it requires client certificates or not."""
    srv = TlsRedisServer(tmp_path / "redis", pki, auth_clients=request.param).start()
    yield srv
    srv.kill()


@pytest.fixture
def strict_server(tmp_path: Path, pki: Pki) -> Iterator[TlsRedisServer]:
    """A TLS-only redis-server that requires client certificates, also on 127.0.0.2 (an address
    its certificate does not name)."""
    srv = TlsRedisServer(
        tmp_path / "redis", pki, "--bind", "127.0.0.1", "127.0.0.2", auth_clients=True
    ).start()
    yield srv
    srv.kill()


def tls_settings(srv: TlsRedisServer, **overrides: object) -> Settings:
    """Quick settings for ``srv``: its CA, and a client certificate when it requires one."""
    values: dict[str, object] = {"tls_ca_file": str(srv.pki.ca)}
    if srv.auth_clients:
        values.update(tls_cert_file=str(srv.pki.client_cert), tls_key_file=str(srv.pki.client_key))
    values.update(overrides)
    return quick_settings(srv.url, **values)


def tls_env(settings: Settings) -> dict[str, str]:
    """The BUS_TLS_* variables of ``settings``."""
    env = {
        "BUS_TLS_CA_FILE": settings.tls_ca_file,
        "BUS_TLS_CERT_FILE": settings.tls_cert_file,
        "BUS_TLS_KEY_FILE": settings.tls_key_file,
        "BUS_TLS_CHECK_HOSTNAME": "1" if settings.tls_check_hostname else "0",
    }
    return {k: v for k, v in env.items() if v}


def key_material(pki: Pki) -> list[str]:
    """The base64 lines of every private key of the PKI: none may appear in a log or error."""
    lines: list[str] = []
    for key in (pki.client_key, pki.server_key, pki.stranger_key):
        lines += [ln for ln in key.read_text().splitlines() if ln and not ln.startswith("-----")]
    return lines


def assert_no_secret(text: str, pki: Pki) -> None:
    assert PASSWORD not in text
    for line in key_material(pki):
        assert line not in text


def failure(settings: Settings, role: str = "admin") -> tuple[redis.ConnectionError, float]:
    """The error of a PING by a ``role`` client of ``settings``, and how long it took."""
    client = make_client(settings, role)
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError) as info:
        client.ping()
    return info.value, time.monotonic() - started


def test_worker_handles_every_pushed_message(
    server: TlsRedisServer, spawn: Callable[..., Proc]
) -> None:
    """A producer pushes over TLS and a worker process (one slot: FIFO to the end) handles each
    message exactly once, in order."""
    settings = tls_settings(server)
    producer = Producer.from_settings(settings)
    sent = producer.push_many([{"n": i} for i in range(300)])
    sent += [producer.push({"n": 300 + i}) for i in range(100)]
    worker = spawn("worker", server.url, "--name", "w1", "--handler", RECORD, "--concurrency", "1",
                   **tls_env(settings))  # fmt: skip
    records_path = worker.log_path.parent / "records.jsonl"
    wait_for(lambda: len(read_records(records_path)) >= len(sent), 20, "400 handled")
    admin = make_client(settings, "admin")
    wait_for(lambda: admin.llen(keys.processing("default", "w1")) == 0, 5, "in-flight acked")
    assert worker.stop() == 0, worker.log()
    records = read_records(records_path)
    assert sorted(r["id"] for r in records) == sorted(s.envelope.id for s in sent)
    assert [r["payload_n"] for r in records] == list(range(400))  # FIFO, each once
    assert admin.llen(keys.pending("default")) == 0
    assert admin.llen(keys.dead("default")) == 0
    log = worker.log()
    assert "rediss://:***@127.0.0.1" in log
    assert_no_secret(log, server.pki)


def test_subscriber_receives_what_is_published(
    server: TlsRedisServer, spawn: Callable[..., Proc]
) -> None:
    """A subscriber process receives every message published over TLS, none lost."""
    settings = tls_settings(server)
    sub = spawn("subscriber", server.url, "--name", "s1", "--handler", RECORD, **tls_env(settings))
    admin = make_client(settings, "admin")
    wait_for(
        lambda: admin.pubsub_numsub(keys.channel("default"))[0][1] == 1, 15, "the subscription"
    )
    producer = Producer.from_settings(settings)
    sent = [producer.publish({"n": i}) for i in range(50)]
    sent += producer.publish_many([{"n": 50 + i, "pad": "x" * 2000} for i in range(500)])
    assert [s.result for s in sent] == [1] * len(sent)
    records_path = sub.log_path.parent / "records.jsonl"
    wait_for(lambda: len(read_records(records_path)) >= len(sent), 20, "550 received")
    assert sub.stop() == 0, sub.log()
    assert [r["payload_n"] for r in read_records(records_path)] == list(range(550))
    log = sub.log()
    assert "reconnect" not in log and "lost=" not in log, log
    assert_no_secret(log, server.pki)


def test_wrong_ca_fails_fast_naming_the_setting(strict_server: TlsRedisServer) -> None:
    """A CA that did not sign the server's certificate: every role's client raises a
    ConnectionError saying "certificate verify failed" and naming BUS_TLS_CA_FILE, within the
    connect deadline."""
    settings = tls_settings(strict_server, tls_ca_file=str(strict_server.pki.other_ca))
    for role in ("producer", "worker", "subscriber", "admin"):
        exc, took = failure(settings, role)
        assert "certificate verify failed" in str(exc) and "BUS_TLS_CA_FILE" in str(exc), exc
        assert took < CONNECT_TIMEOUT_S + SLACK_S
        assert_no_secret(str(exc), strict_server.pki)
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        Producer.from_settings(settings).push("x")


def test_wrong_ca_in_the_daemons(strict_server: TlsRedisServer, spawn: Callable[..., Proc]) -> None:
    """What a wrong CA looks like to a user of the daemons: a tool exits 69 at once with the
    reason; a worker that never connected stops with a configuration error (exit 78) naming
    the setting, and so does a subscriber."""
    settings = tls_settings(strict_server, tls_ca_file=str(strict_server.pki.other_ca))
    env = tls_env(settings)
    check = spawn("worker", strict_server.url, "--check", **env)
    assert check.wait(10) == 69
    worker = spawn("worker", strict_server.url, "--name", "w1", "--handler", RECORD, **env)
    subscriber = spawn("subscriber", strict_server.url, "--name", "s1", **env)
    assert worker.wait(10) == 78 and subscriber.wait(10) == 78
    for proc in (worker, subscriber):
        assert "configuration error" in proc.log(), proc.log()
    for proc in (check, worker, subscriber):
        text = proc.log()
        assert "certificate verify failed" in text and "BUS_TLS_CA_FILE" in text, text
        assert_no_secret(text, strict_server.pki)
    assert "Redis unavailable" in check.log()


def test_no_client_certificate_when_required(strict_server: TlsRedisServer) -> None:
    """Without a client certificate, or with one the server's CA did not sign, the server ends
    the session after the handshake: a ConnectionError naming BUS_TLS_CERT_FILE, at once."""
    pki = strict_server.pki
    none = tls_settings(strict_server, tls_cert_file="", tls_key_file="")
    exc, took = failure(none)
    assert "BUS_TLS_CERT_FILE and BUS_TLS_KEY_FILE" in str(exc) and "client certificate" in str(exc)
    assert took < CONNECT_TIMEOUT_S + SLACK_S
    assert_no_secret(str(exc), pki)
    stranger = tls_settings(
        strict_server, tls_cert_file=str(pki.stranger_cert), tls_key_file=str(pki.stranger_key)
    )
    exc, took = failure(stranger)
    assert "may not trust the client certificate of BUS_TLS_CERT_FILE" in str(exc), exc
    assert took < CONNECT_TIMEOUT_S + SLACK_S
    assert_no_secret(str(exc), pki)


def test_host_name_check(strict_server: TlsRedisServer) -> None:
    """The certificate names 127.0.0.1 and localhost: both verify; 127.0.0.2 does not, and the
    error names BUS_TLS_CHECK_HOSTNAME, which turned off lets it through (the CA still
    verifies the certificate)."""
    for host in ("127.0.0.1", "localhost"):
        url = strict_server.url.replace("127.0.0.1", host)
        assert make_client(tls_settings(strict_server, redis_url=url), "admin").ping()
    other = strict_server.url.replace("127.0.0.1", "127.0.0.2")
    exc, took = failure(tls_settings(strict_server, redis_url=other))
    assert "does not name 127.0.0.2" in str(exc) and "BUS_TLS_CHECK_HOSTNAME=0" in str(exc), exc
    assert took < CONNECT_TIMEOUT_S + SLACK_S
    unchecked = tls_settings(strict_server, redis_url=other, tls_check_hostname=False)
    assert make_client(unchecked, "admin").ping()
    wrong_ca = tls_settings(
        strict_server, redis_url=other, tls_check_hostname=False,
        tls_ca_file=str(strict_server.pki.other_ca),
    )  # fmt: skip
    assert "certificate verify failed" in str(failure(wrong_ca)[0])


def test_bad_tls_files_are_configuration_errors(
    pki: Pki, tmp_path: Path, spawn: Callable[..., Proc]
) -> None:
    """A missing, unreadable-as-PEM, mismatched or encrypted file is refused at startup with
    the variable's name (exit 78 for the daemons), never with the key's contents."""
    url = f"rediss://:{PASSWORD}@127.0.0.1:1/0"
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_text(_encrypted_copy(pki.client_key, tmp_path))
    cases = [
        ({"tls_ca_file": str(tmp_path / "absent.pem")}, "BUS_TLS_CA_FILE: cannot read"),
        ({"tls_ca_file": str(pki.client_key)}, "BUS_TLS_CA_FILE: .* no usable PEM"),
        ({"tls_cert_file": str(pki.client_cert)}, "go together"),
        (
            {"tls_cert_file": str(pki.client_cert), "tls_key_file": str(pki.server_key)},
            "not a PEM certificate and its private key",
        ),
        (
            {"tls_cert_file": str(pki.client_key), "tls_key_file": str(pki.client_key)},
            "not a PEM certificate and its private key",
        ),
        (
            {"tls_cert_file": str(pki.client_cert), "tls_key_file": str(encrypted)},
            "BUS_TLS_KEY_FILE: .* is encrypted",
        ),
    ]
    for overrides, message in cases:
        with pytest.raises(SettingsError, match=message) as info:
            Settings(redis_url=url, **overrides)  # type: ignore[arg-type]
        assert_no_secret(str(info.value), pki)
    env = {"BUS_TLS_CERT_FILE": str(pki.client_cert), "BUS_TLS_KEY_FILE": str(pki.server_key)}
    proc = spawn("worker", url, **env)
    assert proc.wait(10) == 78
    assert "BUS_TLS_CERT_FILE" in proc.log() and "Traceback" not in proc.log()
    assert_no_secret(proc.log(), pki)


def _encrypted_copy(key: Path, tmp_path: Path) -> str:
    out = tmp_path / "enc.pem"
    subprocess.run(
        ["openssl", "pkey", "-in", str(key), "-out", str(out), "-aes256", "-passout", "pass:pw"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return out.read_text()


@pytest.fixture
def tls_cluster(tmp_path: Path, pki: Pki) -> Iterator[TlsRedisServer]:
    """A one-node Redis Cluster on TLS only (its bus too), holding every slot."""
    srv = TlsRedisServer(
        tmp_path / "redis", pki, "--cluster-enabled", "yes", "--tls-cluster", "yes",
        "--cluster-port", str(free_port()), "--cluster-config-file", "nodes.conf",
    ).start()  # fmt: skip
    try:
        admin = srv.client()
        admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        wait_for(lambda: b"cluster_state:ok" in admin.execute_command("CLUSTER", "INFO"), 20,
                 "cluster_state:ok")  # fmt: skip
        yield srv
    finally:
        srv.kill()


def test_cluster_over_tls(tls_cluster: TlsRedisServer, spawn: Callable[..., Proc]) -> None:
    """On a cluster every node is reached over TLS with the BUS_TLS_* files: a producer pushes,
    a worker process handles each message once; a wrong CA fails at once with redis-py's
    reason (its message does not name the setting: the nodes use redis-py's TLS class)."""
    nodes = (f"127.0.0.1:{tls_cluster.port}",)
    settings = tls_settings(tls_cluster, cluster_nodes=nodes)
    sent = Producer.from_settings(settings).push_many([{"n": i} for i in range(100)])
    env = {**tls_env(settings), "BUS_CLUSTER_NODES": nodes[0]}
    worker = spawn("worker", tls_cluster.url, "--name", "w1", "--handler", RECORD,
                   "--concurrency", "1", **env)  # fmt: skip
    records_path = worker.log_path.parent / "records.jsonl"
    wait_for(lambda: len(read_records(records_path)) >= len(sent), 20, "100 handled")
    assert worker.stop() == 0, worker.log()
    assert [r["id"] for r in read_records(records_path)] == [s.envelope.id for s in sent]
    assert_no_secret(worker.log(), tls_cluster.pki)
    wrong = settings.replace(tls_ca_file=str(tls_cluster.pki.other_ca))
    exc, took = failure(wrong)
    assert "certificate verify failed" in str(exc) and took < CONNECT_TIMEOUT_S + SLACK_S
    assert_no_secret(str(exc), tls_cluster.pki)


def test_sentinel_and_cluster_clients_get_the_tls_options(pki: Pki) -> None:
    """Behind Sentinel the primary's connections, on a cluster every node's, use TLS with the
    BUS_TLS_* files (the sentinels themselves are asked in plain text)."""
    tls = {
        "tls_ca_file": str(pki.ca), "tls_cert_file": str(pki.client_cert),
        "tls_key_file": str(pki.client_key), "tls_check_hostname": False,
    }  # fmt: skip
    url = f"rediss://:{PASSWORD}@127.0.0.1:1/0"
    behind = make_client(Settings(redis_url=url, sentinels=("127.0.0.1:1",), **tls), "worker")  # type: ignore[arg-type]
    kwargs = behind.connection_pool.connection_kwargs
    assert behind.connection_pool.connection_class is FollowingSSLConnection
    assert (kwargs["ssl_ca_certs"], kwargs["ssl_certfile"]) == (str(pki.ca), str(pki.client_cert))
    assert kwargs["ssl_check_hostname"] is False and kwargs["password"] == PASSWORD
    cluster = make_client(Settings(redis_url=url, cluster_nodes=("127.0.0.1:1",), **tls), "admin")  # type: ignore[arg-type]
    node = cluster._node(("127.0.0.1", 1))  # type: ignore[attr-defined]
    kwargs = node.connection_pool.connection_kwargs
    assert issubclass(node.connection_pool.connection_class, redis.SSLConnection)
    assert (kwargs["ssl_keyfile"], kwargs["ssl_cert_reqs"]) == (str(pki.client_key), "required")
    plain = make_client(Settings(cluster_nodes=("127.0.0.1:1",)), "admin")
    node = plain._node(("127.0.0.1", 1))  # type: ignore[attr-defined]
    assert "ssl_ca_certs" not in node.connection_pool.connection_kwargs
