"""The handler the load test gives redis-bus's daemons:
``--handler loadtest.ledger.handlers:record``.

It does the simulated work (:class:`loadtest.ledger.records.Work`), then writes a ``got`` line to
the ledger (:mod:`loadtest.ledger.records`), so a line means the handler finished. With
``LOADTEST_RECORD_START=1`` it also writes a ``start`` line first.
"""

from __future__ import annotations

import os
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
