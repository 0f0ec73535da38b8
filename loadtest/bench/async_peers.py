"""arq and SAQ, the ``async def`` peers of the handlers section, in a venv of their own.

arq 0.28 pins redis-py below 6 and SAQ's ``redis`` extra below 8, while the project runs on
redis-py 8: they cannot share ``.venv``. :func:`python` builds ``.venv-peers-async/`` once (pip,
the pinned :data:`REQUIREMENTS`) and reuses it while its stamp matches them; each worker and
each enqueue runs as a process of that venv's Python with the checkout on ``PYTHONPATH``
(:mod:`loadtest.bench.async_tasks` holds their side). ``python -m loadtest.bench.async_peers``
builds it by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from loadtest.bench import async_tasks
from loadtest.bench.backlog import Enqueue, Peer
from loadtest.bench.common import ROOT, clean_env
from loadtest.harness.server import RedisServer

VENV = ROOT / ".venv-peers-async"
# SAQ 0.26.4 imports typing_extensions without declaring it.
REQUIREMENTS = ("arq==0.28.0", "saq[redis]==0.26.4", "typing_extensions")
STAMP = VENV / "requirements.txt"
BUILD = ".venv/bin/python -m loadtest.bench.async_peers"
TASKS = async_tasks.__name__


def _bin(name: str) -> Path:
    return VENV / "bin" / name


def python() -> Path:
    """The peers' venv's Python, the venv built first if it is missing or stale; an error naming
    how to build it by hand if that fails."""
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if _bin("python").exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return _bin("python")
    steps = [[sys.executable, "-m", "venv", "--clear", str(VENV)],
             [str(_bin("python")), "-m", "pip", "install", "--quiet", *REQUIREMENTS]]  # fmt: skip
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"bench: arq and SAQ are not installed (their venv "
                               f"{VENV.name}/ could not be built: {' '.join(step)} exited "
                               f"{done.returncode}: {done.stderr.strip()[-500:]}); install "
                               f"them: {BUILD}")  # fmt: skip
    STAMP.write_text(wanted)
    return _bin("python")


def versions() -> dict[str, str]:
    """arq's and SAQ's versions, as installed in their venv."""
    code = "import importlib.metadata as m; print(m.version('arq'), m.version('saq'))"
    out = subprocess.run([str(python()), "-c", code], capture_output=True, text=True, check=True)
    arq, saq = out.stdout.split()
    return {"arq": arq, "saq": saq}


def _env(url: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return clean_env(PEER_REDIS_URL=url, PYTHONPATH=path)


def _enqueue(peer: str) -> Enqueue:
    def enqueue(server: RedisServer, db: int, n: int) -> None:
        subprocess.run([str(python()), "-m", TASKS, "enqueue", peer, str(n)], cwd=ROOT,
                       env=_env(server.db_url(db)), check=True)  # fmt: skip

    return enqueue


ARQ = Peer(f"arq {TASKS}.ArqSettings (max_jobs = {async_tasks.CONCURRENCY})", "arq",
           async_tasks.ARQ_BACKLOG, _enqueue("arq"),
           lambda url: [str(python()), "-m", "arq", f"{TASKS}.ArqSettings"])  # fmt: skip
SAQ = Peer(f"SAQ {TASKS}.saq_settings (concurrency = {async_tasks.CONCURRENCY})", "saq",
           async_tasks.SAQ_BACKLOG, _enqueue("saq"),
           lambda url: [str(python()), "-m", "saq", f"{TASKS}.saq_settings"])  # fmt: skip


if __name__ == "__main__":
    print(f"{python()}: {versions()}")
