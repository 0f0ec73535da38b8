"""The bench's peers section, in a smoke run: one row per worker, well formed, every job done."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from loadtest.bench import handlers, peers, table
from loadtest.bench.common import Scale


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_peers_smoke_rows_are_well_formed() -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: `make bootstrap` installs it")
    rows = peers.run(Scale(smoke=True))
    assert [r.name for r in rows] == [peers.OURS, *(p.name for p in peers.PEERS)]
    ours, *theirs = rows
    assert ours.ref is None and ours.value > 0 and ours.extra["jobs"] == 200
    for row in theirs:
        assert row.section == peers.SECTION and row.unit == "msg/s"
        assert row.ref == peers.OURS and row.value > 0
        assert row.extra["capped"] is False, row.extra  # 200 no-op jobs finish in the window
        assert 0 < row.extra["done_in_window"] < 200  # from the first poll that saw one done
        assert row.extra["version"]
        assert table.ratio(row, rows) is not None
    assert f"| {peers.OURS} |" in table.markdown(rows, table.meta())


@pytest.mark.parametrize(("section", "missing"), [(peers, "celery"), (handlers, "rq")],
                         ids=["peers", "handlers"])  # fmt: skip
def test_a_missing_peer_stops_the_section_naming_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, section: Any, missing: str
) -> None:
    real = peers.importlib.util.find_spec
    monkeypatch.setattr(peers.importlib.util, "find_spec",
                        lambda name, *a: None if name == missing else real(name, *a))  # fmt: skip
    with pytest.raises(RuntimeError, match=rf"{missing} not installed.*\.\[bench\]"):
        section.run(Scale(smoke=True))
