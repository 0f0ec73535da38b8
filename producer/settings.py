"""Settings: one frozen object built from ``BUS_*`` environment variables.

Only entry points (the web app factory, the daemon CLI, the load-test runner) call
:meth:`Settings.from_env`; everything else receives the object.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from producer.errors import SettingsError

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DELIVERY_MODES = ("at-least-once", "at-most-once")
PUBSUB_MODES = ("auto", "classic", "sharded")
MIN_TOKEN_CHARS = 16  # a shorter API token is guessable


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
        scheme = urlsplit(self.redis_url).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise SettingsError(
                f"BUS_REDIS_URL must start with redis://, rediss:// or unix://, got {scheme!r}"
            )
        for label, names in (("BUS_QUEUES", self.queues), ("BUS_CHANNELS", self.channels)):
            if not names:
                raise SettingsError(f"{label} must name at least one entry")
            for name in names:
                if not NAME_RE.match(name):
                    raise SettingsError(
                        f"{label}: {name!r} is not a valid name (letters, digits, _ . -; 1-64)"
                    )
        if self.pubsub_mode not in PUBSUB_MODES:
            raise SettingsError(
                f"BUS_PUBSUB_MODE must be one of {PUBSUB_MODES}, got {self.pubsub_mode!r}"
            )
        if self.delivery not in DELIVERY_MODES:
            raise SettingsError(
                f"BUS_DELIVERY must be one of {DELIVERY_MODES}, got {self.delivery!r}"
            )
        positive = (
            "connect_timeout_s",
            "socket_timeout_s",
            "block_timeout_s",
            "health_check_interval_s",
            "pong_deadline_s",
            "backoff_base_s",
            "backoff_cap_s",
            "heartbeat_interval_s",
            "heartbeat_ttl_s",
            "stats_interval_s",
            "stats_ttl_s",
            "reaper_interval_s",
            "mover_interval_s",
            "result_ttl_s",
            "wait_timeout_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{env_name(name)} must be > 0, got {getattr(self, name)}")
        if self.worker_read_timeout_s <= self.block_timeout_s:
            raise SettingsError(
                "BUS_WORKER_READ_TIMEOUT_S must exceed BUS_BLOCK_TIMEOUT_S "
                f"({self.worker_read_timeout_s} <= {self.block_timeout_s}): a read deadline "
                "shorter than the blocking pop would cut every idle wait short"
            )
        if self.backoff_cap_s < self.backoff_base_s:
            raise SettingsError("BUS_BACKOFF_CAP_S must be >= BUS_BACKOFF_BASE_S")
        if self.heartbeat_ttl_s <= 2 * self.heartbeat_interval_s:
            raise SettingsError(
                "BUS_HEARTBEAT_TTL_S must exceed twice BUS_HEARTBEAT_INTERVAL_S, "
                "or a live worker could be declared dead"
            )
        if self.stats_ttl_s <= self.stats_interval_s:
            raise SettingsError("BUS_STATS_TTL_S must exceed BUS_STATS_INTERVAL_S")
        for name, low in (
            ("max_attempts", 1),
            ("batch_size", 1),
            ("web_workers", 1),
        ):
            if getattr(self, name) < low:
                raise SettingsError(f"{env_name(name)} must be >= {low}")
        if self.max_payload_bytes < 64:
            raise SettingsError("BUS_MAX_PAYLOAD_BYTES must be at least 64")
        if self.dead_max < 0:
            raise SettingsError("BUS_DEAD_MAX must be >= 0 (0: no cap)")
        if self.retry_backoff_s < 0 or self.retry_backoff_cap_s < self.retry_backoff_s:
            raise SettingsError(
                "BUS_RETRY_BACKOFF_S must be >= 0 (0: retry at once) and "
                "BUS_RETRY_BACKOFF_CAP_S >= BUS_RETRY_BACKOFF_S"
            )
        for name in self.track_queues:
            if name != "*" and not NAME_RE.match(name):
                raise SettingsError(
                    f"BUS_TRACK_QUEUES: {name!r} is not a queue name (or * for every queue)"
                )
        for label, addresses in (("BUS_SENTINELS", self.sentinels),
                                 ("BUS_CLUSTER_NODES", self.cluster_nodes)):  # fmt: skip
            for address in addresses:
                host, _, port = address.rpartition(":")
                if not host or not port.isdigit() or not 0 < int(port) < 65536:
                    raise SettingsError(f"{label}: {address!r} is not host:port")
        if self.sentinels and self.cluster_nodes:
            raise SettingsError(
                "BUS_SENTINELS and BUS_CLUSTER_NODES are two topologies: set one of them"
            )
        if self.cluster_nodes and scheme == "unix":
            raise SettingsError("BUS_CLUSTER_NODES: a cluster is reached over TCP, not unix://")
        if self.cluster_nodes and urlsplit(self.redis_url).path.strip("/") not in ("", "0"):
            raise SettingsError(
                "BUS_REDIS_URL: a cluster has database 0 only; drop the /db from the URL"
            )
        if not self.sentinel_master or not NAME_RE.match(self.sentinel_master):
            raise SettingsError(f"BUS_SENTINEL_MASTER: {self.sentinel_master!r} is not a name")
        if self.wait_replicas < 0:
            raise SettingsError("BUS_WAIT_REPLICAS must be >= 0 (0: do not wait)")
        if self.result_max_bytes < 1:
            raise SettingsError("BUS_RESULT_MAX_BYTES must be >= 1")
        token = self.api_token
        if token and (len(token) < MIN_TOKEN_CHARS or not token.isprintable()
                      or any(c.isspace() for c in token)):  # fmt: skip
            raise SettingsError(
                f"BUS_API_TOKEN must be at least {MIN_TOKEN_CHARS} printable characters without "
                "spaces (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if self.max_queue_depth < 0:
            raise SettingsError("BUS_MAX_QUEUE_DEPTH must be >= 0 (0: no limit)")
        self._validate_tls(scheme)

    @property
    def tls(self) -> bool:
        """Whether the data connections use TLS (a ``rediss://`` URL)."""
        return urlsplit(self.redis_url).scheme == "rediss"

    def _validate_tls(self, scheme: str) -> None:
        """The ``BUS_TLS_*`` files are read here, at startup, so that a missing, unreadable or
        mismatched file is a configuration error naming its variable rather than a connection
        error at every attempt. Encrypted keys are refused: OpenSSL would prompt for their
        password on the terminal."""
        files = {
            name: getattr(self, name)
            for name in ("tls_ca_file", "tls_cert_file", "tls_key_file")
            if getattr(self, name)
        }
        if scheme != "rediss":
            # TLS settings with a plain-text URL would connect without TLS, unnoticed.
            changed = [env_name(name) for name in files]
            if not self.tls_check_hostname:
                changed.append("BUS_TLS_CHECK_HOSTNAME")
            if changed:
                raise SettingsError(
                    f"{', '.join(changed)}: TLS settings need a rediss:// BUS_REDIS_URL "
                    f"(it is {scheme}://)"
                )
            return
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise SettingsError(
                "BUS_TLS_CERT_FILE and BUS_TLS_KEY_FILE go together: a client certificate "
                "needs its private key"
            )
        for name, path in files.items():
            try:
                with open(path, "rb") as f:
                    f.read(1)
            except OSError as exc:
                raise SettingsError(
                    f"{env_name(name)}: cannot read {path!r}: {exc.strerror or exc}"
                ) from None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.tls_ca_file:
            try:
                context.load_verify_locations(cafile=self.tls_ca_file)
            except (ssl.SSLError, ValueError) as exc:
                raise SettingsError(
                    f"BUS_TLS_CA_FILE: {self.tls_ca_file!r} holds no usable PEM certificate ({exc})"
                ) from None
        if self.tls_cert_file:
            try:
                context.load_cert_chain(
                    self.tls_cert_file, self.tls_key_file, password=_refuse_password
                )
            except _EncryptedKey:
                raise SettingsError(
                    f"BUS_TLS_KEY_FILE: {self.tls_key_file!r} is encrypted; give an "
                    "unencrypted key (readable by this user only)"
                ) from None
            except ssl.SSLError as exc:
                raise SettingsError(
                    f"BUS_TLS_CERT_FILE, BUS_TLS_KEY_FILE: {self.tls_cert_file!r} and "
                    f"{self.tls_key_file!r} are not a PEM certificate and its private key "
                    f"({exc})"
                ) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Build settings from ``BUS_*`` variables; ``overrides`` win over the environment."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(env_name(f.name))
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _parse(f.name, f.type, raw.strip())
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


class _EncryptedKey(Exception):
    """Raised by :func:`_refuse_password`, which OpenSSL calls for an encrypted key only."""


def _refuse_password() -> bytes:
    raise _EncryptedKey


def _addresses(entries: tuple[str, ...]) -> list[tuple[str, int]]:
    return [(a.rpartition(":")[0], int(a.rpartition(":")[2])) for a in entries]


def env_name(field_name: str) -> str:
    """``block_timeout_s`` -> ``BUS_BLOCK_TIMEOUT_S``."""
    return "BUS_" + field_name.upper()


_BOOLS = {"1": True, "true": True, "yes": True, "on": True,
          "0": False, "false": False, "no": False, "off": False}  # fmt: skip


def _parse(name: str, type_name: Any, raw: str) -> Any:
    kind = str(type_name)
    try:
        if kind == "float":
            return float(raw)
        if kind == "int":
            return int(raw)
        if kind == "bool":
            return _BOOLS[raw.lower()]
        if kind.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError:
        raise SettingsError(f"{env_name(name)}={raw!r} is not a valid {kind}") from None
    except KeyError:
        raise SettingsError(
            f"{env_name(name)}={raw!r} is not 1/0, true/false, yes/no, on/off"
        ) from None
    return raw
