"""The load-test report's PNG plots: a timeline per scenario, and what every plot shares (the
colours of the systems and of the faults, the legend, the figure). The outcomes and the latency
comparison of redis-bus against the baseline are in :mod:`loadtest.report.comparison`. Drawn on
Agg figures (never pyplot: no display, no global state), sized to read at 100% zoom.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

DPI = 100
# The same system has the same colour in every plot; the baseline is the warm one.
COLORS = {
    "redis-bus": "#1f77b4",
    "redis-bus at-most-once": "#9467bd",
    "redis-bus direct": "#2ca02c",
    "baseline": "#ff7f0e",
}
SPARE_COLORS = ("#8c564b", "#e377c2", "#17becf", "#7f7f7f")
PERCENTILES = ("p50", "p95", "p99")
FAULT_GREY, FAULT_ALPHA = "0.55", 0.25
LEGEND_COLUMNS, WRAPPED_COLUMNS = 5, 3  # a timeline's legend entries on one row, or per row
LONG_RUN_S, LONG_BIN_S = 300.0, 5.0  # a timeline longer than this is drawn in coarser bins
MAX_LABELLED_FAULTS = 6  # more faults than this are drawn as lines coloured by kind
FAULT_COLORS = ("#d62728", "#7f7f7f", "#9467bd", "#8c564b", "#e377c2", "#17becf")
LABEL_BOX = {"boxstyle": "round,pad=0.2", "fc": "white", "ec": "0.6", "alpha": 0.85}
Row = dict[str, Any]


def color_of(system: str) -> str:
    """The colour of a system in every plot (a stable one for a name not known here)."""
    return COLORS.get(system) or SPARE_COLORS[zlib.crc32(system.encode()) % len(SPARE_COLORS)]


def rates(row: Row, bin_s: float) -> dict[str, np.ndarray]:
    """A series row's counts per bin as rates per second; pub/sub deliveries per subscriber."""
    per = row["consumers"] if row["mode"] == "pubsub" and row["consumers"] > 0 else 1
    return {
        "accepted": np.asarray(row["accepted"], float) / bin_s,
        "delivered": np.asarray(row["delivered"], float) / bin_s / per,
        "failed": np.asarray(row["failed"], float) / bin_s,
    }


def timeline(path: Path, scenario: dict[str, Any], series: dict[str, Any], bin_s: float) -> None:
    """One panel per mode: accepted/s, delivered/s and failed sends/s per system, faults shaded;
    and, when the workers' oldest message in hand was sampled, a panel of its age. A long run
    (a soak) is drawn in bins of :data:`LONG_BIN_S`: half-second rates over half an hour would
    fill the panel solid."""
    coarse = coarser(series, bin_s)
    if coarse is not series:
        series, bin_s = coarse, LONG_BIN_S
    modes = list(dict.fromkeys([*scenario["modes"], *(r["mode"] for r in series["rows"].values())]))
    t = np.asarray(series["t"], float) + bin_s / 2  # a bin's count belongs to its middle
    x_end = max(float(t[-1] + bin_s / 2) if len(t) else 0.0, scenario["traffic_s"], 1.0)
    hands = series.get("inhand")
    panels = len(modes) + (1 if hands else 0)
    fig = new_figure(11.0, 1.6 + 3.2 * panels)
    every_axis = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    axes = every_axis[: len(modes)]
    if hands:
        _in_hand_panel(every_axis[-1], hands, scenario, x_end)
    systems: list[str] = []
    for ax, mode in zip(axes, modes, strict=True):
        rows = by_system(r for r in series["rows"].values() if r["mode"] == mode)
        if not rows:
            ax.text(0.5, 0.5, f"no {mode} messages were sent", ha="center", transform=ax.transAxes)
        peak = 1.0
        # Systems often run level with each other: the first (redis-bus) is drawn last and
        # thinnest, each one under it wider, so coinciding lines show as a line in a halo.
        for depth, r in reversed(list(enumerate(rows))):
            rt, color, lw = rates(r, bin_s), color_of(r["system"]), 1.4 + 1.8 * depth
            n = min(len(t), *(len(v) for v in rt.values()))
            x, failed = t[:n], rt["failed"][:n]
            ax.plot(x, rt["accepted"][:n], color=color, lw=lw, alpha=0.6)
            ax.plot(x, rt["delivered"][:n], color=color, lw=lw, ls=(0, (3, 1.5)))
            ax.plot(x[failed > 0], failed[failed > 0], color=color, ls="none", marker="x",
                    ms=6 + 2.5 * depth, mew=1.5)  # fmt: skip
            peak = max(peak, *(float(v[:n].max(initial=0)) for v in rt.values()))
        systems += [r["system"] for r in rows if r["system"] not in systems]
        ax.set_ylim(0, peak * 1.35)  # headroom for the fault labels
        ax.set_xlim(0, x_end)
        shade_faults(ax, scenario["faults"], x_end)
        _mark_exits(ax, [r for r in scenario["rows"] if r["mode"] == mode])
        ax.axvline(scenario["traffic_s"], color="0.35", ls=":", lw=1.2)
        late = scenario["traffic_s"] > 0.9 * x_end  # no room on the right: the label goes left
        ax.text(scenario["traffic_s"], 0.97, " traffic stops:\n drain ", fontsize=8, color="0.3",
                ha="right" if late else "left", va="top",
                transform=ax.get_xaxis_transform())  # fmt: skip
        ax.set_title(_panel_title(mode, rows), fontsize=10, loc="left")
        ax.set_ylabel("messages/s")
        ax.grid(alpha=0.3)
    every_axis[-1].set_xlabel("seconds since traffic start")
    fig.suptitle(f"{scenario['name']}: {scenario['title']}", fontsize=12, fontweight="bold")
    legend(fig, system_handles(systems), _style_handles(scenario["faults"]))
    save(fig, path)


