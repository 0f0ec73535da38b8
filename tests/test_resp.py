"""Splitting a subscribed connection's bytes into replies: whole ones out, the rest kept."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from redis.exceptions import InvalidResponse

from producer.connection.resp import split_replies

FRAMES = [
    b"*3\r\n$9\r\nsubscribe\r\n$12\r\nbus:ch:flood\r\n:1\r\n",
    b'*3\r\n$7\r\nmessage\r\n$12\r\nbus:ch:flood\r\n$7\r\n{"v":1}\r\n',
    b"*3\r\n$7\r\nmessage\r\n$12\r\nbus:ch:flood\r\n$4\r\na\r\nb\r\n",  # CRLF inside the data
    b"*4\r\n$8\r\npmessage\r\n$8\r\nbus:ch:*\r\n$9\r\nbus:ch:eu\r\n$3\r\nabc\r\n",
    b"*2\r\n$4\r\npong\r\n$0\r\n\r\n",
    b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$0\r\n\r\n",
    b"-ERR something\r\n",
    b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$-1\r\n",
    b"*3\r\n$7\r\nmessage\r\n$9\r\nbus:ch:eu\r\n$2\r\nhi\r\n",
    b"*3\r\n$7\r\nmessage\r\n$12\r\nbus:ch:flood\r\n$2\r\nho\r\n",
]
EXPECTED: list[list[Any]] = [
    [b"subscribe", b"bus:ch:flood", 1],
    [b"message", b"bus:ch:flood", b'{"v":1}'],
    [b"message", b"bus:ch:flood", b"a\r\nb"],
    [b"pmessage", b"bus:ch:*", b"bus:ch:eu", b"abc"],
    [b"pong", b""],
    [b"message", b"c", b""],
    ["ERR something"],
    [b"message", b"c", None],
    [b"message", b"bus:ch:eu", b"hi"],
    [b"message", b"bus:ch:flood", b"ho"],
]


def plain(replies: list[Any]) -> list[list[Any]]:
    """Replies as lists, an error as its message."""
    return [[str(x) if isinstance(x, redis.ResponseError) else x for x in r] for r in replies]


def test_every_kind_of_reply_is_split_out() -> None:
    data = b"".join(FRAMES)
    replies, used = split_replies(data)
    assert used == len(data)
    assert plain(replies) == EXPECTED


def test_a_reply_cut_anywhere_waits_for_its_rest() -> None:
    """Whatever byte a read ends on, what is whole comes out and the rest is parsed once the
    remaining bytes arrive: the same replies as in one piece."""
    data = b"".join(FRAMES)
    for cut in range(len(data) + 1):
        first, used = split_replies(data[:cut])
        assert used <= cut
        second, rest = split_replies(data[used:])
        assert used + rest == len(data), cut
        assert plain(first + second) == EXPECTED, cut


def test_a_flood_of_one_channel_keeps_every_body() -> None:
    bodies = [b"x" * n for n in range(300)]
    data = b"".join(
        b"*3\r\n$7\r\nmessage\r\n$3\r\nbus\r\n$%d\r\n%s\r\n" % (len(b), b) for b in bodies
    )
    replies, used = split_replies(data)
    assert used == len(data)
    assert [r[2] for r in replies] == bodies
    assert {(r[0], r[1]) for r in replies} == {(b"message", b"bus")}


def test_what_is_not_resp_is_refused() -> None:
    with pytest.raises(InvalidResponse):
        split_replies(b"HTTP/1.1 400 Bad Request\r\n")
    with pytest.raises(InvalidResponse):
        split_replies(b"*1\r\n%2\r\n")
