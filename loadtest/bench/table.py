"""The bench's table: rows grouped by section, each with its ratio to its reference row, printed
as Markdown and written beside the JSON of every row."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtest.bench.common import Result


def ratio(row: Result, rows: Sequence[Result]) -> float | None:
    """``row``'s value over its reference's (inverted when lower is better), or None."""
    if row.ref is None:
        return None
    for other in rows:
        if other.section == row.section and other.name == row.ref:
            if not other.value or not row.value:
                return None
            return row.value / other.value if row.higher_is_better else other.value / row.value
    raise ValueError(f"{row.section}: {row.name!r} refers to a missing row {row.ref!r}")


def _figure(value: float, unit: str) -> str:
    if unit in ("ms", "MiB") or value < 100:
        return f"{value:,.2f} {unit}"
    return f"{value:,.0f} {unit}"


def markdown(rows: Sequence[Result], meta: dict[str, Any]) -> str:
    """The table, one block per section in the order the rows came."""
    lines = [f"# make bench, {meta['when']}", "", f"{meta['machine']}", ""]
    sections: list[str] = []
    for row in rows:
        if row.section not in sections:
            sections.append(row.section)
    for section in sections:
        lines += [f"## {section}", "", "| what | figure | vs | ratio | target |",
                  "|---|---:|---|---:|---|"]  # fmt: skip
        for row in (r for r in rows if r.section == section):
            r = ratio(row, rows)
            shown = "" if r is None else f"{r:.2f}x"
            lines.append(f"| {row.name} | {_figure(row.value, row.unit)} | {row.ref or ''} "
                         f"| {shown} | {row.target} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def meta() -> dict[str, Any]:
    import os

    return {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.platform()}",
    }


def write(rows: Sequence[Result], out_dir: Path, info: dict[str, Any]) -> tuple[Path, Path]:
    """``bench-<timestamp>.json`` and ``.md`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    as_json = out_dir / f"bench-{stamp}.json"
    as_md = out_dir / f"bench-{stamp}.md"
    doc = {"meta": info, "rows": [dict(r.as_dict(), ratio=ratio(r, rows)) for r in rows]}
    as_json.write_text(json.dumps(doc, indent=1) + "\n")
    as_md.write_text(markdown(rows, info))
    return as_json, as_md
