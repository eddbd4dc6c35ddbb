"""A failing run as a timeline: one column per thread, one row per event, the violation last.

The events that touch the memory the violation names (the conflicting accesses: both sides of
a data race, the free and the use of a use-after-free) are marked with `*`, and the report
ends with the violated invariant in words. `timeline_rows` gives the same content as data for
the HTML report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from ftlab.report.invariants import invariant
from ftlab.sim.machine import Event
from ftlab.sim.violation import Violation

_ADDR = re.compile(r"0x[0-9a-fA-F]{4,}")


@dataclass(frozen=True)
class TimelineRow:
    step: int
    thread: int       # column; -1 for the machine (the violation line)
    text: str
    mark: bool        # touches memory the violation names


def conflict_words(violation: Violation | None) -> set[int]:
    """The 8-byte words named in the violation's message and details."""
    if violation is None:
        return set()
    text = " ".join((violation.message, *violation.details))
    return {int(a, 16) >> 3 for a in _ADDR.findall(text)}


def timeline_rows(trace: Sequence[Event], violation: Violation | None = None) -> list[TimelineRow]:
    words = conflict_words(violation)
    rows = []
    for e in trace:
        if e.thread < 0:
            continue  # machine-level events: the violation is reported below the table
        mark = bool(words) and any(int(a, 16) >> 3 in words for a in _ADDR.findall(e.what))
        rows.append(TimelineRow(e.step, e.thread, e.what, mark))
    return rows


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_timeline(trace: Sequence[Event], threads: Sequence[str],
                    violation: Violation | None = None, width: int = 40) -> str:
    cols = len(threads)
    header = "step   " + "  ".join(f"{name:<{width}}" for name in threads)
    lines = [header.rstrip(), "-" * min(len(header), 7 + cols * (width + 2))]
    rows = timeline_rows(trace, violation)
    for r in rows:
        cells = [""] * cols
        cells[r.thread] = _clip(r.text, width)
        lines.append(f"{r.step:>4}{'*' if r.mark else ' '}  "
                     + "  ".join(f"{c:<{width}}" for c in cells).rstrip())
    if violation is not None:
        lines.append("")
        lines.append(str(violation))
        lines.append(f"invariant broken ({violation.kind}): {invariant(violation.kind)}")
        if any(r.mark for r in rows):
            lines.append("* marks the accesses to the memory the violation names")
    return "\n".join(lines)
