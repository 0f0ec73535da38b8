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
error), and the next connection goes to the new primary.
"""

from __future__ import annotations

import socket
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection, SentinelManagedSSLConnection

from producer.cluster import ClusterClient
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
    if role == "worker":
        opts["socket_timeout"] = settings.worker_read_timeout_s
    elif role == "subscriber":
        # The subscriber's own reads set their timeout (its PING/PONG deadline); this one
        # bounds what goes through redis-py: the connect and its handshake.
        opts["socket_timeout"] = settings.pong_deadline_s
        opts["retry"] = Retry(NoBackoff(), 0, supported_errors=())
    return opts


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


class FollowingSSLConnection(_Follow, SentinelManagedSSLConnection):
    """The same over TLS."""


def make_client(settings: Settings, role: str, name: str | None = None) -> redis.Redis:
    """A client for ``role`` (see the module docstring); ``name`` shows in CLIENT LIST. On a
    cluster (``BUS_CLUSTER_NODES``) a :class:`~producer.cluster.ClusterClient`."""
    opts = client_options(settings, role, name)
    if settings.cluster_nodes:
        url = parse_url(settings.redis_url)
        opts.update({k: v for k, v in url.items() if k not in ("host", "port", "db", "path")})
        if opts.pop("connection_class", None) is redis.SSLConnection:
            opts["ssl"] = True
        return ClusterClient(settings.cluster_addresses(), opts)
    if not settings.sentinels:
        return redis.Redis.from_url(settings.redis_url, **opts)
    url = parse_url(settings.redis_url)
    for field in ("username", "password", "db"):
        if field in url:
            opts[field] = url[field]
    tls = url.get("connection_class") is redis.SSLConnection
    opts["connection_class"] = FollowingSSLConnection if tls else FollowingConnection
    sentinel_opts = {
        "socket_connect_timeout": settings.connect_timeout_s,
        "socket_timeout": settings.socket_timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "protocol": 2,
    }
    sentinel = Sentinel(settings.sentinel_addresses(), sentinel_kwargs=sentinel_opts)
    return sentinel.master_for(settings.sentinel_master, **opts)


def node_client(client: redis.Redis, key: str | bytes) -> redis.Redis:
    """The client of the one server that holds ``key``: ``client`` itself, or on a cluster
    the client of the primary of ``key``'s slot (for work on one connection or one node)."""
    return client.node_for(key) if isinstance(client, ClusterClient) else client


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
