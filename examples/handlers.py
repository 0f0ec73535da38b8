"""The worker's side of the example: ``render(env, ctx)`` draws a thumbnail in steps.

Run it with ``python -m consumers worker --queue renders --handler examples.handlers:render``.
A job's payload is ``{"name": "cat", "size": 64}``: it becomes ``<EXAMPLE_OUT>/cat-64.pgm``, a
``size`` x ``size`` grey image (binary PGM: any image viewer opens it) whose pattern depends on
the name. The work is split into :data:`STEPS` steps, each sleeping ``EXAMPLE_STEP_S`` seconds
(default 0.1) so that progress can be watched; each step reports it to the message's record.

Settings (environment, read at each call so a test can change them):

``EXAMPLE_OUT``     the output directory (default ``examples/out``, relative to the worker's
                    working directory); created when missing
``EXAMPLE_STEP_S``  seconds of pretend work per step (default 0.1; 0 for none)
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumers.handlers import Reject
from consumers.tracking import Context
from producer import Envelope

STEPS = 5
MIN_SIZE, MAX_SIZE = 8, 512
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # a file name: no "/", no "..", no surprises
DEFAULT_OUT = os.path.join("examples", "out")


class BadJob(Reject):
    """A payload that is not a render job: it can never succeed, so the worker dead-letters it
    at once with this message (a :class:`consumers.handlers.Reject`), without retrying it."""


@dataclass(frozen=True)
class Job:
    """A validated render job."""

    name: str
    size: int

    @property
    def file_name(self) -> str:
        return f"{self.name}-{self.size}.pgm"


def parse_job(payload: Any) -> Job:
    """The job in ``payload``, or :class:`BadJob` saying what is wrong. The web app calls it
    too, to refuse a bad request with a 400 before anything is pushed; the handler checks
    again because any producer (another app, ``POST /prodcons`` on the bus) may push to the
    queue."""
    if not isinstance(payload, dict):
        raise BadJob(f"a render job is a JSON object, got {type(payload).__name__}")
    unknown = sorted(set(payload) - {"name", "size"})
    if unknown:
        raise BadJob(f"unknown field(s) {', '.join(map(repr, unknown))}: expected name and size")
    name, size = payload.get("name"), payload.get("size")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BadJob(f"'name' must be 1 to 64 letters, digits, '_' or '-', got {name!r}")
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise BadJob(f"'size' must be an integer from {MIN_SIZE} to {MAX_SIZE}, got {size!r}")
    return Job(name, size)


def out_dir() -> Path:
    return Path(os.environ.get("EXAMPLE_OUT") or DEFAULT_OUT)


def step_s() -> float:
    return float(os.environ.get("EXAMPLE_STEP_S") or 0.1)


def render(env: Envelope, ctx: Context) -> dict[str, Any]:
    """Draw the thumbnail of ``env.payload``, reporting progress after each step; the result
    stored in a tracked message's record is ``{"path": ..., "bytes": ...}``."""
    job = parse_job(env.payload)
    header = f"P5\n{job.size} {job.size}\n255\n".encode("ascii")
    seed = zlib.crc32(job.name.encode())
    rows: list[bytes] = []
    for step in range(STEPS):
        first, last = job.size * step // STEPS, job.size * (step + 1) // STEPS
        rows.extend(_row(job.size, y, seed) for y in range(first, last))
        time.sleep(step_s())  # the slow part of a real renderer
        ctx.report_progress((step + 1) / STEPS, f"step {step + 1} of {STEPS}")
    data = header + b"".join(rows)
    # The bus delivers at least once: a worker that dies after this write but before its ack
    # has the message delivered again (to itself or another worker). The output is a pure
    # function of the payload and goes to a path named by it, written to a temporary file and
    # renamed over the target, so a second run replaces the file with the same bytes and no
    # reader ever sees half an image.
    directory = out_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / job.file_name
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{job.file_name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would hide it from other users
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"path": str(path.resolve()), "bytes": len(data)}


def _row(size: int, y: int, seed: int) -> bytes:
    """Row ``y`` of the image: rings around a centre that the name's checksum picks."""
    cx, cy = seed % size, (seed >> 8) % size
    return bytes(((x - cx) ** 2 + (y - cy) ** 2 + seed) % 256 for x in range(size))
