"""The report's comparison plots of redis-bus against the baseline: the outcomes of every
scenario (:func:`outcomes`) and the latency without faults (:func:`latency`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter

from loadtest.report import fmt, plots

Row = dict[str, Any]


def outcomes(path: Path, scenarios: list[dict[str, Any]]) -> bool:
    """Per scenario and mode, a bar per system: delivered %, lost, duplicated, stranded; False
    (no file) without rows."""
    groups = [(f"{sc['name']}\n{mode}", rows) for sc in scenarios for mode, rows in _by_mode(sc)]
    if not groups:
        return False
    ys: list[float] = []
    centers: list[float] = []
    rows: list[Row] = []
    pos = 0.0
    for _, members in groups:
        ys += [pos + i for i in range(len(members))]
        centers.append(pos + (len(members) - 1) / 2)
        rows += members
        pos += len(members) + 0.8  # a gap between scenarios
    fig = plots.new_figure(14.0, 1.8 + 0.3 * len(rows) + 0.25 * len(groups))
    axes = fig.subplots(1, 4, sharey=True)
    panels: list[tuple[str, Callable[[Row], float], bool]] = [
        ("delivered, % of expected\n(higher is better)", _delivered_pct, False),
        ("lost\n(lower is better)", lambda r: r["lost"], True),
        ("duplicated\n(lower is better)", lambda r: r["duplicated"], True),
        ("stranded in Redis after the drain\n(lower is better)", lambda r: r["stranded"], True),
    ]
    for ax, (title, value, counts) in zip(axes, panels, strict=True):
        values = [value(r) for r in rows]
        ax.barh(
            ys, np.nan_to_num(values), height=0.8, color=[plots.color_of(r["system"]) for r in rows]
        )
        for y, v, r in zip(ys, values, rows, strict=True):
            text = fmt.count(v) if counts else fmt.percent(r["delivered"], r["expected"])
            bad = v > 0 if counts else v < 100
            ax.annotate(text, (0 if np.isnan(v) else v, y), xytext=(3, 0), va="center",
                        textcoords="offset points", fontsize=8,
                        fontweight="bold" if bad else "normal")  # fmt: skip
        if counts:  # symlog: 0, 1 and thousands all read on one axis
            ax.set_xscale("symlog", linthresh=1)
            ax.set_xlim(0, max([10.0, *values]) * 6)
            ax.set_xlabel("messages (symlog scale)")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt.count(v)))
        else:
            ax.set_xlim(0, 130)
            ax.set_xticks([0, 25, 50, 75, 100])
            ax.set_xlabel("%")
        for i, (_, members) in enumerate(groups):
            if i % 2 == 0:  # bands carry the eye across the four panels
                ax.axhspan(centers[i] - len(members) / 2, centers[i] + len(members) / 2,
                           color="0.93", zorder=0)  # fmt: skip
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(centers, [label for label, _ in groups])
    axes[0].invert_yaxis()  # the first scenario on top, as in the report (shared by all panels)
    fig.suptitle("Outcomes per scenario: redis-bus against the baseline", fontweight="bold")
    systems = list(dict.fromkeys(r["system"] for r in plots.by_system(rows)))
    plots.legend(fig, plots.system_handles(systems))
    plots.save(fig, path)
    return True


def latency(path: Path, scenarios: list[dict[str, Any]]) -> bool:
    """HTTP and end-to-end p50/p95/p99 per mode and system; False (no file) without data."""
    groups = [
        (sc["name"], mode, rows)
        for sc in scenarios
        for mode, rows in _by_mode(sc)
        if any(r["http_ms"] or r["e2e_ms"] for r in rows)
    ]
    groups.sort(key=lambda g: g[1])  # the panels of one mode side by side (a stable sort)
    if not groups:
        return False
    fig = plots.new_figure(max(7.0, 4.0 * len(groups)), 8.0)
    axes = fig.subplots(2, len(groups), squeeze=False)
    for k, (key, kind) in enumerate((("http_ms", "HTTP"), ("e2e_ms", "end-to-end"))):
        values = [
            r[key][p] for *_, rows in groups for r in rows if r[key] for p in plots.PERCENTILES
        ]
        low, high = min(values, default=1.0), max(values, default=1.0)
        log = high / max(low, 1e-3) >= 30  # orders of magnitude apart: a linear axis hides p50
        for col, (name, mode, rows) in enumerate(groups):
            ax = axes[k, col]
            _latency_bars(ax, rows, key)
            if log:
                ax.set_yscale("log")
                ax.set_ylim(max(low, 1e-3) / 2, high * 6)
            else:
                ax.set_ylim(0, high * 1.25)
            ax.set_title(f"{kind}: {mode} ({name})", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
        axes[k, 0].set_ylabel(f"{kind} latency, ms" + (" (log scale)" if log else ""))
    fig.suptitle("Latency without faults (lower is better)", fontweight="bold")
    systems = list(dict.fromkeys(r["system"] for *_, rows in groups for r in rows))
    plots.legend(fig, plots.system_handles(systems))
    plots.save(fig, path)
    return True


def _latency_bars(ax: Axes, rows: list[Row], key: str) -> None:
    width = 0.8 / len(rows)
    x = np.arange(len(plots.PERCENTILES))
    for i, r in enumerate(rows):
        offset = x - 0.4 + width * (i + 0.5)
        if r[key] is None:
            for xi in offset:
                ax.text(xi, 0.02, "no data", rotation=90, ha="center", va="bottom", fontsize=8,
                        color="0.4", transform=ax.get_xaxis_transform())  # fmt: skip
            continue
        values = [r[key][p] for p in plots.PERCENTILES]
        bars = ax.bar(offset, values, width=width * 0.95, color=plots.color_of(r["system"]))
        ax.bar_label(bars, [fmt.ms(v) for v in values], fontsize=8, padding=2,
                     rotation=90 if len(rows) > 2 else 0)  # fmt: skip
    ax.set_xticks(x, list(plots.PERCENTILES))
    ax.set_xlim(-0.5, len(plots.PERCENTILES) - 0.5)  # also where a "no data" stands in for a bar


def _delivered_pct(r: Row) -> float:
    return 100 * r["delivered"] / r["expected"] if r["expected"] else float("nan")


def _by_mode(sc: dict[str, Any]) -> list[tuple[str, list[Row]]]:
    # the declared modes first, then any a row has that the list forgot; a mode without rows
    # has nothing to compare
    modes = dict.fromkeys([*sc["modes"], *(r["mode"] for r in sc["rows"])])
    groups = [(m, plots.by_system(r for r in sc["rows"] if r["mode"] == m)) for m in modes]
    return [(m, rows) for m, rows in groups if rows]
