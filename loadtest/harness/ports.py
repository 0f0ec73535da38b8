"""Free TCP ports on 127.0.0.1."""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

HOST = "127.0.0.1"
# Where the kernel picks the local ports of outgoing connections (Linux's default).
EPHEMERAL = (32768, 60999)


_handed: set[int] = set()  # never the same port twice in one process
_handing = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, never handed out before in
    this process, taken below the kernel's ephemeral range: one the kernel picked there (a
    bind to port 0) may be handed again as the local port of an outgoing connection before the
    server it was picked for binds it (a load test's gunicorn once found its port taken so)."""
    low, high = ephemeral_range()
    bottom, top = (10_000, low - 1) if low - 1 > 10_000 else (high + 1, 65_535)
    with _handing:
        for _ in range(500):
            port = random.randint(bottom, top)
            if port not in _handed and is_free(port):
                _handed.add(port)
                return port
    raise AssertionError(f"no free port between {bottom} and {top}")


def is_free(port: int) -> bool:
    """Whether ``port`` on 127.0.0.1 can be bound right now."""
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range of local ports for outgoing connections (``ip_local_port_range``)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return EPHEMERAL


def free_ports_in_a_row(n: int) -> int:
    """The first of ``n`` consecutive ports free on 127.0.0.1 (for scripts that number them so).

    Taken below the kernel's ephemeral range: inside it, the ports next to a free one are the
    ones the kernel hands to outgoing connections next, and on a busy host (a test suite
    opening thousands of connections) a run of free ones is seldom there."""
    low, high = ephemeral_range()
    top = low - n if low - n > 10_000 else 65_535 - n
    bottom = 10_000 if low - n > 10_000 else high + 1
    for _ in range(200):
        first = random.randint(bottom, top)
        if all(is_free(port) for port in range(first, first + n)):
            return first
    raise AssertionError(f"no {n} free ports in a row between {bottom} and {top + n - 1}")


class PortPicker:
    """Free loopback ports, none handed out twice (a cluster needs 12 at once)."""

    def __init__(self) -> None:
        self.taken: set[int] = set()

    def take(self) -> int:
        for _ in range(100):
            port = free_port()
            if port not in self.taken:
                self.taken.add(port)
                return port
        raise RuntimeError("no distinct free port found")
