"""The gap counter with several producers interleaved, and with more of them than it keeps."""

from __future__ import annotations

import pytest

from consumers import gaps
from consumers.gaps import GapCounter


def test_interleaved_producers_are_counted_apart() -> None:
    """Runs from one producer, then another, then back: each stream keeps its own count."""
    g = GapCounter()
    verdicts = [
        g.observe(src, "c", seq)
        for src, seq in [("a", 1), ("a", 2), ("b", 10), ("b", 11), ("a", 3), ("a", 5),
                         ("b", 13), ("b", 12), ("a", 5), ("b", 14), ("a", 4)]
    ]  # fmt: skip
    assert [v.lost for v in verdicts] == [0, 0, 0, 0, 0, 1, 1, -1, 0, 0, -1]
    assert [v.duplicate for v in verdicts].count(True) == 1 and verdicts[8].duplicate
    assert [i for i, v in enumerate(verdicts) if v.out_of_order] == [7, 10]
    assert g.observe("a", "other", 7).lost == 0  # the same producer on another channel: new


def test_the_least_recently_heard_producer_is_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_STREAMS the oldest stream goes; heard again, it starts a new baseline. The one
    heard last is never the one forgotten."""
    monkeypatch.setattr(gaps, "MAX_STREAMS", 3)
    g = GapCounter()
    for src in "abc":
        g.observe(src, "c", 1)
    g.observe("a", "c", 2)  # a is now the most recent; b the least
    g.observe("d", "c", 1)  # b is forgotten
    assert g.observe("b", "c", 50).lost == 0  # a new baseline, not 48 lost (c is forgotten)
    assert g.observe("a", "c", 4).lost == 1  # a was kept
    assert g.observe("a", "c", 5).lost == 0
    assert g.observe("d", "c", 2).lost == 0  # d was kept
