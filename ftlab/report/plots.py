"""Plots as PNG bytes (matplotlib, Agg backend: no display needed), for the HTML report and
`ftlab simulate --plot`."""

from __future__ import annotations

import io
from typing import Mapping, Sequence

_COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3",
           "#8C8C8C"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def detection_png(rows: Sequence, strategies: Sequence[str]) -> bytes:
    """Schedules to first detection per mutation (one group of bars) and strategy (one bar
    each). The strategy that found the mutation has a solid bar at its own count of schedules;
    the others a hollow bar at the schedules they ran without finding it."""
    plt = _pyplot()
    mutated = [r for r in rows if r.mutation]
    n = max(1, len(mutated))
    k = max(1, len(strategies))
    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.32 * n * k + 0.4))
    height = 0.8 / k
    for si, name in enumerate(strategies):
        color = _COLORS[si % len(_COLORS)]
        for ri, r in enumerate(mutated):
            c = next((c for c in r.counts if c["strategy"] == name), None)
            if c is None:
                continue
            y = ri + si * height
            if c["first_detection"] is not None:
                ax.barh(y, c["first_detection"], height=height, color=color)
            else:
                ax.barh(y, max(c["schedules"], 0.5), height=height, facecolor="none",
                        edgecolor=color, hatch="//", linewidth=0.8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=_COLORS[i % len(_COLORS)]) for i in range(k)]
    handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="none", edgecolor="#555", hatch="//"))
    ax.legend(handles, list(strategies) + ["ran without finding it"], loc="lower right",
              fontsize=8)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(mutated))])
    ax.set_yticklabels([f"{r.scenario} / {r.mutation}" for r in mutated], fontsize=8)
    ax.invert_yaxis()
    widest = max([1] + [c["first_detection"] or c["schedules"] for r in mutated for c in r.counts])
    if widest > 50:
        ax.set_xscale("log")
        ax.set_xlabel("schedules (log scale)")
    else:
        ax.set_xlabel("schedules")
    ax.set_title("schedules to first detection, per mutation and strategy")
    if not mutated:
        ax.text(0.5, 0.5, "no mutated rows", transform=ax.transAxes, ha="center")
    return _png(fig)


def schedules_png(rows: Sequence, strategies: Sequence[str]) -> bytes:
    """Schedules each row ran, stacked by strategy."""
    plt = _pyplot()
    n = max(1, len(rows))
    fig, ax = plt.subplots(figsize=(9, 0.6 + 0.3 * n + 0.4))
    left = [0] * len(rows)
    for si, name in enumerate(strategies):
        widths = []
        for r in rows:
            c = next((c for c in r.counts if c["strategy"] == name), None)
            widths.append(c["schedules"] if c else 0)
        ax.barh(range(len(rows)), widths, left=left, color=_COLORS[si % len(_COLORS)], label=name)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{r.scenario} / {r.mutation or 'unmutated'}" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("schedules run")
    ax.set_title("schedules per row, by strategy")
    if strategies:
        ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def bar_chart_png(numbers: Mapping[str, float], title: str) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.3 * max(1, len(numbers))))
    ax.barh(list(numbers), list(numbers.values()), color=_COLORS[0])
    ax.invert_yaxis()
    ax.set_title(title)
    return _png(fig)


def line_panels_png(panels: Mapping[str, Mapping[str, list[tuple[float, float]]]], title: str,
                    xlabel: str) -> bytes:
    """One panel per measure, one line per series (e.g. per CPython version)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), squeeze=False)
    for ax, (name, lines) in zip(axes[0], panels.items()):
        for color, (label, points) in zip(_COLORS, lines.items()):
            ax.plot([x for x, _ in points], [y for _, y in points], color=color, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=11)
    return _png(fig)
