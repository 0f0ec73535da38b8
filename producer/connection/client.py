"""Redis clients with every timeout, keepalive and retry knob set on purpose, per role.

redis-py 8 defaults to a 5 s socket timeout, 10 silent retries with backoff, and RESP3. None of
those suits every role, so nothing here is left to a default:

``producer``   web and load-test producers: short deadlines, no redis-py retries. A pooled
               connection the server closed (idle ``timeout``, CLIENT KILL, restart) is found and
               replaced when it is taken from the pool, before anything is sent; the
               :class:`~producer.Producer` itself resends only what surely did not run (a retry
               after a lost reply would duplicate the message).
``worker``     blocking pops: read deadline ``worker_read_timeout_s`` > ``block_timeout_s`` so an
               idle wait is never cut short but a dead link is noticed; no retries (the worker's
               own loop reconnects, recovers and counts).
``subscriber`` pub/sub: errors raise at once, untouched (redis-py would otherwise reconnect and
               resubscribe behind our back before raising, even with zero retries); no redis-py
               health check (the subscriber sends its own PING and enforces the PONG deadline).
``admin``      heartbeats, stats, acks outside the hot path, tools: short deadlines, no retries.

RESP2 everywhere: in subscribed mode a PING is answered by a ``pong`` message that the
subscriber's deadline watches for.

Behind Sentinel (``BUS_SENTINELS``) every role's client finds the primary through the sentinels
when it connects, with the same options: a connection to a primary that was demoted is closed
by the sentinels' reconfiguration (or answers READONLY, which redis-py turns into a connection
error), and the next connection goes to the new primary. The sentinels are asked as
``BUS_SENTINEL_USERNAME`` / ``BUS_SENTINEL_PASSWORD`` when set (their own ACL, not the servers').

TLS (a ``rediss://`` URL) applies to the data connections of every topology: the single server,
the primaries found through the sentinels (the sentinels themselves are asked in plain text) and
every cluster node. The ``BUS_TLS_*`` settings give the CA bundle, the client certificate and
the host name check. A refused TLS session raises :class:`redis.ConnectionError` as soon as
the server's answer shows it (a handshake that gets no answer at all, as ``rediss://`` to a
plain-text port, raises :class:`redis.TimeoutError` after the role's socket timeout), its
message naming the setting to check (:func:`tls_hint`): a server certificate
that does not verify (``certificate verify failed``: ``BUS_TLS_CA_FILE``, or
``BUS_TLS_CHECK_HOSTNAME`` for a name mismatch) or a server that ends the session after the
handshake (no client certificate, or one it does not trust: ``BUS_TLS_CERT_FILE``). On a
cluster the handshake errors carry redis-py's own message only (``certificate verify
failed``...): its nodes' clients are made by :mod:`producer.connection.cluster` with redis-py's TLS
connection class.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.connection import SSLConnection, parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection, SentinelManagedSSLConnection

from producer.connection.cluster import ClusterClient
from producer.settings import Settings

ROLES = ("producer", "worker", "subscriber", "admin")

# Kernel keepalive finds a peer that vanished without a FIN (the "half-open" link) even when
# no read deadline is armed: probe after 10 s idle, every 3 s, give up after 3 misses.
_KEEPALIVE = {
    opt: val
    for opt, val in (
        (getattr(socket, "TCP_KEEPIDLE", None), 10),
        (getattr(socket, "TCP_KEEPINTVL", None), 3),
        (getattr(socket, "TCP_KEEPCNT", None), 3),
    )
    if opt is not None
}


def client_options(settings: Settings, role: str, name: str | None = None) -> dict[str, Any]:
    """The keyword arguments :func:`make_client` passes to ``redis.Redis.from_url``."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
    no_retry = Retry(NoBackoff(), 0)
    opts: dict[str, Any] = {
        "socket_connect_timeout": settings.connect_timeout_s,
        "socket_timeout": settings.socket_timeout_s,
        "socket_keepalive": True,
        "socket_keepalive_options": _KEEPALIVE,
        "retry": no_retry,
        "health_check_interval": 0,
        "protocol": 2,
        "decode_responses": False,
        "client_name": f"bus:{role}:{name}" if name else f"bus:{role}",
    }
    opts.update(tls_options(settings))
    if role == "worker":
        opts["socket_timeout"] = settings.worker_read_timeout_s
    elif role == "subscriber":
        # The subscriber's own reads set their timeout (its PING/PONG deadline); this one
        # bounds what goes through redis-py: the connect and its handshake.
        opts["socket_timeout"] = settings.pong_deadline_s
        opts["retry"] = Retry(NoBackoff(), 0, supported_errors=())
    return opts


def tls_options(settings: Settings) -> dict[str, Any]:
    """The TLS keyword arguments of a data connection: none without a ``rediss://`` URL."""
    if not settings.tls:
        return {}
    return {
        "ssl_ca_certs": settings.tls_ca_file or None,
        "ssl_certfile": settings.tls_cert_file or None,
        "ssl_keyfile": settings.tls_key_file or None,
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": settings.tls_check_hostname,
        "redis_connect_func": _on_connect_explained,
    }


_VERIFY_NAME_MISMATCH = (62, 64)  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH


