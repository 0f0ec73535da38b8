"""The handler the load test gives redis-bus's daemons:
``--handler loadtest.ledger.handlers:record``.

It does the simulated work (:class:`loadtest.ledger.records.Work`), then writes a ``got`` line to
the ledger (:mod:`loadtest.ledger.records`), so a line means the handler finished. With
``LOADTEST_RECORD_START=1`` it also writes a ``start`` line first. A message whose payload
asks for a fate (:func:`loadtest.ledger.records.fate_of`) gets a ``doomed`` line instead of the
work, and then its handler never returns (``hang``) or ends its process (``die``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from loadtest.ledger import records
from producer import Envelope


@dataclass
class _Recorder:
    ledger: records.Ledger
    who: str
    work: records.Work
    mark_start: bool

    @classmethod
    def from_env(cls) -> _Recorder:
        ledger = records.Ledger.from_env()
        if ledger is None:
            raise RuntimeError(f"{records.ENV_FILE} is not set: this handler has no ledger")
        who = os.environ.get(records.ENV_WHO, str(os.getpid()))
        return cls(ledger, who, records.Work.from_env(), os.environ.get(records.ENV_START) == "1")


_recorder: _Recorder | None = None


def record(env: Envelope) -> None:
    """Handle one message of redis-bus: the simulated work, then one ledger line."""
    global _recorder
    rec = _recorder = _recorder or _Recorder.from_env()
    lid = records.lid_of(env.payload)
    if rec.mark_start:
        rec.ledger.write(k="start", who=rec.who, lid=lid, t=records.now())
    fate = records.fate_of(env.payload)
    if fate is not None:
        _meet(rec, fate, lid, env.attempt)
        return  # the late end of a hang, long after its worker gave up on it: no "got" line
    rec.work.do()
    rec.ledger.write(
        k="got",
        sys="bus",
        mode=env.mode,
        who=rec.who,
        lid=lid,
        id=env.id,
        src=env.src,
        seq=env.seq,
        att=env.attempt,
        t=records.now(),
    )


def _meet(rec: _Recorder, fate: str, lid: str | None, attempt: int) -> None:
    """Write the ``doomed`` line, then hang far past any time limit, or end the process."""
    rec.ledger.write(k="doomed", who=rec.who, lid=lid, fate=fate, att=attempt, t=records.now())
    if fate == "die":
        os._exit(records.EXIT_DIE)  # no cleanup, no settle: as a segfault or an OOM kill would
    time.sleep(records.HANG_S)  # in C: the worker's time limit cannot interrupt it