def _in_hand_panel(ax: Axes, hands: dict[str, Any], scenario: dict[str, Any], x_end: float) -> None:
    """Per worker, the age of the oldest message in its handlers' hands, as it wrote it: a
    hanging handler climbs until the time limit (dashed) cuts it."""
    t = np.asarray(hands["t"], float)
    top = 0.0
    for i, (who, ages) in enumerate(sorted(hands["oldest_age_ms"].items())):
        y = np.asarray([np.nan if a is None else a / 1000 for a in ages], float)
        color = SPARE_COLORS[i % len(SPARE_COLORS)] if i else color_of("redis-bus")
        top = max(top, float(np.nanmax(y, initial=0.0)))
        ax.plot(t[: len(y)], y, color=color, lw=1.4, drawstyle="steps-post", label=who)
    limit_s = hands.get("limit_ms", 0) / 1000
    if limit_s:
        ax.axhline(limit_s, color="0.3", ls="--", lw=1.2)
        ax.text(0.0, limit_s, f" time limit {limit_s:g} s", fontsize=8, color="0.3", va="bottom",
                transform=ax.get_yaxis_transform())  # fmt: skip
    _mark_exits(ax, [r for r in scenario["rows"] if r["mode"] == "prodcons"])
    ends = hands.get("process_ends_s", [])
    if ends:  # where a handler ended its process: a tick at the top of the panel
        ax.plot(ends, [0.96] * len(ends), ls="none", marker="v", color="#d62728", ms=6,
                transform=ax.get_xaxis_transform(),
                label=f"a handler ended its process (x{len(ends)})")  # fmt: skip
    ax.axvline(scenario["traffic_s"], color="0.35", ls=":", lw=1.2)
    ax.set_xlim(0, x_end)
    ax.set_ylim(0, max(limit_s, top) * 1.35 or 0.1)
    ax.set_title("oldest message in each worker's handlers' hands (age as the worker wrote it, "
                 f"every {hands['every_s']:g} s)", fontsize=10, loc="left")  # fmt: skip
    ax.set_ylabel("seconds")
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, 0.9), fontsize=8,
              ncol=len(hands["oldest_age_ms"]) + bool(ends))  # under the ticks  # fmt: skip
    ax.grid(alpha=0.3)


def coarser(series: dict[str, Any], bin_s: float) -> dict[str, Any]:
    """``series`` summed into bins of :data:`LONG_BIN_S` when it spans more than
    :data:`LONG_RUN_S`; else ``series`` itself."""
    k = round(LONG_BIN_S / bin_s)
    if len(series["t"]) * bin_s <= LONG_RUN_S or k <= 1:
        return series
    n = len(series["t"]) // k * k  # whole coarse bins only

    def summed(values: list[int]) -> list[int]:
        return np.asarray(values[:n], int).reshape(-1, k).sum(axis=1).tolist()

    rows = {
        key: {**r, **{f: summed(r[f]) for f in ("accepted", "failed", "delivered")}}
        for key, r in series["rows"].items()
    }
    return {**series, "t": series["t"][:n:k], "rows": rows}


def _mark_exits(ax: Axes, rows: list[Row]) -> None:
    """A dash-dot line where a consumer process died, labelled once per system."""
    for r in rows:
        times = [e["at_s"] for e in r.get("exits", []) if e.get("at_s") is not None]
        for at in times:
            ax.axvline(at, color=color_of(r["system"]), ls="-.", lw=1.2)
        if times:
            n = len(times)
            ax.text(min(times), 0.80, f" {r['system']}: {n} consumer{'s' * (n > 1)} died ",
                    color=color_of(r["system"]), fontsize=8, ha="right", va="top",
                    transform=ax.get_xaxis_transform())  # fmt: skip


