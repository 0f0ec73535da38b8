"""Settings: one frozen object built from ``BUS_*`` environment variables.

Only entry points (the web app factory, the daemon CLI, the load-test runner) call
:meth:`Settings.from_env`; everything else receives the object.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from producer.errors import SettingsError as SettingsError  # the error its checks raise
from producer.settings.checks import check
from producer.settings.env import env_name, parse_value

log = logging.getLogger(__name__)
T = TypeVar("T")


def setting(default: T, meaning: str) -> T:
    """A field of :class:`Settings`: its default, and what it means (the configuration page of
    the docs is made from these: docs/configuration.md)."""
    return dataclasses.field(default=default, metadata={"meaning": meaning})


@dataclass(frozen=True)
class Settings:
    """Every knob of the bus, with units in the names. Defaults suit a laptop. Each field is
    the variable ``BUS_<FIELD>``; ``dataclasses.fields(Settings)[i].metadata["meaning"]`` says
    what it does."""

    redis_url: str = setting(
        "redis://127.0.0.1:6379/0",
        "Redis to use; `rediss://` for TLS, `redis://user:password@host` for ACLs (`make run` "
        "sets it to its own Redis on port 6399 unless you set it)",
    )
    sentinels: tuple[str, ...] = setting(
        (),
        "comma list of `host:port` sentinels: every role finds the primary named "
        "`BUS_SENTINEL_MASTER` through them and follows a failover; `BUS_REDIS_URL` then gives "
        "only the user, password and db",
    )
    sentinel_master: str = setting(
        "mymaster",
        "the primary's name in the sentinels' configuration",
    )
    sentinel_username: str = setting(
        "",
        "the user the sentinels themselves know (their ACL; empty: none), with "
        "`BUS_SENTINEL_PASSWORD`; the servers' user and password stay in `BUS_REDIS_URL`",
    )
    sentinel_password: str = setting(
        "",
        "the password the sentinels ask for (of `BUS_SENTINEL_USERNAME`, or their `requirepass`"
        " without a user); empty: they are asked without logging in",
    )
    cluster_nodes: tuple[str, ...] = setting(
        (),
        "comma list of `host:port` nodes of a Redis Cluster: every role routes each queue to its "
        "shard (see docs/cluster.md); `BUS_REDIS_URL` then gives only the user, password and TLS;"
        " not with `BUS_SENTINELS`",
    )
    pubsub_mode: str = setting(
        "auto",
        "`classic` (`PUBLISH`, `SUBSCRIBE`, patterns), `sharded` (`SPUBLISH`, `SSUBSCRIBE`: Redis"
        " 7; no patterns) or `auto`: sharded on a cluster, classic otherwise",
    )
    tls_ca_file: str = setting(
        "",
        "with a `rediss://` URL: the PEM CA bundle that verifies the Redis servers' certificates "
        "(none: the system's trust store)",
    )
    tls_cert_file: str = setting(
        "",
        "this client's certificate (PEM), for servers with `tls-auth-clients yes`; set both it "
        "and `BUS_TLS_KEY_FILE` or neither",
    )
    tls_key_file: str = setting(
        "",
        "this client's unencrypted key (PEM), for servers with `tls-auth-clients yes`; set both "
        "it and `BUS_TLS_CERT_FILE` or neither",
    )
    tls_check_hostname: bool = setting(
        True,
        "the server's certificate must name the host or IP address of the URL (`0`: only the CA "
        "is checked)",
    )
    wait_replicas: int = setting(
        0,
        "producers `WAIT` (in the same round trip) until this many replicas have each push; fewer"
        ' within `BUS_WAIT_TIMEOUT_S` answers 503 `"outcome": "unknown"` (the `Producer` raises '
        "`NotReplicated`). 0: no wait, and a failover can lose the pushes the replicas had not "
        "received yet",
    )
    wait_timeout_s: float = setting(
        1.0,
        "how long a push waits for `BUS_WAIT_REPLICAS`",
    )
    queues: tuple[str, ...] = setting(
        ("default",),
        "comma list: the queues the web accepts (others answer 404)",
    )
    channels: tuple[str, ...] = setting(
        ("default",),
        "comma list: the channels the web accepts (others answer 404)",
    )
    delivery: str = setting(
        "at-least-once",
        "worker delivery mode, or `at-most-once` (also `--delivery`)",
    )
    connect_timeout_s: float = setting(
        2.0,
        "TCP connect deadline, every role",
    )
    socket_timeout_s: float = setting(
        1.0,
        "read deadline of short commands (producers, stats, heartbeats)",
    )
    block_timeout_s: float = setting(
        5.0,
        "how long one blocking pop waits on the server",
    )
    worker_read_timeout_s: float = setting(
        0.0,
        "worker's socket read deadline; must exceed the block timeout (0: the block timeout + 2)",
    )
    health_check_interval_s: float = setting(
        5.0,
        "subscriber: PING after this much silence",
    )
    pong_deadline_s: float = setting(
        3.0,
        "subscriber: no PONG by then means the link is dead",
    )
    backoff_base_s: float = setting(
        0.1,
        "reconnect backoff: first ceiling (full jitter)",
    )
    backoff_cap_s: float = setting(
        5.0,
        "reconnect backoff: largest ceiling",
    )
    heartbeat_interval_s: float = setting(
        2.0,
        "worker heartbeat into `bus:{q}:consumers`",
    )
    heartbeat_ttl_s: float = setting(
        15.0,
        "a worker silent this long is shown dead; must exceed 2 intervals",
    )
    stats_interval_s: float = setting(
        0.5,
        "how often each process writes its stats hash",
    )
    stats_ttl_s: float = setting(
        120.0,
        "stats of a process that stopped writing expire after this",
    )
    reaper_interval_s: float = setting(
        5.0,
        "how often each worker looks for expired workers to reap",
    )
    mover_interval_s: float = setting(
        0.5,
        "how often each worker makes due delayed messages pending (the lateness bound) and "
        "fires its queue's periodic schedules",
    )
    schedule_file: str = setting(
        "",
        "a TOML file of periodic schedules (cron or every_s; each with its queue, payload and "
        "options): the workers of each schedule's queue fire it, one message per tick "
        "(docs/schedules.md); empty: none",
    )
    schedule_missed: str = setting(
        "latest",
        "the ticks of a schedule that passed while no worker of its queue ran: `latest` sends "
        "one message for the latest, `all` one for each (the last 1000), `none` none",
    )
    max_attempts: int = setting(
        5,
        "deliveries of a failing message before it is dead-lettered",
    )
    retry_backoff_s: float = setting(
        0.0,
        "a failed message is retried this long after the failure, doubled per attempt (0: at "
        "once, at the back of the line)",
    )
    retry_backoff_cap_s: float = setting(
        300.0,
        "the longest retry backoff",
    )
    batch_size: int = setting(
        100,
        "most messages a worker claims at once under a backlog; it holds at most three such "
        "claims beyond its handlers' slots (one at-most-once, where a crash can lose them and "
        "what its handlers hold)",
    )
    concurrency: int = setting(
        8,
        "messages a worker has in its handlers' hands at once, per queue (also `--concurrency`): "
        "a pool of that many threads for a plain handler, as many tasks on one event loop for "
        "an `async def` one",
    )
    handler_timeout_s: float = setting(
        180.0,
        "a handler still running this long after it started has failed its attempt (`timed "
        "out`): retried with the usual backoff, dead-lettered at `BUS_MAX_ATTEMPTS`; a "
        "message's own `timeout_s` replaces it (at most 604800, 7 days)",
    )
    stop_timeout_s: float = setting(
        8.0,
        "on SIGTERM, how long a worker waits for the handlers in hand to finish before it exits "
        "anyway (what they held is recovered as after a crash); below Docker's 10 s stop grace",
    )
    dead_max: int = setting(
        100_000,
        "dead letters kept per queue (and per channel); past it the oldest are trimmed and "
        "counted in `bus:{q}:dead:dropped`; 0: no cap",
    )
    max_payload_bytes: int = setting(
        65536,
        "largest request body the web accepts (413 above)",
    )
    max_queue_depth: int = setting(
        0,
        "producers refuse a message that would take a queue past this many pending messages (the "
        "web: 429; `Producer`: `QueueFull`), checked and pushed in one step; 0: no limit",
    )
    track_queues: tuple[str, ...] = setting(
        (),
        "comma list of queues whose every message is tracked (`*`: all); otherwise a message is "
        'tracked when sent with `"track": true`',
    )
    result_ttl_s: float = setting(
        86400.0,
        "a tracked message's record expires this long after its last change",
    )
    idempotency_window_s: float = setting(
        3600.0,
        "how long a push's idempotency key is kept: a push with the same key within it pushes "
        "nothing and gets the first one's answer (each key holds its message meanwhile)",
    )
    result_max_bytes: int = setting(
        65536,
        "the largest handler result (as JSON) a record stores; a larger one is not stored and "
        "`result_error` says why",
    )
    log_level: str = setting(
        "INFO",
        "daemons' log level (also `--log-level`)",
    )
    web_bind: str = setting(
        "127.0.0.1:8000",
        "gunicorn bind address",
    )
    web_workers: int = setting(
        4,
        "gunicorn worker processes (sync workers; see docs/performance.md)",
    )
    api_token: str = setting(
        "",
        "the token `POST /prodcons`, `POST /pubsub` and the dead letters' requeue require as "
        "`Authorization: Bearer <token>` (at least 16 characters); the seed-style `GET`s are then"
        " off. Without it, keep the web on loopback (see docs/security.md)",
    )

    def __repr__(self) -> str:
        """Every setting, with the URL's password and the API token masked."""
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        shown["redis_url"] = self.redis_url_redacted
        for secret in ("api_token", "sentinel_password"):
            if getattr(self, secret):
                shown[secret] = "***"
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
