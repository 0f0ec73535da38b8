"""The moves a worker asks the settle and reap scripts for (producer/store/lua/lib/moves.lua):
what to do with each message it holds, and how a processing list is given back.

A move is (the raw message as it is in the processing list, what to push, how); an ack pushes
nothing: its second value is empty. A tracked message's how carries its id, attempt and a note
for its record (:func:`tracked_how`).
"""

from __future__ import annotations

from producer.store.deadletters import dead_entry
from producer.store.envelope import Envelope, EnvelopeError, decode

Move = tuple[bytes, bytes, str]
ACK, RELEASE, RETRY, DEAD, DEAD_UNLISTED, CANCEL = "A", "R", "L", "D", "P", "C"


def retry_later(delay_ms: int) -> str:
    """The move that retries a message ``delay_ms`` from now, through ``bus:{q}:delayed``."""
    return f"Z{max(0, int(delay_ms))}"


def tracked_how(how: str, env: Envelope | None, note: str = "") -> str:
    """``how``, carrying what the record of a tracked message needs (see
    producer/store/lua/lib/moves.lua): its id, the attempt, and a note (the error, the reason,
    why a result was not stored)."""
    if env is None or not env.track or "\n" in env.id:
        return how
    return f"{how}\n{env.id}\n{env.attempt}\n{note}"


def give_back_move(raw: bytes) -> Move:
    """Give back unchanged a message never handed to the handler (a tracked one is pending)."""
    if b'"track"' not in raw:
        return raw, raw, RELEASE
    try:
        env = decode(raw)
    except EnvelopeError:
        return raw, raw, RELEASE
    return raw, raw, tracked_how(RELEASE, env)


def started_move(raw: bytes, queue: str, consumer: str, max_attempts: int = 0) -> Move:
    """Give back a message whose handler started and did not finish: attempt + 1 (dead when
    that was its last attempt)."""
    return plan_give_back([raw], queue, consumer, True, max_attempts, alone=True)[0]


def plan_give_back(raws: list[bytes], queue: str, consumer: str, bump: bool,
          max_attempts: int = 0, alone: bool = False,
          started: frozenset[bytes] | None = None) -> list[Move]:  # fmt: skip
    """Moves that give back a processing list: newest first, so RPUSH leaves the oldest at the
    consuming end; garbage to dead. With ``bump`` (its worker crashed, or stopped holding them):
    - a first attempt goes back with attempt + 1: which message of a batch its worker was
      handling is not known, and the others must not pay for it; dead instead at the last of
      ``max_attempts`` (0: no limit) only when ``alone`` in the list;
    - a redelivered one (attempt > 1) whose handler never started (not in ``started``, see
      :func:`producer.keys.started`) goes back unchanged: no attempt counted;
    - a redelivered one whose handler started goes back with attempt + 1, dead instead at its
      last attempt when it is the only started one (or ``alone``): surely the one that killed
      its worker. Several started ones at their last attempt each go past it, and each then
      runs alone in its worker (see consumers.worker), so the next crash names the culprit.
    ``started`` None (not known): every redelivered one counts as started, and as surely the
    culprit at its last attempt."""
    n_started = sum(1 for raw in raws if raw in started) if started is not None else 0
    moves = []
    for raw in raws:  # LRANGE order: newest (head side) first
        try:
            env = decode(raw)
        except EnvelopeError as exc:
            entry = dead_entry(raw, f"undecodable: {exc.reason}", queue=queue, consumer=consumer)
            moves.append((raw, entry, DEAD))
            continue
        ran = started is None or raw in started
        if bump and env.attempt > 1 and not ran:
            moves.append((raw, raw, tracked_how(RELEASE, env)))  # it never reached its handler
            continue
        if bump:
            note = f"worker {consumer} stopped before settling attempt {env.attempt}"
            if started is None:
                surely = alone or env.attempt > 1
            else:
                surely = alone or (ran and env.attempt > 1 and n_started == 1)
            if max_attempts and env.attempt >= max_attempts and surely:
                reason = (f"{note} (it crashed, was killed or lost Redis while the handler "
                          f"ran), its last of BUS_MAX_ATTEMPTS={max_attempts}")  # fmt: skip
                entry = dead_entry(raw, reason, queue=queue, consumer=consumer)
                moves.append((raw, entry, tracked_how(DEAD, env, reason)))
                continue
            moves.append((raw, env.next_attempt().encode(), tracked_how(RELEASE, env, note)))
        else:
            moves.append((raw, raw, tracked_how(RELEASE, env)))
    return moves
