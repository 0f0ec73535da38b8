"""Settings: built from BUS_* variables, validated, frozen."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from producer import Settings, SettingsError
from producer.connection.client import client_options


def test_defaults_are_consistent() -> None:
    """The defaults validate, and the worker's read deadline exceeds its block timeout."""
    s = Settings()
    assert s.worker_read_timeout_s == s.block_timeout_s + 2
    assert s.queues == ("default",) and s.channels == ("default",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.block_timeout_s = 1  # type: ignore[misc]


def test_from_env_parses_types_and_lists() -> None:
    """Numbers, comma lists and strings are parsed from their BUS_* variables."""
    s = Settings.from_env({
        "BUS_REDIS_URL": "redis://user:secret@127.0.0.1:7000/2", "BUS_QUEUES": "a, b,c",
        "BUS_BLOCK_TIMEOUT_S": "3", "BUS_MAX_ATTEMPTS": "9", "BUS_DELIVERY": "at-most-once",
    })  # fmt: skip
    assert s.queues == ("a", "b", "c")
    assert (s.block_timeout_s, s.worker_read_timeout_s, s.max_attempts) == (3.0, 5.0, 9)
    assert s.delivery == "at-most-once"
    assert "secret" not in s.redis_url_redacted and "***" in s.redis_url_redacted


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BUS_BLOCK_TIMEOUT_S": "5", "BUS_WORKER_READ_TIMEOUT_S": "5"}, "must exceed"),
        ({"BUS_BLOCK_TIMEOUT_S": "abc"}, "not a valid float"),
        ({"BUS_REDIS_URL": "http://x"}, "BUS_REDIS_URL"),
        ({"BUS_QUEUES": "ok,no spaces"}, "not a valid name"),
        ({"BUS_QUEUES": " , "}, "at least one"),
        ({"BUS_DELIVERY": "exactly-once"}, "BUS_DELIVERY"),
        ({"BUS_HEARTBEAT_INTERVAL_S": "10", "BUS_HEARTBEAT_TTL_S": "15"}, "twice"),
        ({"BUS_MAX_ATTEMPTS": "0"}, "BUS_MAX_ATTEMPTS"),
        ({"BUS_PONG_DEADLINE_S": "-1"}, "BUS_PONG_DEADLINE_S"),
        ({"BUS_CLUSTER_NODES": "127.0.0.1"}, "BUS_CLUSTER_NODES: '127.0.0.1' is not host:port"),
        ({"BUS_CLUSTER_NODES": "h:7000", "BUS_SENTINELS": "h:26379"}, "set one of them"),
        ({"BUS_SENTINELS": "h:26379", "BUS_SENTINEL_USERNAME": "u"}, "needs BUS_SENTINEL_PASSW"),
        ({"BUS_SENTINEL_PASSWORD": "pw"}, "set BUS_SENTINELS too"),
        ({"BUS_CLUSTER_NODES": "h:7000", "BUS_REDIS_URL": "redis://h/3"}, "database 0 only"),
        ({"BUS_CLUSTER_NODES": "h:7000", "BUS_REDIS_URL": "unix:///tmp/r.sock"}, "over TCP"),
        ({"BUS_PUBSUB_MODE": "fanout"}, "BUS_PUBSUB_MODE"),
        ({"BUS_TLS_CA_FILE": "/etc/hostname"}, "BUS_TLS_CA_FILE: TLS settings need a rediss://"),
        ({"BUS_TLS_CHECK_HOSTNAME": "0"}, "BUS_TLS_CHECK_HOSTNAME: TLS settings need a rediss"),
        ({"BUS_TLS_CHECK_HOSTNAME": "maybe"}, "BUS_TLS_CHECK_HOSTNAME='maybe' is not 1/0"),
        ({"BUS_REDIS_URL": "rediss://h/0", "BUS_TLS_CERT_FILE": "/c.pem"}, "go together"),
        ({"BUS_REDIS_URL": "rediss://h/0", "BUS_TLS_KEY_FILE": "/k.pem"}, "go together"),
        (
            {"BUS_REDIS_URL": "rediss://h/0", "BUS_TLS_CA_FILE": "/no/such/ca.pem"},
            "BUS_TLS_CA_FILE: cannot read '/no/such/ca.pem': No such file",
        ),
    ],
)
def test_invalid_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    """A bad or inconsistent variable is refused with a message naming it."""
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_unknown_bus_variable_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    """A typo in a BUS_* name is reported, not silently ignored."""
    with caplog.at_level(logging.WARNING):
        Settings.from_env({"BUS_BLOK_TIMEOUT_S": "1"})
    assert "BUS_BLOK_TIMEOUT_S" in caplog.text


