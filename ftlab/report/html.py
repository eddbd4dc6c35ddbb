"""`ftlab report --html FILE`: one self-contained page (inline CSS, plots as inline base64 PNG).

Sections: the campaign table; plots of schedules to first detection per mutation and strategy
and of schedules per row; each counterexample's timeline (its shrunk schedule replayed with a
trace: one column per thread, the conflicting accesses marked, the invariant in words); every
stored violation of the campaign.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from ftlab.report.invariants import invariant
from ftlab.report.table import counterexample
from ftlab.report.table import versions_text  # version column (issue 12)

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { padding: .2em .7em; border-bottom: 1px solid #e4e4e4; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #17702f; } .gap { color: #6a1b9a; font-weight: bold; } .bad { color: #b00020; font-weight: bold; } .pending { color: #a36b00; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; }
table.timeline td { font-family: ui-monospace, monospace; font-size: 12px; white-space: pre; }
table.timeline tr.mark td { background: #fff1c2; }
table.timeline td.step { color: #777; text-align: right; }
table.timeline tr.fold td { color: #555; font-style: italic; }
table.folded td { font-family: ui-monospace, monospace; font-size: 12px; white-space: pre; font-style: normal; }
table.folded tr.mark td { background: #fff1c2; }
.violation { background: #fdecee; border-left: 4px solid #b00020; padding: .5em .8em; white-space: pre-wrap; }
.invariant { margin: .4em 0 1em; }
img.plot { display: block; max-width: 100%; margin: 1em 0; border: 1px solid #eee; }
.meta { color: #555; }
"""


def _esc(x) -> str:
    return html.escape("" if x is None else str(x))


