"""TCP proxies in front of a real redis-server, for faults a stopped server cannot make."""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import threading
from collections.abc import Iterator

from loadtest.harness.server import RedisServer


class SplicingProxy:
    """A TCP proxy on a free loopback port in front of ``upstream_port``: each client connection
    gets its own upstream one, a per-connection :class:`threading.Event` (what a fault sets for
    that connection), a thread running :meth:`_commands` and one running :meth:`_replies`."""

    name = "test-proxy"

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, name=self.name, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [client, upstream]
            flag = threading.Event()
            threading.Thread(target=self._commands, args=(client, upstream, flag),
                             daemon=True).start()  # fmt: skip
            threading.Thread(target=self._replies, args=(upstream, client, flag),
                             daemon=True).start()  # fmt: skip

    def _commands(self, client: socket.socket, upstream: socket.socket,
                  flag: threading.Event) -> None:  # fmt: skip
        """Forward the client's bytes to Redis until either side closes."""
        try:
            while data := client.recv(65536):
                upstream.sendall(data)
        except OSError:
            pass
        _close(client, upstream)

    def _replies(self, upstream: socket.socket, client: socket.socket,
                 flag: threading.Event) -> None:  # fmt: skip
        raise NotImplementedError

    def close(self) -> None:
        self._listener.close()
        _close(*self._sockets)


class ReplyDroppingProxy(SplicingProxy):
    """While armed it forwards the client's commands but, instead of forwarding an integer
    reply (PUBLISH's receiver count), closes the client's connection: Redis ran the command,
    the client sees "Connection closed by server"."""

    def __init__(self, upstream_port: int) -> None:
        self.armed = threading.Event()
        self.dropped = 0
        super().__init__(upstream_port)

    def _replies(self, upstream: socket.socket, client: socket.socket,
                 flag: threading.Event) -> None:  # fmt: skip
        try:
            while data := upstream.recv(65536):
                if self.armed.is_set() and data.startswith(b":"):
                    self.dropped += 1
                    break
                client.sendall(data)
        except OSError:
            pass
        _close(client, upstream)


class ScriptFaultProxy(SplicingProxy):
    """Breaks the first command carrying one script's SHA.

    ``mode="cut"``: that command never reaches Redis, the client's connection is closed.
    ``mode="drop-reply"``: Redis runs it, but its reply never reaches the client (closed).
    The SHA must already be in Redis's script cache for "drop-reply" (else the reply dropped
    is NOSCRIPT, and the script never ran)."""

    name = "test-fault-proxy"

    def __init__(self, upstream_port: int, script: str, mode: str) -> None:
        self.sha = hashlib.sha1(script.encode()).hexdigest().encode()
        self.mode = mode
        self.fired = threading.Event()
        super().__init__(upstream_port)

    def _commands(self, client: socket.socket, upstream: socket.socket,
                  flag: threading.Event) -> None:  # fmt: skip
        try:
            while data := client.recv(65536):
                if not self.fired.is_set() and self.sha in data:
                    self.fired.set()
                    if self.mode == "cut":
                        break
                    flag.set()  # drop the next reply
                upstream.sendall(data)
        except OSError:
            pass
        _close(client, upstream)

    def _replies(self, upstream: socket.socket, client: socket.socket,
                 flag: threading.Event) -> None:  # fmt: skip
        try:
            while data := upstream.recv(65536):
                if flag.is_set():
                    break
                client.sendall(data)
        except OSError:
            pass
        _close(client, upstream)


class ScriptReplyHolder(SplicingProxy):
    """Forwards every command but, once a connection has sent a script (EVAL/EVALSHA) that
    Redis runs, never forwards that connection's replies again: Redis ran the script, the client
    hears nothing and times out. (A NOSCRIPT answer, the script not cached yet, goes through:
    the client sends it again.)"""

    name = "test-holder"
    SCRIPT = re.compile(rb"\*\d+\r\n\$(?:4|7)\r\n(?:EVAL|EVALSHA)\r\n", re.IGNORECASE)

    def __init__(self, upstream_port: int) -> None:
        self.held = 0
        super().__init__(upstream_port)

    def _commands(self, client: socket.socket, upstream: socket.socket,
                  flag: threading.Event) -> None:  # fmt: skip
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if self.SCRIPT.search(data):
                    flag.set()  # hold its replies
                upstream.sendall(data)

    def _replies(self, upstream: socket.socket, client: socket.socket,
                 flag: threading.Event) -> None:  # fmt: skip
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if flag.is_set() and not data.startswith(b"-NOSCRIPT"):
                    self.held += 1
                    continue
                flag.clear()
                client.sendall(data)


def _close(*sockets: socket.socket) -> None:
    for s in sockets:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()


@contextlib.contextmanager
def proxy(server: RedisServer, script: str, mode: str) -> Iterator[ScriptFaultProxy]:
    p = ScriptFaultProxy(server.port, script, mode)
    try:
        yield p
    finally:
        p.close()
