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


# --- the block's history in words (issue 16) ----------------------------------------------------

from ftlab.report.timeline import block_story  # noqa: E402
from ftlab.sim.violation import Violation  # noqa: E402


def test_block_story_says_the_delayed_path_from_the_uaf_history():
    v = Violation("use-after-free", "b:reader: atomic read of 8 bytes at 0x7f00060300b0 at step "
                  "74, offset 48 of the freed 120-byte block", 74, "b:reader",
                  ("allocated (120 bytes, heap MEM) by a:main at step 14",
                   "unlinked and passed to _PyMem_FreeDelayed by a:main at step 60",
                   "freed by b:reader at step 73"))
    text = block_story((), ["a:main", "b:reader"], v)
    assert "allocated by a:main as a 120-byte MEM block at step 14" in text
    assert "freed by b:reader at step 73 through the delayed-free queue (queued by a:main at " \
           "step 60, processed at step 73)" in text
    assert "b:reader's atomic read of 8 bytes at offset 48 of it" in text


def test_block_story_says_a_cross_thread_free_and_a_leak():
    v = Violation("use-after-free", "b: read of 8 bytes at 0x10 at step 9", 9, "b:r",
                  ("allocated (48 bytes, heap OBJECT) by a:w at step 1", "freed by b:r at step 5"))
    assert "cross-thread free" in block_story((), ["a:w", "b:r"], v)
    leak = Violation("leak", "the OldItem object at 0x7f0006010090 (OldItem#1) (48 bytes, owner "
                     "a:producer) has no reference left but was never deallocated", 357, None,
                     ("step 9 a:producer: created", "…", "step 26 b:receiver: decref (shared)"))
    text = block_story((), ["a:producer", "b:receiver"], leak)
    assert text.startswith("The block was allocated by a:producer as a 48-byte OldItem object "
                           "at step 9, and never freed.")
    assert block_story((), ["a"], Violation("data-race", "x", 3, "a")) == ""


def test_tryincref_counterexample_closes_with_the_block_story():
    scenario = get("tryincref-zero")
    config = Config(mutations=frozenset(["tryincref-accepts-zero"]))
    for i in range(200):
        r = run(scenario, config, Random(1), execution=i)
        if r.violations:
            break
    else:
        raise AssertionError("tryincref-accepts-zero not found in 200 runs")
    r = run(scenario, config, Replay(r.schedule), trace=True)
    text = format_timeline(r.trace, r.threads, r.violation)
    story = text.splitlines()[[i for i, l in enumerate(text.splitlines())
                               if l.startswith("invariant broken")][0] + 1]
    assert "as a 48-byte OldItem object" in story and "freed by a:owner" in story
    assert "`cas OldItem#1.ob_ref_shared" in story and "broke the invariant (resurrection)" in story
