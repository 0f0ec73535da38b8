"""The bench's flood publisher: real pub/sub envelopes packed as RESP PUBLISH commands before
the clock starts, sent on one raw socket with a chunk in flight while the previous chunk's replies
are read, so the publisher is never the bottleneck."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

from producer.store import envelope

CHUNK = 1000  # PUBLISH commands per write


def envelopes(n: int, src: str, first_seq: int = 1) -> list[bytes]:
    """``n`` encoded pub/sub envelopes from ``src``, ``seq`` counting from ``first_seq``."""
    return [envelope.new(i, src=src, seq=first_seq + i, mode="pubsub").encode() for i in range(n)]


def packed(
    channel_key: str, bodies: Sequence[bytes], chunk: int = CHUNK
) -> list[tuple[int, bytes]]:
    """The PUBLISH commands for ``bodies`` as RESP, ``chunk`` to a write: (count, bytes)."""
    head = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n" % (len(channel_key), channel_key.encode())
    out = []
    for start in range(0, len(bodies), chunk):
        part = bodies[start : start + chunk]
        out.append((len(part), b"".join(head + b"$%d\r\n%s\r\n" % (len(b), b) for b in part)))
    return out


@dataclass
class Published:
    """What a flood reported: how many PUBLISHes, how many reached nobody, how long it took."""

    count: int = 0
    zero: int = 0
    elapsed_s: float = 0.0


def publish(port: int, chunks: Iterable[tuple[int, bytes]], rate: float = 0.0) -> Published:
    """Send the packed chunks on one raw connection, one chunk in flight ahead of the replies
    read; ``rate`` (msg/s, 0: as fast as Redis takes them) paces the chunks. Every reply is
    ``:0`` or ``:1`` (one subscriber at most), four bytes each."""
    done = Published()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        pending = 0
        for count, data in chunks:
            if rate:
                due = started + done.count / rate
                if due > time.monotonic():
                    time.sleep(due - time.monotonic())
            sock.sendall(data)
            if pending:
                done.zero += _read_replies(sock, pending)
            pending = count
            done.count += count
        if pending:
            done.zero += _read_replies(sock, pending)
    done.elapsed_s = time.monotonic() - started
    return done


def _read_replies(sock: socket.socket, count: int) -> int:
    """Read ``count`` integer replies; return how many were 0."""
    want = 4 * count
    buf = bytearray()
    while len(buf) < want:
        got = sock.recv(want - len(buf))
        if not got:
            raise ConnectionError("redis-server closed the publisher's connection")
        buf += got
    if buf.count(b":") != count:
        raise RuntimeError(f"unexpected PUBLISH replies: {bytes(buf[:80])!r}")
    return buf.count(b":0\r\n")


def numsub(client: redis.Redis, channel_key: str) -> int:
    """Subscribers of ``channel_key`` now (PUBSUB NUMSUB)."""
    return int(client.pubsub_numsub(channel_key)[0][1])
