"""Exact accounting of a pub/sub stream from the producers' sequence numbers.

Per (producer ``src``, channel) it keeps the highest ``seq`` seen and the numbers skipped below
it. A jump counts the skipped numbers as lost; one of them arriving late turns a loss into an
out-of-order delivery; a number seen twice is a duplicate. The first message from a producer
sets the baseline (what it sent before we listened was never ours to receive). A message
without ``src`` and ``seq`` (``""`` and 0: the wire format makes them optional) is left out.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

MAX_STREAMS = 10_000  # producers tracked at once; the least recently heard are forgotten
MAX_MISSING = 100_000  # skipped numbers remembered per stream (for late arrivals)


@dataclass(slots=True)
class _Stream:
    highest: int
    missing: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class Verdict:
    """How one message changed the counts."""

    lost: int = 0  # may be negative: a late arrival cancels one counted loss
    duplicate: bool = False
    out_of_order: bool = False


NOTHING = Verdict()  # the usual verdict, shared: a next in sequence, or nothing to count
DUPLICATE = Verdict(duplicate=True)
LATE = Verdict(lost=-1, out_of_order=True)


class GapCounter:
    """Feed it every (src, channel, seq) received; it says what each one means."""

    def __init__(self) -> None:
        self._streams: OrderedDict[tuple[str, str], _Stream] = OrderedDict()
        self._last: tuple[str, str, _Stream] | None = None  # the stream heard last (at the end)

    def observe(self, src: str, channel: str, seq: int) -> Verdict:
        """Account for one received message (one without src and seq changes nothing)."""
        if not src or seq < 1:
            return NOTHING  # nothing to count it against, and not a repeat of the last one
        last = self._last
        if last is not None and last[0] == src and last[1] == channel:
            stream = last[2]  # a run from one producer: already the most recent, no lookup
        else:
            found = self._find(src, channel, seq)
            if found is None:
                return NOTHING
            stream = found
        if seq == stream.highest + 1:  # the usual case, first and cheapest
            stream.highest = seq
            return NOTHING
        if seq > stream.highest:
            skipped = seq - stream.highest - 1
            if len(stream.missing) + skipped <= MAX_MISSING:
                stream.missing.update(range(stream.highest + 1, seq))
            stream.highest = seq
            return Verdict(lost=skipped)
        if seq in stream.missing:
            stream.missing.discard(seq)
            return LATE
        return DUPLICATE

    def _find(self, src: str, channel: str, seq: int) -> _Stream | None:
        """The stream of (src, channel), now the most recent; None for a new one, which
        ``seq`` starts (and the least recently heard is forgotten if there are too many)."""
        key = (src, channel)
        streams = self._streams
        stream = streams.get(key)
        if stream is None:
            stream = streams[key] = _Stream(highest=seq)
            if len(streams) > MAX_STREAMS:
                streams.popitem(last=False)
            self._last = (src, channel, stream)
            return None
        streams.move_to_end(key)
        self._last = (src, channel, stream)
        return stream
