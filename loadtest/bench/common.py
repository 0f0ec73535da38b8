"""What every bench section shares: result rows, how long and how often it waits, processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from producer import keys

ROOT = Path(__file__).resolve().parent.parent.parent
PYTHON = sys.executable
WAIT_S = 300.0  # bound on a wait that no other bound is given
POLL_S = 0.005  # how often a wait polls, unless told (the end of a drain is timed by it)


@dataclass
class Result:
    """One measured figure. ``ref`` names the row of the same section it is compared to (the
    table prints value / ref's value); ``higher_is_better`` orients that ratio; ``target``
    states the goal in words, when there is one; ``extra`` keeps details for the JSON."""

    section: str
    name: str
    value: float
    unit: str
    ref: str | None = None
    higher_is_better: bool = True
    target: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Scale:
    """How big each section's run is: the full bench, or a smoke run of seconds."""

    smoke: bool = False

    def n(self, full: int, smoke: int) -> int:
        return smoke if self.smoke else full

    def s(self, full: float, smoke: float) -> float:
        return smoke if self.smoke else full


def registered(client: redis.Redis, queue: str, name: str) -> bool:
    """Whether worker ``name`` of ``queue`` has registered (its entry in the queue's consumers)."""
    return client.zscore(keys.consumers(queue), name) is not None


def clean_env(**bus: str) -> dict[str, str]:
    """The environment for a child: ours without any ``BUS_*``, plus ``bus``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    env.update(bus)
    return env


def spawn(args: Sequence[str], env: dict[str, str] | None = None, quiet: bool = True,
          cwd: Path = ROOT) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start a child in its own session (so stopping it stops its children)."""
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(list(args), env=env, cwd=cwd, stdout=out, stderr=out,
                            start_new_session=True)  # fmt: skip


def rss_kib(pid: int) -> int:
    """A process's resident set, KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
