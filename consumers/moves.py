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
ACK, RELEASE, RETRY, DEAD, DEAD_UNLISTED = "A", "R", "L", "D", "P"


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
          max_attempts: int = 0, alone: bool = False) -> list[Move]:  # fmt: skip
    """Moves that give back a processing list: newest first, so RPUSH leaves the oldest at the
    consuming end; with attempt + 1 if ``bump``; garbage to dead. Dead-lettered instead, when
    that attempt was its last of ``max_attempts`` (0: no limit) and it was surely the one its
    worker was handling: ``alone`` in the list, or redelivered (claimed alone, see
    producer/store/lua/lib/claim.lua).
    A first attempt in a batch goes back with attempt + 1 even then: which message of the batch
    its worker was handling is not known, and the others must not pay for it."""
    moves = []
    for raw in raws:  # LRANGE order: newest (head side) first
        try:
            env = decode(raw)
        except EnvelopeError as exc:
            entry = dead_entry(raw, f"undecodable: {exc.reason}", queue=queue, consumer=consumer)
            moves.append((raw, entry, DEAD))
            continue
        if bump:
            note = f"worker {consumer} stopped before settling attempt {env.attempt}"
            if max_attempts and env.attempt >= max_attempts and (alone or env.attempt > 1):
                reason = (f"{note} (it crashed, was killed or lost Redis while the handler "
                          f"ran), its last of BUS_MAX_ATTEMPTS={max_attempts}")  # fmt: skip
                entry = dead_entry(raw, reason, queue=queue, consumer=consumer)
                moves.append((raw, entry, tracked_how(DEAD, env, reason)))
                continue
            moves.append((raw, env.next_attempt().encode(), tracked_how(RELEASE, env, note)))
        else:
            moves.append((raw, raw, tracked_how(RELEASE, env)))
    return moves
