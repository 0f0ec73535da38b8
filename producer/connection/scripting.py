"""Running a Lua script on redis-py: the one way the bus calls one (its scripts are in
``producer/store/lua/``, named by :mod:`producer.store.scripts`).

A script runs as ``EVALSHA``; when Redis does not have it (first use, a restart, ``SCRIPT
FLUSH``, a newly promoted primary) the answer is ``NOSCRIPT``, which means it did not run, and
it is sent once as ``EVAL``, which also caches it. On a pipeline, redis-py checks and loads the
pipeline's scripts before sending it (``Pipeline.scripts``, read for ``sha`` and ``script``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.client import Pipeline
from redis.exceptions import NoScriptError

Send = Callable[[tuple[Any, ...]], Any]
Receive = Callable[[], Any]


class Script:
    """A script's text and SHA: ``script(client, keys, args)`` runs it on a client or queues
    it on a pipeline; :meth:`run` sends it through a function of one's own (the producer's
    careful send)."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.script = text  # the attribute names redis-py's pipelines read
        self.sha = hashlib.sha1(text.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"Script({self.name!r})"

    def __call__(
        self, client: redis.Redis, keys: Sequence[Any] = (), args: Sequence[Any] = ()
    ) -> Any:
        """Run on ``client``; on a pipeline, queue it (the reply comes with the others)."""
        if isinstance(client, Pipeline):
            client.scripts.add(self)  # type: ignore[arg-type]
            return client.evalsha(self.sha, len(keys), *keys, *args)
        return self.run(lambda command: client.execute_command(*command), keys, args)

    def run(self, send: Send, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        """``send`` the ``EVALSHA`` command (a tuple); on ``NOSCRIPT`` (it did not run), the
        ``EVAL`` command. The reply of the one that ran."""
        try:
            return send(("EVALSHA", self.sha, len(keys), *keys, *args))
        except NoScriptError:
            return send(("EVAL", self.script, len(keys), *keys, *args))

    def send(self, client: redis.Redis, keys: Sequence[Any] = (),
             args: Sequence[Any] = ()) -> Receive:  # fmt: skip
        """Send on ``client``'s one connection (a single-connection client) without waiting for
        the reply; the function returned reads it (on ``NOSCRIPT``, it runs the script as
        ``EVAL``, and waits). Nothing else may use that connection in between. A client with
        no connection of its own runs it now."""
        conn = client.connection
        if conn is None:
            reply = self(client, keys, args)
            return lambda: reply
        conn.send_command("EVALSHA", self.sha, len(keys), *keys, *args)

        def receive() -> Any:
            try:
                return client.parse_response(conn, "EVALSHA")
            except NoScriptError:  # it did not run
                return client.execute_command("EVAL", self.script, len(keys), *keys, *args)

        return receive
