"""Timelines: one column per thread, the conflicting accesses marked, the invariant in words."""

from __future__ import annotations

from ftlab import Config, run
from ftlab.explore.shrink import shrink
from ftlab.report.invariants import INVARIANTS
from ftlab.report.timeline import format_timeline, timeline_rows
from ftlab.scenarios import get
from ftlab.sim import Random, Replay
from ftlab.sim.violation import KINDS


def _race():
    scenario, config = get("message-passing"), Config(mutations=frozenset(["relaxed-message"]))
    for i in range(200):
        r = run(scenario, config, Random(0), execution=i)
        if r.violations:
            s = shrink(scenario, config, r.schedule, "data-race")
            return run(scenario, config, Replay(s.schedule), trace=True)
    raise AssertionError("no race found")


def test_every_violation_kind_has_its_invariant_in_words():
    assert set(KINDS) <= set(INVARIANTS)


def test_data_race_timeline_marks_both_accesses_and_names_the_invariant():
    r = _race()
    text = format_timeline(r.trace, r.threads, r.violation)
    header = text.splitlines()[0]
    for t in r.threads:
        assert t in header
    marked = [row for row in timeline_rows(r.trace, r.violation) if row.mark]
    assert {row.thread for row in marked} == {0, 1}     # the write and the racing read
    assert any("write" in row.text for row in marked) and any("read" in row.text for row in marked)
    assert "invariant broken (data-race): every two accesses" in text
    assert "* marks the accesses" in text


def test_columns_put_each_event_under_its_thread():
    r = _race()
    lines = format_timeline(r.trace, r.threads, r.violation, width=30).splitlines()
    start_b = next(line for line in lines if "start consumer" in line)
    assert start_b.index("start consumer") >= 7 + 32   # second column
