"""Sending a producer's commands so that what surely did not run is told apart from what may have.

A message must be neither lost nor sent twice by a retry: a command that could not be written
whole never ran, and is sent again; a command whose reply was lost may have run, and is not
(:class:`~producer.errors.Unconfirmed` says so). This needs redis-py's connection-level calls
(``get_connection``, ``send_packed_command``, ``read_response``), so it lives here.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.exceptions import MovedError

from producer.connection.client import forget_routes, node_client
from producer.connection.cluster import command_key, is_stale_error
from producer.errors import Unconfirmed


def send_commands(client: redis.Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Send ``commands`` in one write on one pooled connection and read their replies,
    telling apart what surely did not run from what may have run.

    Taking a connection from the pool replaces one the server had closed (idle timeout,
    kill, restart) before anything is sent. If one command could not be written whole,
    Redis never ran it: it is sent once more on a fresh connection. A failure after the
    write raises :class:`Unconfirmed`: the reply was lost, the command may have run, and
    resending it could deliver a message twice. An error reply to a single command (a
    refusal such as OOM, BUSY or LOADING) is raised as it is: that command did not run."""
    key = command_key(commands[0])
    for attempt in (1, 2):
        # On a cluster, the pool of the primary that holds the key's slot, asked again on
        # the second attempt (a failover moves it).
        pool = node_client(client, key).connection_pool  # type: ignore[arg-type]
        conn = pool.get_connection()
        try:
            try:
                conn.send_packed_command(conn.pack_commands(commands))
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                conn.disconnect()
                forget_routes(client)
                if len(commands) > 1:  # the first ones may have been written whole
                    raise Unconfirmed(f"connection broke while sending: {exc}") from exc
                if attempt == 1:
                    continue
                raise
            replies: list[Any] = []
            try:
                for _ in commands:
                    replies.append(conn.read_response())
                return replies
            except redis.ResponseError as exc:
                if len(commands) > 1:
                    conn.disconnect()  # later replies of the batch are unread
                if is_stale_error(exc):
                    forget_routes(client)
                if (isinstance(exc, MovedError) and not replies and attempt == 1
                        and all(c[0] == "WAIT" or command_key(c) == key
                                for c in commands[1:])):  # fmt: skip
                    # On a cluster, the slot has moved (a failover): the first command was
                    # refused, and so were the others of its slot; none ran. Once more,
                    # to the slot's new primary.
                    continue
                raise
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                conn.disconnect()
                forget_routes(client)
                if isinstance(exc, redis.BusyLoadingError) and len(commands) == 1:
                    raise  # a reply, not a lost one: refused while Redis loads its data
                if not replies and _demoted(exc) and all(c[0] == "WAIT" for c in commands[1:]):
                    # Behind Sentinel: the primary was demoted and refused the write
                    # (READONLY), so it did not run: once more, to the new primary.
                    if attempt == 1:
                        continue
                    raise
                raise Unconfirmed(f"no reply after sending: {exc}") from exc
        except BaseException:
            # Interrupted (KeyboardInterrupt, gevent's GreenletExit) with replies possibly
            # unread: the connection must not go back to the pool as it is, or the next
            # command would read this one's reply as its own.
            conn.disconnect()
            raise
        finally:
            pool.release(conn)
    raise AssertionError("unreachable")


def _demoted(exc: BaseException) -> bool:
    """redis-py's Sentinel connection turns a READONLY reply into a ConnectionError."""
    return isinstance(exc.__context__, redis.ReadOnlyError)
