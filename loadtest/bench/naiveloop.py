"""The naive consumer loops the seed articles show, as reference processes for the latency
section: ``python -m loadtest.bench.naiveloop brpop|blmove <redis-url> <queue-key>``.

Each message is the project's envelope; the loop reads it with ``json.loads`` and notes its
latency as :mod:`loadtest.bench.stamp` does. Runs until killed.
"""

from __future__ import annotations

import json
import sys

import redis

from loadtest.bench.stamp import note


def main() -> None:
    how, url, key = sys.argv[1:4]
    client = redis.Redis.from_url(url)
    processing = key + ":naive-processing"
    while True:
        if how == "brpop":
            popped = client.brpop([key], 1)
            if popped:
                note(json.loads(popped[1])["payload"])
        else:
            raw = client.blmove(key, processing, 1, "RIGHT", "LEFT")
            if raw is not None:
                note(json.loads(raw)["payload"])
                client.lrem(processing, -1, raw)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
