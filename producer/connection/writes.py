"""Whether an operation of several commands may have written (for the web's 503 "outcome")."""

from __future__ import annotations

from typing import Any

import redis

# Commands that cannot change the data; anything else (scripts, pipelines) may write.
READS = frozenset(("LRANGE", "LLEN", "LINDEX", "SCRIPT LOAD", "PING", "EXISTS", "TYPE"))


class WriteTracker(redis.Redis):
    """A client on another client's pool that notes what its commands may have done.

    ``unsure`` turns true when a command that may write was issued and its reply never came
    (it may have run); ``wrote`` when one returned (it ran). Until either is true, a failure
    means that nothing was changed.
    """

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(connection_pool=client.connection_pool)
        self.unsure = False
        self.wrote = False

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Run one command as redis-py does, noting whether it may have written."""
        if str(args[0]).upper() in READS:
            return super().execute_command(*args, **options)
        try:
            result = super().execute_command(*args, **options)
        except redis.BusyLoadingError:
            raise  # an error reply: refused, nothing ran
        except (redis.ConnectionError, redis.TimeoutError):
            self.unsure = True
            raise
        self.wrote = True
        return result

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        """A pipeline, counted as a possible write as soon as it exists (it is not tracked)."""
        self.unsure = True
        return super().pipeline(transaction, shard_hint)
