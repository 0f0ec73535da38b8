"""The memory part of a soak's report: a table of every process's RSS and Redis's memory with
their growth per minute, and a plot of the samples (see :mod:`loadtest.runner.memwatch`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from loadtest.report import fmt, plots

COLUMNS = (
    "process", "what it is", "pid", "RSS at start, MiB", "after warm-up", "at end", "max",
    "growth, KiB/min", "second half, KiB/min",
)  # fmt: skip
LINE_STYLES = ("-", "--", "-.", ":")


def section(sc: dict[str, Any], png: str | None) -> str:
    """The "Memory" subsection of a scenario that sampled it."""
    mem = sc["memory"]
    fit_from = mem["fit_from_s"]
    rows = [_cells(p["name"], p["role"], p.get("pid"), p) for p in _ordered(mem["processes"])]
    for key, label in (("used_memory", "used_memory"), ("used_memory_rss", "used_memory_rss")):
        rows.append(_cells(f"Redis {label}", "INFO memory", None, mem["redis"][key]))
    timeout = sc.get("redis_timeout_s")
    lines = [
        "### Memory",
        "",
        f"Sampled every {fmt.seconds(mem['every_s'])} s ({fmt.count(mem['samples'])} samples) "
        "from the start of the traffic to its end: the RSS of every process the runner started "
        "(gunicorn's workers as `web/1`...: a worker gunicorn replaced would be a new line) and "
        "Redis's `INFO memory`. Growth is the slope of a least-squares line through the samples "
        f"from {fmt.moment(fit_from)} s on (the warm-up before it is left out), in KiB a minute; "
        "the second half is the same fit over the last half of that window: growth that levels "
        "off shows there as a figure near zero. A restarted Redis reloads the same data, so its "
        "`used_memory` compares across restarts; its `used_memory_rss` is a new process's."
        + (f" Redis's `timeout` was {timeout} s." if timeout else ""),
        "",
        _table(rows),
    ]
    if png:
        lines += ["", f"![Memory of every process over the run of {sc['name']}]({png})"]
    return "\n".join(lines)


def _cells(name: str, role: str, pid: int | None, f: dict[str, Any]) -> list[str]:
    def mib(key: str) -> str:
        value = f.get(key)
        return fmt.DASH if value is None else f"{value:,.2f}"

    def growth(key: str) -> str:
        value = f.get(key)
        return fmt.DASH if value is None else f"{value:+,.1f}"

    return [f"`{name}`", role, fmt.DASH if pid is None else str(pid), mib("start_mib"),
            mib("warm_mib"), mib("end_mib"), mib("max_mib"), growth("growth_kib_per_min"),
            growth("late_growth_kib_per_min")]  # fmt: skip


def _table(rows: list[list[str]]) -> str:
    align = ["---" if i < 3 else "---:" for i in range(len(COLUMNS))]
    out = ["| " + " | ".join(COLUMNS) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


def _ordered(procs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """redis-bus's processes first, then the baseline's, then the rest; by name within."""

    def rank(p: dict[str, Any]) -> tuple[int, str]:
        role = p.get("role", "")
        return (0 if role.startswith("redis-bus") else 1 if role.startswith("baseline") else 2,
                p["name"])  # fmt: skip

    return sorted(procs, key=rank)


def plot(path: Path, sc: dict[str, Any], series: dict[str, Any]) -> bool:
    """Three panels over time: the RSS growth of redis-bus's processes, of the baseline's (and
    locust's), and Redis's memory; faults as lines. False (no file) without samples."""
    t = np.asarray(series["t"], float)
    if len(t) < 2:
        return False
    roles = {p["name"]: p for p in sc["memory"]["processes"]}
    groups: dict[str, list[str]] = {"redis-bus": [], "baseline": [], "other": []}
    for name in sorted(series["rss_kib"]):
        role = roles.get(name, {}).get("role", "")
        groups["redis-bus" if role.startswith("redis-bus") else
               "baseline" if role.startswith("baseline") else "other"].append(name)  # fmt: skip
    panels = [(title, names) for title, names in (
        ("redis-bus processes: RSS growth since the traffic started, MiB", groups["redis-bus"]),
        ("baseline processes: RSS growth since the traffic started, MiB", groups["baseline"]),
        ("the load generator: RSS growth since the traffic started, MiB", groups["other"]),
    ) if names]  # fmt: skip
    fig = plots.new_figure(13.0, 2.0 + 3.0 * (len(panels) + 1))
    axes = fig.subplots(len(panels) + 1, 1, sharex=True, squeeze=False)[:, 0]
    x_end = max(float(t[-1]), 1.0)
    fit_from = sc["memory"]["fit_from_s"]
    for ax, (title, names) in zip(axes, panels, strict=False):
        for i, name in enumerate(names):
            values = _column(series["rss_kib"][name])
            start = values[~np.isnan(values)][:1]
            if not len(start):
                continue
            growth = roles.get(name, {}).get("growth_kib_per_min")
            label = f"{name}: {start[0] / 1024:.1f} MiB at start" + (
                f", {growth:+.0f} KiB/min" if growth is not None else "")  # fmt: skip
            ax.plot(t, (values - start[0]) / 1024, lw=1.3, label=label,
                    color=f"C{i % 10}", ls=LINE_STYLES[(i // 10) % len(LINE_STYLES)])  # fmt: skip
        _decorate(ax, title, sc, x_end, fit_from)
    ax = axes[-1]
    for key, label, color in (("redis_used_memory", "used_memory", "#1f77b4"),
                              ("redis_rss", "used_memory_rss", "#ff7f0e")):  # fmt: skip
        values = _column(series[key]) / (1024 * 1024)
        ax.plot(t, values, lw=1.3, color=color, label=label, marker=".", ms=3)
    _decorate(ax, "Redis: INFO memory, MiB (gaps: restarting or frozen)", sc, x_end, fit_from)
    axes[-1].set_xlabel("seconds since traffic start")
    fig.suptitle(f"{sc['name']}: memory of every process", fontsize=12, fontweight="bold")
    handles: list[Artist] = [Line2D([], [], color="0.3", ls=":", lw=1.2, label="warm-up ends: "
                                    "the growth fits start here")]  # fmt: skip
    fig.legend(handles=handles + plots.fault_handles(sc["faults"]) if sc["faults"] else handles,
               loc="outside lower center", ncol=4, fontsize=9, frameon=False)  # fmt: skip
    plots.save(fig, path)
    return True


def _column(values: list[float | None]) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], float)


def _decorate(ax: Axes, title: str, sc: dict[str, Any], x_end: float, fit_from: float) -> None:
    colors = plots.fault_colors(sc["faults"])
    for f in sc["faults"]:
        if f["end_s"] > 0:  # a set-up before the traffic is no event on this axis
            ax.axvline(f["start_s"], color=colors[str(f.get("kind") or f["label"])], lw=0.8,
                       alpha=0.6)  # fmt: skip
    ax.axvline(fit_from, color="0.3", ls=":", lw=1.2)
    ax.set_xlim(0, x_end)
    ax.set_title(title, fontsize=10, loc="left")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
