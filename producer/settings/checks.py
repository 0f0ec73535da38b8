"""The checks a :class:`~producer.settings.Settings` passes when it is made: each failure raises
:class:`~producer.errors.SettingsError` naming the variable to fix (a daemon exits 78 with it)."""

from __future__ import annotations

import re
import ssl
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from producer.errors import SettingsError
from producer.settings.env import env_name

if TYPE_CHECKING:
    from producer.settings import Settings

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DELIVERY_MODES = ("at-least-once", "at-most-once")
PUBSUB_MODES = ("auto", "classic", "sharded")
SCHEDULE_MISSED = ("latest", "all", "none")
MIN_TOKEN_CHARS = 16  # a shorter API token is guessable
MAX_CONCURRENCY = 1000  # handlers in hand per worker and queue
MAX_TIMEOUT_S = 604800  # 7 days: the longest time limit a handler may be given


def check(settings: Settings) -> None:
    """Raise :class:`SettingsError` naming the first inconsistent setting of ``settings``."""
    scheme = urlsplit(settings.redis_url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise SettingsError(
            f"BUS_REDIS_URL must start with redis://, rediss:// or unix://, got {scheme!r}"
        )
    for label, names in (("BUS_QUEUES", settings.queues), ("BUS_CHANNELS", settings.channels)):
        if not names:
            raise SettingsError(f"{label} must name at least one entry")
        for name in names:
            if not NAME_RE.match(name):
                raise SettingsError(
                    f"{label}: {name!r} is not a valid name (letters, digits, _ . -; 1-64)"
                )
    if settings.pubsub_mode not in PUBSUB_MODES:
        raise SettingsError(
            f"BUS_PUBSUB_MODE must be one of {PUBSUB_MODES}, got {settings.pubsub_mode!r}"
        )
    if settings.schedule_missed not in SCHEDULE_MISSED:
        raise SettingsError(
            f"BUS_SCHEDULE_MISSED must be one of {SCHEDULE_MISSED}, "
            f"got {settings.schedule_missed!r}"
        )
    if settings.delivery not in DELIVERY_MODES:
        raise SettingsError(
            f"BUS_DELIVERY must be one of {DELIVERY_MODES}, got {settings.delivery!r}"
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
        "idempotency_window_s",
        "wait_timeout_s",
    )
    for name in positive:
        if getattr(settings, name) <= 0:
            raise SettingsError(f"{env_name(name)} must be > 0, got {getattr(settings, name)}")
    if settings.worker_read_timeout_s <= settings.block_timeout_s:
        raise SettingsError(
            "BUS_WORKER_READ_TIMEOUT_S must exceed BUS_BLOCK_TIMEOUT_S "
            f"({settings.worker_read_timeout_s} <= {settings.block_timeout_s}): a read deadline "
            "shorter than the blocking pop would cut every idle wait short"
        )
    if settings.backoff_cap_s < settings.backoff_base_s:
        raise SettingsError("BUS_BACKOFF_CAP_S must be >= BUS_BACKOFF_BASE_S")
    if settings.heartbeat_ttl_s <= 2 * settings.heartbeat_interval_s:
        raise SettingsError(
            "BUS_HEARTBEAT_TTL_S must exceed twice BUS_HEARTBEAT_INTERVAL_S, "
            "or a live worker could be declared dead"
        )
    if settings.stats_ttl_s <= settings.stats_interval_s:
        raise SettingsError("BUS_STATS_TTL_S must exceed BUS_STATS_INTERVAL_S")
    for name, low in (
        ("max_attempts", 1),
        ("batch_size", 1),
        ("concurrency", 1),
        ("web_workers", 1),
    ):
        if getattr(settings, name) < low:
            raise SettingsError(f"{env_name(name)} must be >= {low}")
    if settings.concurrency > MAX_CONCURRENCY:
        raise SettingsError(
            f"BUS_CONCURRENCY must be <= {MAX_CONCURRENCY} (a thread or a task each; for more, "
            f"run more processes), got {settings.concurrency}"
        )
    for name in ("handler_timeout_s", "stop_timeout_s"):
        value = getattr(settings, name)
        if not 0 < value <= MAX_TIMEOUT_S:  # NaN fails this too
            raise SettingsError(
                f"{env_name(name)} must be > 0 and <= {MAX_TIMEOUT_S} (7 days), got {value}"
            )
    if settings.max_payload_bytes < 64:
        raise SettingsError("BUS_MAX_PAYLOAD_BYTES must be at least 64")
    if settings.dead_max < 0:
        raise SettingsError("BUS_DEAD_MAX must be >= 0 (0: no cap)")
    if settings.retry_backoff_s < 0 or settings.retry_backoff_cap_s < settings.retry_backoff_s:
        raise SettingsError(
            "BUS_RETRY_BACKOFF_S must be >= 0 (0: retry at once) and "
            "BUS_RETRY_BACKOFF_CAP_S >= BUS_RETRY_BACKOFF_S"
        )
    for name in settings.track_queues:
        if name != "*" and not NAME_RE.match(name):
            raise SettingsError(
                f"BUS_TRACK_QUEUES: {name!r} is not a queue name (or * for every queue)"
            )
    for label, addresses in (("BUS_SENTINELS", settings.sentinels),
                             ("BUS_CLUSTER_NODES", settings.cluster_nodes)):  # fmt: skip
        for address in addresses:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise SettingsError(f"{label}: {address!r} is not host:port")
    if settings.sentinels and settings.cluster_nodes:
        raise SettingsError(
            "BUS_SENTINELS and BUS_CLUSTER_NODES are two topologies: set one of them"
        )
    if settings.cluster_nodes and scheme == "unix":
        raise SettingsError("BUS_CLUSTER_NODES: a cluster is reached over TCP, not unix://")
    if settings.cluster_nodes and urlsplit(settings.redis_url).path.strip("/") not in ("", "0"):
        raise SettingsError(
            "BUS_REDIS_URL: a cluster has database 0 only; drop the /db from the URL"
        )
    if not settings.sentinel_master or not NAME_RE.match(settings.sentinel_master):
        raise SettingsError(f"BUS_SENTINEL_MASTER: {settings.sentinel_master!r} is not a name")
    if settings.sentinel_username and not settings.sentinel_password:
        raise SettingsError(
            "BUS_SENTINEL_USERNAME needs BUS_SENTINEL_PASSWORD (the user's password)"
        )
    if (settings.sentinel_username or settings.sentinel_password) and not settings.sentinels:
        raise SettingsError(
            "BUS_SENTINEL_USERNAME and BUS_SENTINEL_PASSWORD log in to the sentinels: set "
            "BUS_SENTINELS too, or leave them empty"
        )
    if settings.wait_replicas < 0:
        raise SettingsError("BUS_WAIT_REPLICAS must be >= 0 (0: do not wait)")
    if settings.result_max_bytes < 1:
        raise SettingsError("BUS_RESULT_MAX_BYTES must be >= 1")
    token = settings.api_token
    if token and (len(token) < MIN_TOKEN_CHARS or not token.isprintable()
                  or any(c.isspace() for c in token)):  # fmt: skip
        raise SettingsError(
            f"BUS_API_TOKEN must be at least {MIN_TOKEN_CHARS} printable characters without "
            "spaces (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if settings.max_queue_depth < 0:
        raise SettingsError("BUS_MAX_QUEUE_DEPTH must be >= 0 (0: no limit)")
    _check_tls(settings, scheme)


def _check_tls(settings: Settings, scheme: str) -> None:
    """The ``BUS_TLS_*`` files are read here, at startup, so that a missing, unreadable or
    mismatched file is a configuration error naming its variable rather than a connection
    error at every attempt. Encrypted keys are refused: OpenSSL would prompt for their
    password on the terminal."""
    files = {
        name: getattr(settings, name)
        for name in ("tls_ca_file", "tls_cert_file", "tls_key_file")
        if getattr(settings, name)
    }
    if scheme != "rediss":
        # TLS settings with a plain-text URL would connect without TLS, unnoticed.
        changed = [env_name(name) for name in files]
        if not settings.tls_check_hostname:
            changed.append("BUS_TLS_CHECK_HOSTNAME")
        if changed:
            raise SettingsError(
                f"{', '.join(changed)}: TLS settings need a rediss:// BUS_REDIS_URL "
                f"(it is {scheme}://)"
            )
        return
    if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
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
    if settings.tls_ca_file:
        try:
            context.load_verify_locations(cafile=settings.tls_ca_file)
        except (ssl.SSLError, ValueError) as exc:
            raise SettingsError(
                f"BUS_TLS_CA_FILE: {settings.tls_ca_file!r} holds no usable PEM certificate ({exc})"
            ) from None
    if settings.tls_cert_file:
        try:
            context.load_cert_chain(
                settings.tls_cert_file, settings.tls_key_file, password=_refuse_password
            )
        except _EncryptedKey:
            raise SettingsError(
                f"BUS_TLS_KEY_FILE: {settings.tls_key_file!r} is encrypted; give an "
                "unencrypted key (readable by this user only)"
            ) from None
        except ssl.SSLError as exc:
            raise SettingsError(
                f"BUS_TLS_CERT_FILE, BUS_TLS_KEY_FILE: {settings.tls_cert_file!r} and "
                f"{settings.tls_key_file!r} are not a PEM certificate and its private key "
                f"({exc})"
            ) from None


class _EncryptedKey(Exception):
    """Raised by :func:`_refuse_password`, which OpenSSL calls for an encrypted key only."""


def _refuse_password() -> bytes:
    raise _EncryptedKey
