"""A subscribed connection read in bulk: every whole RESP2 reply that one ``recv`` brought.

redis-py's ``get_message`` parses one reply per call through several layers (the retry
wrapper, ``can_read``, its pure-Python parser, ``handle_message``); under a flood that was half
of the subscriber's time. Here a connection redis-py opened (connect, AUTH, TLS, CLIENT SETNAME,
RESP2) is taken over: its socket is read up to 64 KiB at a time and split into replies in one
pass. In subscribed mode every reply is an array of bulk strings and integers
(``message``, ``pmessage``, ``subscribe``, ``pong``...), or an error.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import InvalidResponse

# As much as redis-py reads at once: what a slow subscriber holds in its own memory, beyond
# Redis's reach (client-output-buffer-limit), stays what it was with get_message.
RECV_BYTES = 1 << 16
Reply = Sequence[Any]  # bytes, int or None items
_MESSAGE = b"*3\r\n$7\r\nmessage\r\n$"  # 18 bytes, then the channel's length


class SubscribedSocket:
    """The socket of one redis-py connection, written with packed commands and read in bulk.
    Socket errors raise :class:`redis.ConnectionError`."""

    def __init__(self, conn: redis.connection.Connection,
                 pool: redis.ConnectionPool | None = None) -> None:  # fmt: skip
        sock = getattr(conn, "_sock", None)
        if sock is None:
            raise redis.ConnectionError("the connection is not open")
        self._conn = conn
        self._pool = pool
        self._sock: socket.socket = sock
        self._rest = b""
        self._timeout_s: float | None = None

    @classmethod
    def open(cls, node: redis.Redis) -> SubscribedSocket:
        """A connection of ``node``'s pool, connected as the role's options say (AUTH, TLS,
        CLIENT SETNAME, RESP2), taken over; :meth:`close` gives it back."""
        pool = node.connection_pool
        conn = pool.get_connection()
        try:
            return cls(conn, pool)
        except BaseException:
            conn.disconnect()
            pool.release(conn)
            raise

    def close(self) -> None:
        """Close the connection and give it back to its pool (which opens a new one next)."""
        self._conn.disconnect()
        if self._pool is not None:
            self._pool.release(self._conn)

    @property
    def address(self) -> str:
        """host:port of the server it is connected to."""
        return f"{getattr(self._conn, 'host', '?')}:{getattr(self._conn, 'port', '?')}"

    def fileno(self) -> int:
        """The socket's descriptor (for select)."""
        return self._sock.fileno()

    def send(self, *args: str | bytes) -> None:
        """Send one command (SUBSCRIBE, PSUBSCRIBE, PING)."""
        try:
            for part in self._conn.pack_command(*args):
                self._sock.sendall(part)
        except OSError as exc:
            raise redis.ConnectionError(f"error writing to the subscribed socket: {exc}") from None

    def read(self, timeout_s: float) -> list[Reply] | None:
        """The whole replies that arrive within ``timeout_s``: None if no byte came at all,
        ``[]`` if bytes came but no whole reply yet (the link is alive, a reply is long)."""
        try:
            if timeout_s != self._timeout_s:  # a system call each time: only on a change
                self._sock.settimeout(timeout_s)
                self._timeout_s = timeout_s
            # A long reply in pieces: each read at least as long as what waits, so the
            # copies add up to a few times its size, not its size squared over 64 KiB.
            data = self._sock.recv(max(RECV_BYTES, len(self._rest)))
        except TimeoutError:  # socket.timeout is TimeoutError
            return None
        except OSError as exc:
            raise redis.ConnectionError(f"error reading the subscribed socket: {exc}") from None
        if not data:
            raise redis.ConnectionError("Connection closed by server.")
        buf = self._rest + data if self._rest else data
        replies, used = split_replies(buf)
        self._rest = buf[used:]
        return replies


def split_replies(buf: bytes) -> tuple[list[Reply], int]:
    """The whole replies at the start of ``buf``, and where the unfinished rest begins.
    Arrays of bulk strings and integers, simple strings, and errors (a
    :class:`redis.ResponseError` as the reply's only item)."""
    replies: list[Reply] = []
    find = buf.find
    size = len(buf)
    pos = 0
    same = b"\0"  # the head of the last message up to its data's length, and its channel
    channel = b""
    while pos < size:
        if buf.startswith(same, pos):  # the same channel as the message before: shortest
            data = find(b"\r\n", pos + len(same)) + 2
            if data < 2:
                break
            length = int(buf[pos + len(same) : data - 2])
            if length >= 0:
                if data + length + 2 > size:
                    break
                replies.append((b"message", channel, buf[data : data + length]))
                pos = data + length + 2
                continue
        if buf.startswith(_MESSAGE, pos):  # most of a flood: a shorter way through
            end = find(b"\r\n", pos + 18)
            if end < 0:
                break
            channel_end = end + 2 + int(buf[pos + 18 : end])
            data = find(b"\r\n", channel_end + 3) + 2
            if data < 2:
                break
            length = int(buf[channel_end + 3 : data - 2])
            if length >= 0:  # a null message is Redis's to never send; left to the long way
                if data + length + 2 > size:
                    break
                channel = buf[end + 2 : channel_end]
                same = buf[pos : channel_end + 3]
                replies.append((b"message", channel, buf[data : data + length]))
                pos = data + length + 2
                continue
        start = pos
        end = find(b"\r\n", pos)
        if end < 0:
            break
        kind = buf[pos]
        if kind == 42:  # '*' an array
            items: list[Any] = []
            pos = end + 2
            for _ in range(int(buf[start + 1 : end])):
                end = find(b"\r\n", pos)
                if end < 0:
                    break
                if buf[pos] == 36:  # '$' a bulk string
                    length = int(buf[pos + 1 : end])
                    if length < 0:
                        items.append(None)
                        pos = end + 2
                        continue
                    pos = end + 4 + length
                    if pos > size:
                        break
                    items.append(buf[end + 2 : pos - 2])
                elif buf[pos] == 58:  # ':' an integer
                    items.append(int(buf[pos + 1 : end]))
                    pos = end + 2
                else:
                    raise InvalidResponse(f"unexpected reply item {buf[pos : end + 2]!r}")
            else:
                replies.append(items)
                continue
            return replies, start
        elif kind == 43:  # '+' a simple string
            replies.append([buf[pos + 1 : end]])
            pos = end + 2
        elif kind == 45:  # '-' an error: raised by the reader of the replies, in its turn
            replies.append([redis.ResponseError(buf[pos + 1 : end].decode("utf-8", "replace"))])
            pos = end + 2
        else:
            raise InvalidResponse(f"unexpected reply {buf[pos : end + 2]!r}")
    return replies, pos
