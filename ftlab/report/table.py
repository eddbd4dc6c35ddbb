"""The campaign table: one row per (version, scenario, mutation, memory model), as `ftlab explore`
and `ftlab report` print it (rich), and the list of stored violations."""

from __future__ import annotations

from typing import Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text


def _fmt_seconds(s: float) -> str:
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min"


def counterexample(row) -> str:
    """'#12: 1 preemption, 8 steps' for the shrunk schedule (or the original, unshrunk)."""
    v = row.violation
    if v is None:
        return ""
    if v.get("shrunk_schedule"):
        p, s = v["shrunk_preemptions"], v["shrunk_steps"]
    else:
        p, s = v["preemptions"], v["steps"]
    text = f"#{v['id']}: {p} preemption{'s' if p != 1 else ''}, {s} steps"
    if not v.get("shrunk_schedule"):
        text += " (not shrunk)"
    return text


def verdict_style(row) -> str:
    if row.status != "done":
        return "yellow"
    if row.ok and getattr(row, "known_gap", False):
        return "bold magenta"           # a gap CPython has, found as expected (issue 12)
    return "green" if row.ok else "bold red"


def campaign_table(result, title: str | None = None) -> Table:
    t = Table(title=title, title_justify="left", show_lines=False, pad_edge=False)
    # Narrow terminals wrap the words; the numbers never break.
    t.add_column("scenario", overflow="fold")
    t.add_column("mutation", overflow="fold")
    t.add_column("version", no_wrap=True)
    t.add_column("model", no_wrap=True)     # the memory model (ftlab/sim/c11.py)
    t.add_column("verdict")
    t.add_column("schedules", justify="right", no_wrap=True, min_width=6)
    t.add_column("to detect", justify="right", min_width=6)
    t.add_column("counterexample")
    t.add_column("time", justify="right", no_wrap=True, min_width=6)
    for r in result.rows:
        detect = ""
        if r.first_detection is not None:
            detect = f"{r.first_detection} ({r.detected_by})"
        t.add_row(r.scenario, r.mutation or "-", r.version or "-",
                  getattr(r, "memory_model", "sc"), Text(r.verdict, style=verdict_style(r)),
                  f"{r.schedules:,}", detect, counterexample(r), _fmt_seconds(r.seconds))
    return t


def versions_text(params: dict) -> str:
    """'versions 3.13.0, 3.14' (or 'version 3.14') for a campaign's header."""
    from ftlab.explore.campaign import campaign_versions

    vs = campaign_versions(params)
    return f"version{'s' if len(vs) != 1 else ''} {', '.join(vs)}"


def print_campaign(result, console: Console) -> None:
    head = f"campaign {result.id}" if result.id is not None else "campaign"
    p = result.params
    model = f"memory model {p['memory_model']}, " if p.get("memory_model") else ""
    console.print(f"{head}: seed {p.get('seed')}, {versions_text(p)}, {model}"
                  f"batch {p.get('batch')}, db {result.db}"
                  + (" (resumed)" if result.resumed else ""))
    console.print(campaign_table(result))
    state = {"done": "", "interrupted": " — interrupted", "running": " — running"}.get(result.status, "")
    verdict = "all as expected" if result.ok else ("" if result.interrupted else "NOT all as expected")
    console.print(f"{result.summary()}{state}; wall time {_fmt_seconds(result.wall_seconds)}"
                  + (f"; {verdict}" if verdict else ""))
    if any(r.violation is not None for r in result.rows):
        console.print("counterexample #ID: `ftlab replay ID` prints its timeline; "
                      "`ftlab report --html FILE` writes them all on one page")


def violations_table(violations: Iterable) -> Table:
    t = Table(show_lines=False, pad_edge=False)
    for col, kw in (("id", {"justify": "right"}), ("scenario", {}), ("mutations", {}),
                    ("kind", {}), ("found by", {}), ("schedule", {}), ("shrunk", {})):
        t.add_column(col, no_wrap=True, **kw)
    import json

    for v in violations:
        muts = v["mutations"]
        muts = json.loads(muts) if isinstance(muts, str) else muts
        found = f"{v['strategy']} #{v['execution']}" if v["strategy"] else ""
        shrunk = ""
        if v["shrunk_schedule"]:
            shrunk = (f"{v['shrunk_schedule']} ({v['shrunk_preemptions']}p/"
                      f"{v['shrunk_steps']} steps)")
        kind = v["kind"] + ("" if v["decisive"] else " (other)")
        t.add_row(str(v["id"]), v["scenario"], ",".join(muts) or "-", kind, found,
                  v["schedule"] or "-", shrunk)
    return t
