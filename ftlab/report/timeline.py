"""A failing run as a timeline: one column per thread, one row per event, the violation last."""

from __future__ import annotations

from typing import Sequence

from ftlab.sim.machine import Event
from ftlab.sim.violation import Violation


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_timeline(trace: Sequence[Event], threads: Sequence[str],
                    violation: Violation | None = None, width: int = 40) -> str:
    cols = len(threads)
    header = "step  " + "  ".join(f"{name:<{width}}" for name in threads)
    lines = [header.rstrip(), "-" * min(len(header), 6 + cols * (width + 2))]
    for e in trace:
        if e.thread < 0:
            continue  # machine-level events are summarised below
        cells = [""] * cols
        cells[e.thread] = _clip(e.what, width)
        lines.append(f"{e.step:>4}  " + "  ".join(f"{c:<{width}}" for c in cells).rstrip())
    if violation is not None:
        lines.append("")
        lines.append(str(violation))
    return "\n".join(lines)