def tls_hint(exc: BaseException, host: str, client_cert: bool) -> str | None:
    """What to check when ``exc`` (an :class:`ssl.SSLError`) ended a TLS connection to
    ``host``, naming the setting; None for another error. ``client_cert``: whether this client
    presented a certificate."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code in _VERIFY_NAME_MISMATCH:
            return (
                f"the server's certificate does not name {host}: connect by a name or "
                "address it has, or set BUS_TLS_CHECK_HOSTNAME=0"
            )
        return (
            "check BUS_TLS_CA_FILE: no CA of it (of the system's trust store when it is "
            "unset) signed the server's certificate"
        )
    if isinstance(exc, ssl.SSLError):
        if client_cert:
            return (
                "the server ended the TLS session: it may not trust the client "
                "certificate of BUS_TLS_CERT_FILE (check its tls-ca-cert-file)"
            )
        return (
            "the server ended the TLS session: it may require a client certificate "
            "(tls-auth-clients): set BUS_TLS_CERT_FILE and BUS_TLS_KEY_FILE"
        )
    return None


def _on_connect_explained(connection: Any) -> None:
    """redis-py's handshake after the TLS one (AUTH, CLIENT SETNAME...), whose errors say what to
    check when the server ended the TLS session: with TLS 1.3 a server that refuses the client's
    certificate (or its absence) says so after the handshake, and the client sees an SSL error,
    often a bare EOF, on its first write or read."""
    try:
        connection.on_connect()
    except redis.ConnectionError as exc:
        cause = exc.__cause__ or exc.__context__
        hint = tls_hint(cause, connection.host, bool(connection.certfile)) if cause else None
        if hint is None or isinstance(exc, redis.AuthenticationError):
            raise
        raise redis.ConnectionError(f"{exc} ({hint})") from exc


class _TlsHints:
    """A TLS connection whose handshake errors say which setting to check (:func:`tls_hint`)."""

    host: str
    certfile: str | None

    def _error_message(self, exception: BaseException) -> str:
        message: str = super()._error_message(exception)  # type: ignore[misc]
        hint = tls_hint(exception, self.host, bool(self.certfile))
        return f"{message} ({hint})" if hint else message


class TlsConnection(_TlsHints, SSLConnection):
    """redis-py's TLS connection with the hints of :func:`tls_hint`."""


class _Follow:
    """Reconnects ask the sentinels where the primary is. redis-py 8.1's SentinelManagedConnection
    does so only in ``connect()``, but a connection that broke reconnects on its next command
    through ``connect_check_health()``, to the address it had: a client holding one connection
    (the worker's) would go back to the demoted primary forever, answered READONLY each time."""

    connection_pool: Any
    _sock: Any
    host: str
    port: int

    def connect_check_health(self, check_health: bool = True,
                             retry_socket_connect: bool = True) -> None:  # fmt: skip
        if not self._sock and self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        super().connect_check_health(  # type: ignore[misc]
            check_health=check_health, retry_socket_connect=retry_socket_connect
        )


class FollowingConnection(_Follow, SentinelManagedConnection):
    """A Sentinel-managed connection that follows the primary on every reconnect."""


class FollowingSSLConnection(_Follow, _TlsHints, SentinelManagedSSLConnection):
    """The same over TLS."""


def make_client(settings: Settings, role: str, name: str | None = None) -> redis.Redis:
    """A client for ``role`` (see the module docstring); ``name`` shows in CLIENT LIST. On a
    cluster (``BUS_CLUSTER_NODES``) a :class:`~producer.connection.cluster.ClusterClient`."""
    opts = client_options(settings, role, name)
    if settings.cluster_nodes:
        url = parse_url(settings.redis_url)
        opts.update({k: v for k, v in url.items() if k not in ("host", "port", "db", "path")})
        if opts.pop("connection_class", None) is redis.SSLConnection:
            opts["ssl"] = True
        return ClusterClient(settings.cluster_addresses(), opts)
    if not settings.sentinels:
        if settings.tls:
            opts["connection_class"] = TlsConnection
        return redis.Redis.from_url(settings.redis_url, **opts)
    url = parse_url(settings.redis_url)
    for field in ("username", "password", "db"):
        if field in url:
            opts[field] = url[field]
    opts["connection_class"] = FollowingSSLConnection if settings.tls else FollowingConnection
    sentinel_opts = {
        "socket_connect_timeout": settings.connect_timeout_s,
        "socket_timeout": settings.socket_timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "protocol": 2,
    }
    if settings.sentinel_password:
        sentinel_opts["password"] = settings.sentinel_password
    if settings.sentinel_username:
        sentinel_opts["username"] = settings.sentinel_username
    sentinel = Sentinel(settings.sentinel_addresses(), sentinel_kwargs=sentinel_opts)
    return sentinel.master_for(settings.sentinel_master, **opts)


def node_client(client: redis.Redis, key: str | bytes) -> redis.Redis:
    """The client of the one server that holds ``key``: ``client`` itself, or on a cluster
    the client of the primary of ``key``'s slot (for work on one connection or one node)."""
    return client.node_for(key) if isinstance(client, ClusterClient) else client


def pinned_client(client: redis.Redis, key: str | bytes) -> redis.Redis:
    """A client of the server that holds ``key`` that keeps one connection of that server's
    pool for every command, instead of taking one from the pool for each: the pool checks
    every connection it hands out with a poll() first, which costs as much CPU as a short
    command. A link broken while idle then shows as an error on the next command, not as a
    silent replacement. It connects on first use."""
    pool = node_client(client, key).connection_pool
    return redis.Redis(connection_pool=pool, single_connection_client=True)


def forget_routes(client: redis.Redis) -> None:
    """After an error: on a cluster, read the slot map again before the next command."""
    if isinstance(client, ClusterClient):
        client.invalidate()


def drop_connections(client: redis.Redis, inuse_connections: bool = True) -> None:
    """After an error: close the client's pooled connections (every node's, on a cluster,
    whose slot map is then read again before the next command); only the idle ones with
    ``inuse_connections`` False."""
    if isinstance(client, ClusterClient):
        client.invalidate()
        client.disconnect(inuse_connections)
    else:
        client.connection_pool.disconnect(inuse_connections)
