"""Free TCP ports on 127.0.0.1."""

from __future__ import annotations

import socket

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def is_free(port: int) -> bool:
    """Whether ``port`` on 127.0.0.1 can be bound right now."""
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_ports_in_a_row(n: int) -> int:
    """The first of ``n`` consecutive ports free on 127.0.0.1 (for scripts that number them so)."""
    for _ in range(100):
        first = free_port()
        if all(is_free(port) for port in range(first + 1, first + n)):
            return first
    raise AssertionError(f"no {n} free ports in a row")


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
