"""Settings: one frozen object built from ``BUS_*`` environment variables.

Only entry points (the web app factory, the daemon CLI, the load-test runner) call
:meth:`Settings.from_env`; everything else receives the object.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from producer.errors import SettingsError as SettingsError  # the error its checks raise
from producer.settings.checks import check
from producer.settings.env import env_name, parse_value

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """Every knob of the bus, with units in the names. Defaults suit a laptop."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    # Behind Sentinel: the sentinels (host:port) and the primary's name; the data nodes' user,
    # password, db and TLS come from redis_url, whose host and port are then not used.
    sentinels: tuple[str, ...] = ()
    sentinel_master: str = "mymaster"
    # A Redis Cluster: some of its nodes (host:port); the others are found from them. User,
    # password and TLS come from redis_url, whose host, port and db are then not used.
    cluster_nodes: tuple[str, ...] = ()
    # Pub/sub: classic (PUBLISH, SUBSCRIBE, patterns) or sharded (SPUBLISH, SSUBSCRIBE: a
    # message stays on its channel's shard; no patterns). auto: sharded on a cluster.
    pubsub_mode: str = "auto"
    # TLS (a rediss:// URL): the CA bundle that verifies the servers' certificates (empty: the
    # system's trust store), this client's certificate and key for servers that require one
    # (tls-auth-clients), and whether a certificate must name the host or IP address dialled.
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_check_hostname: bool = True
    # Durability: producers wait for this many replicas to have each push (0: do not wait).
    wait_replicas: int = 0
    wait_timeout_s: float = 1.0
    queues: tuple[str, ...] = ("default",)
    channels: tuple[str, ...] = ("default",)
    delivery: str = "at-least-once"
    # Network deadlines.
    connect_timeout_s: float = 2.0
    socket_timeout_s: float = 1.0  # short commands (producers, stats, heartbeats)
    block_timeout_s: float = 5.0  # how long one blocking pop waits on the server
    worker_read_timeout_s: float = 0.0  # 0 means block_timeout_s + 2
    health_check_interval_s: float = 5.0
    pong_deadline_s: float = 3.0
    backoff_base_s: float = 0.1
    backoff_cap_s: float = 5.0
    # Liveness and accounting.
    heartbeat_interval_s: float = 2.0
    heartbeat_ttl_s: float = 15.0
    stats_interval_s: float = 0.5
    stats_ttl_s: float = 120.0
    reaper_interval_s: float = 5.0
    mover_interval_s: float = 0.5  # workers make due delayed messages pending this often
    max_attempts: int = 5
    retry_backoff_s: float = 0.0  # a failed message is retried after this, doubling per attempt
    retry_backoff_cap_s: float = 300.0  # ... up to this; 0 backoff: retried at once
    batch_size: int = 100
    dead_max: int = 100_000  # dead letters kept per queue (the oldest go); 0: no cap
    max_payload_bytes: int = 65536
    max_queue_depth: int = 0  # producers refuse a message past this many pending; 0: no limit
    # Tracked messages (producer/store/tracking.py).
    track_queues: tuple[str, ...] = ()  # queues whose every message is tracked ("*": all)
    result_ttl_s: float = 86400.0  # a record lives this long after its last change
    result_max_bytes: int = 65536  # a handler's JSON result past this is not stored
    log_level: str = "INFO"
    web_bind: str = "127.0.0.1:8000"
    web_workers: int = 4
    # The web's sending and admin endpoints require "Authorization: Bearer <this>" (empty: none).
    api_token: str = ""

    def __repr__(self) -> str:
        """Every setting, with the URL's password and the API token masked."""
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        shown["redis_url"] = self.redis_url_redacted
        if self.api_token:
            shown["api_token"] = "***"
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    def __post_init__(self) -> None:
        if not self.worker_read_timeout_s:
            object.__setattr__(self, "worker_read_timeout_s", self.block_timeout_s + 2.0)
        self.validate()

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``BUS_SENTINELS`` as (host, port) pairs."""
        return _addresses(self.sentinels)

    def cluster_addresses(self) -> list[tuple[str, int]]:
        """``BUS_CLUSTER_NODES`` as (host, port) pairs."""
        return _addresses(self.cluster_nodes)

    @property
    def sharded_pubsub(self) -> bool:
        """Whether channels use sharded pub/sub (``BUS_PUBSUB_MODE``)."""
        return self.pubsub_mode == "sharded" or (
            self.pubsub_mode == "auto" and bool(self.cluster_nodes)
        )

    @property
    def topology(self) -> str:
        """``single``, ``sentinel`` or ``cluster``."""
        return "cluster" if self.cluster_nodes else "sentinel" if self.sentinels else "single"

    @property
    def redis_url_redacted(self) -> str:
        """Where Redis is, with any password replaced by ``***`` (safe to log); behind
        Sentinel, the sentinels and the primary's name."""
        if self.sentinels:
            return f"sentinel://{','.join(self.sentinels)}/{self.sentinel_master}"
        if self.cluster_nodes:
            return f"cluster://{','.join(self.cluster_nodes)}"
        parts = urlsplit(self.redis_url)
        if parts.password is None and "password=" not in parts.query.lower():
            return self.redis_url
        if parts.query:  # redis-py also takes ?password=... in the query string
            query = "&".join(
                f"{key}=***" if key.lower() == "password" else f"{key}={value}"
                for key, _, value in (item.partition("=") for item in parts.query.split("&"))
            )
            parts = parts._replace(query=query)
        if parts.password is not None:
            user = parts.username or ""
            host = parts.hostname or ""
            netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
            parts = parts._replace(netloc=netloc)
        return urlunsplit(parts)

    def validate(self) -> None:
        """Raise :class:`SettingsError` naming the first inconsistent setting."""
        check(self)

    @property
    def tls(self) -> bool:
        """Whether the data connections use TLS (a ``rediss://`` URL)."""
        return urlsplit(self.redis_url).scheme == "rediss"

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Build settings from ``BUS_*`` variables; ``overrides`` win over the environment."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(env_name(f.name))
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = parse_value(f.name, f.type, raw.strip())
        known = {env_name(f.name) for f in dataclasses.fields(cls)}
        for unknown in sorted(k for k in environ if k.startswith("BUS_") and k not in known):
            log.warning("ignoring unknown setting %s (typo?)", unknown)
        values.update(overrides)
        return cls(**values)

    def tracks(self, queue: str) -> bool:
        """Whether every message pushed to ``queue`` is tracked (``BUS_TRACK_QUEUES``)."""
        return queue in self.track_queues or "*" in self.track_queues

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated again)."""
        if "block_timeout_s" in changes and "worker_read_timeout_s" not in changes:
            changes["worker_read_timeout_s"] = 0.0
        return dataclasses.replace(self, **changes)


def _addresses(entries: tuple[str, ...]) -> list[tuple[str, int]]:
    return [(a.rpartition(":")[0], int(a.rpartition(":")[2])) for a in entries]
