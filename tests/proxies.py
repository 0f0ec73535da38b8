"""TCP proxies in front of a real redis-server, for faults a stopped server cannot make."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
from collections.abc import Iterator

from loadtest.harness.server import RedisServer


class ReplyDroppingProxy:
    """A TCP proxy in front of a real redis-server. While armed it forwards the client's
    commands but, instead of forwarding an integer reply (PUBLISH's receiver count), closes the
    client's connection: Redis ran the command, the client sees "Connection closed by server"."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.armed = threading.Event()
        self.dropped = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, name="test-proxy", daemon=True).start()

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
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._replies, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            s.close()

    def _replies(self, upstream: socket.socket, client: socket.socket) -> None:
        try:
            while data := upstream.recv(65536):
                if self.armed.is_set() and data.startswith(b":"):
                    self.dropped += 1
                    break
                client.sendall(data)
        except OSError:
            pass
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._listener.close()
        for s in self._sockets:
            s.close()


class ScriptFaultProxy:
    """A TCP proxy in front of Redis that breaks the first command carrying one script's SHA.

    ``mode="cut"``: that command never reaches Redis, the client's connection is closed.
    ``mode="drop-reply"``: Redis runs it, but its reply never reaches the client (closed).
    The SHA must already be in Redis's script cache for "drop-reply" (else the reply dropped
    is NOSCRIPT, and the script never ran)."""

    def __init__(self, upstream_port: int, script: str, mode: str) -> None:
        self.upstream_port = upstream_port
        self.sha = hashlib.sha1(script.encode()).hexdigest().encode()
        self.mode = mode
        self.fired = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, name="test-fault-proxy", daemon=True).start()

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
            drop_next_reply = threading.Event()
            threading.Thread(target=self._commands, args=(client, upstream, drop_next_reply),
                             daemon=True).start()  # fmt: skip
            threading.Thread(target=self._replies, args=(upstream, client, drop_next_reply),
                             daemon=True).start()  # fmt: skip

    def _commands(self, client: socket.socket, upstream: socket.socket,
                  drop_next_reply: threading.Event) -> None:  # fmt: skip
        try:
            while data := client.recv(65536):
                if not self.fired.is_set() and self.sha in data:
                    self.fired.set()
                    if self.mode == "cut":
                        break
                    drop_next_reply.set()
                upstream.sendall(data)
        except OSError:
            pass
        _close(client, upstream)

    @staticmethod
    def _replies(upstream: socket.socket, client: socket.socket,
                 drop_next_reply: threading.Event) -> None:  # fmt: skip
        try:
            while data := upstream.recv(65536):
                if drop_next_reply.is_set():
                    break
                client.sendall(data)
        except OSError:
            pass
        _close(client, upstream)

    def close(self) -> None:
        self._listener.close()
        _close(*self._sockets)


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
