"""Logging set-up for entry points: one line per record, to stderr."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)-7s %(name)s[%(process)d]: %(message)s"


def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger once; library modules only call ``logging.getLogger``."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    logging.basicConfig(level=numeric, format=FORMAT, stream=sys.stderr, force=True)
    # redis-py logs each retry at WARNING; our own loops already say what happened.
    logging.getLogger("redis").setLevel(max(numeric, logging.ERROR))
