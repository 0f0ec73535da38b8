"""The bench's http section: its checks, its rows, and a smoke run when wrk is installed."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from loadtest.bench import http, table
from loadtest.bench.common import Scale

PRODCONS = http.ENDPOINTS[0]


def figures(requests: int = 1000, status: int = 0, rps: float = 500.0, **errors: int) -> dict:
    got: dict[str, Any] = dict(requests=requests, duration_us=2_000_000, p50_us=5000, p99_us=9000,
                               max_us=12000, connect=0, read=0, write=0, status=status, timeout=0,
                               rps=rps)  # fmt: skip
    got.update(errors)
    return got


def test_check_refuses_non_2xx_socket_errors_and_missing_messages() -> None:
    http.check(PRODCONS, figures(status=5), in_redis=995)
    with pytest.raises(RuntimeError, match="non-2xx"):
        http.check(PRODCONS, figures(status=11), in_redis=2000)
    with pytest.raises(RuntimeError, match="socket errors"):
        http.check(PRODCONS, figures(read=11), in_redis=2000)
    with pytest.raises(RuntimeError, match="only 999 in Redis"):
        http.check(PRODCONS, figures(), in_redis=999)


def test_rows_compare_with_naive_and_ok() -> None:
    rates = {"POST /prodcons": 900.0, "POST /pubsub": 1000.0, "naive": 800.0, "ok": 1000.0}
    samples = {label: [figures(rps=rate)] for label, rate in rates.items()}
    rows = http.rows(samples, rounds=1, duration_s=1)
    ratios = {row.name: table.ratio(row, rows) for row in rows}
    assert ratios["POST /prodcons req/s"] == pytest.approx(900 / 800)
    assert ratios["POST /prodcons req/s vs ok"] == pytest.approx(0.9)
    assert ratios["POST /pubsub p99"] == pytest.approx(1.0)
    assert {row.section for row in rows} == {"http"}


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed (make bootstrap)")
def test_smoke_run() -> None:
    rows = http.run(Scale(smoke=True))
    by_name = {row.name: row for row in rows}
    for label in ("POST /prodcons", "POST /pubsub", "naive", "ok"):
        assert by_name[f"{label} req/s"].value > 0
        assert by_name[f"{label} p99"].value > 0
    assert table.markdown(rows, table.meta() | {"when": "now"}).count("| POST /") == 6
