"""A pipeline on a cluster (:meth:`producer.connection.cluster.ClusterClient.pipeline`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis
from redis.client import Pipeline
from redis.exceptions import AskError, MovedError

from producer.connection.routing import REDIRECTS, STATS_TAG, command_key, is_stale_error

if TYPE_CHECKING:
    from producer.connection.cluster import ClusterClient


class RoutedPipeline(Pipeline):
    """A pipeline on a cluster: commands are queued as in any pipeline, then sent as one
    pipeline per node (in the order their nodes first appear) and the replies put back in
    the order of the commands. A transaction may touch one node only."""

    def __init__(self, cluster: ClusterClient, transaction: bool) -> None:
        super().__init__(None, {}, transaction, None)  # type: ignore[arg-type]
        self._cluster = cluster
        self._multi = transaction

    def reset(self) -> None:  # type: ignore[override]
        """Forget the queued commands."""
        self.command_stack = []
        self.scripts = set()
        self.watching = False
        self.explicit_transaction = False

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send the queued commands, by node; their replies in order."""
        stack, scripts = self.command_stack, self.scripts
        self.reset()
        if not stack:
            return []
        replies: list[Any] = [None] * len(stack)
        pending = list(range(len(stack)))
        refused: MovedError | None = None  # a transaction's, after its last redirect
        for _ in range(REDIRECTS):
            groups: dict[int, tuple[redis.Redis, list[int]]] = {}
            for i in pending:
                key = command_key(stack[i][0])
                node = self._cluster.node_for(STATS_TAG if key is None else key)
                groups.setdefault(id(node), (node, []))[1].append(i)
            if self._multi and len(groups) > 1:
                raise redis.exceptions.ClusterCrossSlotError(
                    "a transaction on a cluster must stay on one node"
                )
            moved: list[int] = []
            for node, indexes in groups.values():
                pipe = node.pipeline(self._multi)
                pipe.command_stack = [stack[i] for i in indexes]
                pipe.scripts = set(scripts)
                try:
                    results = pipe.execute(raise_on_error=False)
                except MovedError as exc:  # a transaction refused whole (EXECABORT)
                    self._cluster._moved(exc)
                    refused = exc
                    moved = list(indexes)  # none of it ran: all of it to the new node
                    continue
                except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
                    if is_stale_error(exc):
                        self._cluster.invalidate()
                    raise
                for i, result in zip(indexes, results, strict=True):
                    if isinstance(result, AskError) and not isinstance(result, MovedError):
                        result = self._asking(result, stack[i])
                    replies[i] = result
                    if isinstance(result, MovedError):
                        self._cluster._moved(result)
                        moved.append(i)
                    elif isinstance(result, Exception) and is_stale_error(result):
                        self._cluster.invalidate()
            if not moved:
                break
            pending = moved  # they did not run: to their new node
        if moved and refused is not None:
            raise refused
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies

    def _asking(self, ask: AskError, command: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:
        """One command of the pipeline once more, on the node its migrating slot is going to,
        after ASKING (-ASK: the key is not on the source any more); its reply or error."""
        args, options = command
        pipe = self._cluster._node(ask.node_addr).pipeline(transaction=False)
        pipe.execute_command("ASKING")
        pipe.execute_command(*args, **options)
        return pipe.execute(raise_on_error=False)[1]