def test_client_options_are_explicit_per_role() -> None:
    """No role inherits redis-py's hidden defaults (5 s socket timeout, 10 retries, RESP3)."""
    s = Settings()
    worker = client_options(s, "worker")
    assert worker["socket_timeout"] == s.worker_read_timeout_s > s.block_timeout_s
    assert worker["retry"].get_retries() == 0
    producer = client_options(s, "producer")
    assert producer["socket_timeout"] == s.socket_timeout_s
    assert producer["retry"].get_retries() == 0  # the Producer resends only what did not run
    assert client_options(s, "subscriber")["retry"]._supported_errors == ()
    for role in ("producer", "worker", "subscriber", "admin"):
        opts = client_options(s, role)
        assert opts["protocol"] == 2 and opts["health_check_interval"] == 0
        assert opts["socket_keepalive"] is True and opts["socket_connect_timeout"] > 0
    with pytest.raises(ValueError):
        client_options(s, "janitor")


def test_topology_and_pubsub_mode_follow_the_settings() -> None:
    """One server, Sentinel or a cluster; sharded pub/sub on a cluster unless told otherwise."""
    single = Settings.from_env({})
    cluster = Settings.from_env({"BUS_CLUSTER_NODES": "127.0.0.1:7000, 127.0.0.1:7001"})
    sentinel = Settings.from_env({"BUS_SENTINELS": "127.0.0.1:26379"})
    assert [s.topology for s in (single, sentinel, cluster)] == ["single", "sentinel", "cluster"]
    assert cluster.cluster_addresses() == [("127.0.0.1", 7000), ("127.0.0.1", 7001)]
    assert cluster.redis_url_redacted == "cluster://127.0.0.1:7000,127.0.0.1:7001"
    assert (single.sharded_pubsub, sentinel.sharded_pubsub, cluster.sharded_pubsub) == (
        False, False, True)  # fmt: skip
    assert not cluster.replace(pubsub_mode="classic").sharded_pubsub
    asking = sentinel.replace(sentinel_username="bus-web", sentinel_password="s3cret-sentinel")
    assert "s3cret-sentinel" not in repr(asking) and "sentinel_password='***'" in repr(asking)
    assert single.replace(pubsub_mode="sharded").sharded_pubsub


def test_tls_settings() -> None:
    """TLS is off by default; a rediss:// URL turns it on, checking host names unless
    BUS_TLS_CHECK_HOSTNAME says otherwise; a password in the URL's query is redacted too."""
    plain = Settings.from_env({})
    assert not plain.tls and "ssl_ca_certs" not in client_options(plain, "admin")
    tls = Settings.from_env({"BUS_REDIS_URL": "rediss://:secret@h:6380/0?password=secret"})
    assert tls.tls and tls.tls_check_hostname and tls.tls_ca_file == ""
    opts = client_options(tls, "worker")
    assert (opts["ssl_check_hostname"], opts["ssl_cert_reqs"], opts["ssl_ca_certs"]) == (
        True, "required", None)  # fmt: skip
    assert "secret" not in tls.redis_url_redacted
    assert tls.redis_url_redacted == "rediss://:***@h:6380/0?password=***"
    for raw, value in (("0", False), ("off", False), ("False", False), ("yes", True)):
        env = {"BUS_REDIS_URL": "rediss://h/0", "BUS_TLS_CHECK_HOSTNAME": raw}
        assert Settings.from_env(env).tls_check_hostname is value
        assert client_options(Settings.from_env(env), "admin")["ssl_check_hostname"] is value


def test_every_setting_says_what_it_means() -> None:
    """The configuration page is made from these: a field without a meaning would be a blank."""
    for field in dataclasses.fields(Settings):
        assert len(field.metadata.get("meaning", "")) >= 20, f"{field.name} has no meaning"