def _img(png: bytes, ident: str, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="plot" id="{ident}" alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _verdict_class(row) -> str:
    if row.status != "done":
        return "pending"
    if row.ok and getattr(row, "known_gap", False):
        return "gap"                    # a gap CPython has, found as expected (issue 12)
    return "ok" if row.ok else "bad"


def _campaign_table(result) -> str:
    out = ['<table id="campaign" class="campaign"><thead><tr>']
    for h in ("scenario", "mutation", "version", "model", "verdict", "schedules", "to detect", "counterexample",
              "time"):
        out.append(f"<th>{h}</th>")
    out.append("</tr></thead><tbody>")
    for r in result.rows:
        detect = f"{r.first_detection} ({r.detected_by})" if r.first_detection is not None else ""
        out.append(
            f'<tr><td>{_esc(r.scenario)}</td><td>{_esc(r.mutation or "-")}</td>'
            f'<td>{_esc(r.version or "-")}</td><td>{_esc(r.memory_model)}</td>'
            f'<td class="{_verdict_class(r)}">{_esc(r.verdict)}</td>'
            f'<td class="num">{r.schedules:,}</td><td class="num">{_esc(detect)}</td>'
            f'<td>{_esc(counterexample(r))}</td><td class="num">{r.seconds:.2f} s</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _timeline(v: dict) -> str:
    """Replay the stored counterexample with a trace and lay it out per thread."""
    from ftlab.explore.campaign import violation_target
    from ftlab.explore.execute import run
    from ftlab.report.timeline import Fold, Head, block_story, call_results, timeline_items
    from ftlab.scenarios import UnknownName, get
    from ftlab.sim.schedule import ScheduleError
    from ftlab.sim.strategies import Replay

    schedule = v.get("shrunk_schedule") or v.get("schedule")
    if not schedule:
        return '<p class="meta">no schedule (the violation happened outside the threads)</p>'
    try:
        # its version, mutations and memory model (c11 rows: ftlab/sim/c11.py)
        scenario, config = violation_target(v, get)
        result = run(scenario, config, Replay(schedule), trace=True)
    except (UnknownName, ScheduleError, ValueError) as e:
        return f'<p class="bad">cannot replay it with this version of ftlab: {_esc(e)}</p>'
    items = timeline_items(result.trace or [], result.threads, result.violation)
    results = call_results(result.trace or [])
    ncols = len(result.threads)

    def row(r) -> str:
        cells = [""] * ncols
        cells[r.thread] = _esc(r.text)
        cls = ' class="mark"' if r.mark else ""
        flag = "»" if r.switch else ""
        return (f'<tr{cls}><td class="step">{r.step}{flag}</td>'
                + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")

    def head(h: Head) -> str:
        cells = [""] * ncols
        cells[h.thread] = f"<b>{_esc(h.text)}</b>"
        return '<tr class="func"><td></td>' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"

    out = ['<table class="timeline"><thead><tr><th>step</th>']
    out.extend(f"<th>{_esc(t)}</th>" for t in result.threads)
    out.append("</tr></thead><tbody>")
    marked = False
    for it in items:
        if isinstance(it, Fold):
            # a folded run: one line, expandable in the page (no script needed)
            inner = []
            func: dict[int, tuple[str, int]] = {}
            for r in it.rows:
                if r.func and func.get(r.thread) != (r.func, r.call):
                    inner.append(head(Head(r.thread, r.func, results.get(r.call, "")
                                           if r.call else "")))
                    func[r.thread] = (r.func, r.call)
                inner.append(row(r))
            out.append(f'<tr class="fold"><td class="step">{it.rows[0].step}</td>'
                       f'<td colspan="{ncols}"><details><summary>{_esc(it.text)}</summary>'
                       f'<table class="folded">{"".join(inner)}</table></details></td></tr>')
        elif isinstance(it, Head):
            out.append(head(it))
        else:
            marked = marked or it.mark
            out.append(row(it))
    out.append("</tbody></table>")
    if result.violation is not None:
        out.append(f'<div class="violation">{_esc(result.violation)}</div>')
        out.append(f'<p class="invariant">invariant broken (<b>{_esc(result.violation.kind)}</b>): '
                   f"{_esc(invariant(result.violation.kind))}</p>")
        story = block_story(result.trace or [], result.threads, result.violation)
        if story:
            out.append(f'<p class="story">{_esc(story)}</p>')
        if marked:
            out.append('<p class="meta">highlighted: the accesses to the memory the violation names</p>')
    else:
        out.append('<p class="bad">the replay did not fail (the model changed since it was stored?)</p>')
    return "".join(out)


def _counterexamples(result) -> str:
    out = []
    for r in result.rows:
        v = r.violation
        if v is None:
            continue
        muts = "".join(f" --mutate {m}" for m in v["mutations"])
        out.append(f'<section class="counterexample" id="violation-{v["id"]}">')
        out.append(f"<h3>#{v['id']} {_esc(r.scenario)} / {_esc(r.mutation or 'unmutated')}: "
                   f"{_esc(v['kind'])}</h3>")
        out.append(f'<p class="meta">found by {_esc(v["strategy"])} (execution {v["execution"]}) '
                   f'after {r.first_detection} schedules; original schedule <code>{_esc(v["schedule"])}</code> '
                   f'({v["preemptions"]} preemptions, {v["steps"]} steps)')
        if v.get("shrunk_schedule"):
            out.append(f'; shrunk <code>{_esc(v["shrunk_schedule"])}</code> '
                       f'({v["shrunk_preemptions"]} preemptions, {v["shrunk_steps"]} steps)')
        out.append(f'. Replay: <code>ftlab replay {v["id"]}</code> or '
                   f'<code>ftlab replay {_esc(v["scenario"])} '
                   f'{_esc(v.get("shrunk_schedule") or v["schedule"])}{_esc(muts)}</code></p>')
        out.append(_timeline(v))
        out.append("</section>")
    return "".join(out) or '<p class="meta">no counterexample in this campaign</p>'


def _violations(store, cid: int) -> str:
    vs = store.violations(cid)
    if not vs:
        return '<p class="meta">none</p>'
    out = ['<table id="violations"><thead><tr>']
    for h in ("id", "scenario", "mutations", "kind", "found by", "schedule", "shrunk", "message"):
        out.append(f"<th>{h}</th>")
    out.append("</tr></thead><tbody>")
    for v in vs:
        muts = ",".join(json.loads(v["mutations"])) or "-"
        kind = v["kind"] + ("" if v["decisive"] else " (other)")
        out.append(f'<tr><td class="num">{v["id"]}</td><td>{_esc(v["scenario"])}</td>'
                   f"<td>{_esc(muts)}</td><td>{_esc(kind)}</td>"
                   f'<td>{_esc(v["strategy"])} #{v["execution"]}</td>'
                   f'<td class="mono">{_esc(v["schedule"])}</td>'
                   f'<td class="mono">{_esc(v["shrunk_schedule"] or "")}</td>'
                   f'<td>{_esc(v["message"])}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def render_html(store, cid: int) -> str:
    from ftlab.explore.campaign import load_campaign
    from ftlab.report.plots import detection_png, schedules_png

    result = load_campaign(store, cid)
    strategies: list[str] = []
    for r in result.rows:
        for s in r.strategies:
            if s not in strategies:
                strategies.append(s)
    p = result.params
    plots = (_img(detection_png(result.rows, strategies), "plot-detection",
                  "schedules to first detection per mutation and strategy")
             + _img(schedules_png(result.rows, strategies), "plot-schedules",
                    "schedules per row by strategy"))
    summary = result.summary() + ("; all as expected" if result.ok else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>ftlab campaign {cid}</title>
<style>{_CSS}</style></head>
<body>
<h1>ftlab campaign {cid}</h1>
<p class="meta">status {_esc(result.status)}; seed {p.get('seed')}, {_esc(versions_text(p))},
batch {p.get('batch')}; wall time {result.wall_seconds:.1f} s; {_esc(summary)}</p>
<h2>Campaign</h2>
{_campaign_table(result)}
<h2>Plots</h2>
{plots}
<h2>Counterexamples</h2>
{_counterexamples(result)}
<h2>All violations</h2>
{_violations(store, cid)}
</body></html>
"""


def write_html(store, cid: int, path: str | Path) -> None:
    Path(path).write_text(render_html(store, cid), encoding="utf-8")