def shade_faults(ax: Axes, faults: list[dict[str, Any]], x_end: float) -> None:
    """Each fault as a labelled window or line; past :data:`MAX_LABELLED_FAULTS` (a soak's
    fault a minute) a thin line each, coloured by kind (the legend names the kinds)."""
    if len(faults) > MAX_LABELLED_FAULTS:
        colors = fault_colors(faults)
        for f in faults:
            ax.axvline(max(f["start_s"], 0.0), color=colors[_kind(f)], lw=0.9, alpha=0.8)
        return
    for i, f in enumerate(faults):
        start, end = max(f["start_s"], 0.0), f["end_s"]  # set up before traffic: label it at 0
        if end < 0 or start > x_end:
            continue
        if end > start:
            ax.axvspan(start, end, color=FAULT_GREY, alpha=FAULT_ALPHA, lw=0)
        else:  # an instant: a window would be invisible
            ax.axvline(start, color="0.25", lw=1.6)
        right = start > 0.7 * x_end  # near the right edge the label goes left of the fault
        ax.text(start, 0.97 - 0.09 * (i % 3), f" {f['label']} ", fontsize=9, bbox=LABEL_BOX,
                ha="right" if right else "left", va="top",
                transform=ax.get_xaxis_transform())  # fmt: skip


def _panel_title(mode: str, rows: list[Row]) -> str:
    if mode != "pubsub":
        return f"{mode}: messages accepted and delivered per second"
    per = ", ".join(f"{r['system']} {r['consumers']}" for r in rows)
    return f"pubsub: delivered/s per subscriber (deliveries ÷ subscribers: {per})"


def legend(fig: Figure, top: list[Artist], bottom: Sequence[Artist] = ()) -> None:
    """The figure's legend under the plots: ``top`` (the systems) over ``bottom`` (styles)."""
    # one row of systems over one row of line styles, or over rows of WRAPPED_COLUMNS when
    # they are more than LEGEND_COLUMNS (a soak's faults); matplotlib fills column by column
    wide = len(bottom) <= LEGEND_COLUMNS
    ncol = max(len(top), len(bottom) if wide else WRAPPED_COLUMNS)
    if bottom:
        blank = Patch(visible=False, label=" ")
        rows = [top, *(bottom[i : i + ncol] for i in range(0, len(bottom), ncol))]
        grid = [[*r, *[blank] * (ncol - len(r))] for r in rows]
        handles = [r[c] for c in range(ncol) for r in grid]
    else:
        handles = top
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize=9, frameon=False)


def system_handles(systems: list[str]) -> list[Artist]:
    """A legend entry per system, in its colour."""
    return [Patch(color=color_of(s), label=s) for s in systems]


def _style_handles(faults: list[dict[str, Any]]) -> list[Artist]:
    handles: list[Artist] = [
        Line2D([], [], color="0.3", lw=2, alpha=0.6, label="accepted/s (solid)"),
        Line2D([], [], color="0.3", lw=2, ls=(0, (3, 1.5)),
               label="delivered/s (dashed; pub/sub ÷ subscribers)"),
        Line2D([], [], color="0.3", ls="none", marker="x", mew=1.5, label="failed sends/s"),
    ]  # fmt: skip
    if len(faults) > MAX_LABELLED_FAULTS:
        return handles + fault_handles(faults)
    if any(f["end_s"] > f["start_s"] for f in faults):
        handles.append(Patch(label="fault window", color=FAULT_GREY, alpha=FAULT_ALPHA))
    if any(f["end_s"] <= f["start_s"] for f in faults):
        handles.append(Line2D([], [], color="0.25", lw=1.6, label="instant fault"))
    return handles


def _kind(fault: dict[str, Any]) -> str:
    return str(fault.get("kind") or fault["label"])


def fault_colors(faults: list[dict[str, Any]]) -> dict[str, str]:
    """A colour per kind of fault, in the order they first happen."""
    kinds = dict.fromkeys(_kind(f) for f in faults)
    return {k: FAULT_COLORS[i % len(FAULT_COLORS)] for i, k in enumerate(kinds)}


def fault_handles(faults: list[dict[str, Any]]) -> list[Artist]:
    """Legend entries for the faults drawn as lines coloured by kind: label and count."""
    colors = fault_colors(faults)
    handles: list[Artist] = []
    for kind, color in colors.items():
        these = [f for f in faults if _kind(f) == kind]
        label = f"{these[0]['label']} (x{len(these)})"
        handles.append(Line2D([], [], color=color, lw=1.5, label=label))
    return handles


def by_system(rows: Any) -> list[Row]:
    """``rows`` in the order of the systems' colours (redis-bus first, the baseline last)."""
    order = list(COLORS)
    return sorted(rows, key=lambda r: order.index(r["system"]) if r["system"] in order else 99)


def new_figure(width_in: float, height_in: float) -> Figure:
    """An Agg figure of that size (no pyplot)."""
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: Path) -> None:
    """Write ``fig`` as a PNG."""
    fig.savefig(path, dpi=DPI, facecolor="white")
