"""The `mimalloc-stress` scenario (mimalloc's test-stress): no violation under Random and PCT
schedules, replayable, and it reaches the allocator's cross-thread paths."""

from __future__ import annotations

from collections import Counter

import pytest

from ftlab.config import Config
from ftlab.explore.execute import execute
from ftlab.runtime import pystate
from ftlab.scenarios import catalog, get
from ftlab.sim import PCT, Random, Replay


def _schedules(n: int, start: int = 0):
    sc = get("mimalloc-stress")
    for i in range(start, start + n):
        yield i, (Random(i) if i % 2 == 0 else PCT(i, 3, sc.pct_steps))


def _clean(n: int, config: Config) -> Counter:
    """Run n schedules; fail on the first violation; sum the allocator's event counters."""
    sc = get("mimalloc-stress")
    counters: Counter = Counter()
    runtimes: list = []
    original = pystate.Runtime.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        runtimes.append(self)

    pystate.Runtime.__init__ = init
    try:
        for i, strat in _schedules(n):
            r = execute(sc, config, strat.execution(0))
            assert r.ok, f"schedule {i} ({strat.describe()}): {r.violation} [{r.schedule}]"
            counters.update(runtimes[-1].mimalloc.counters)
    finally:
        pystate.Runtime.__init__ = original
    return counters


def test_stress_is_in_the_catalog() -> None:
    assert "mimalloc-stress" in catalog()


def test_stress_is_clean_under_100_random_and_pct_schedules() -> None:
    counters = _clean(100, Config())
    # the schedules reach the paths the scenario is for
    for event in ("frees_remote", "frees_delayed", "delayed_blocks_processed",
                  "segments_abandoned", "segments_reclaimed", "pages_reclaimed",
                  "pages_abandoned", "thread_free_collected"):
        assert counters[event] > 0, (event, dict(counters))
    # The workers never pass a quiescent state, so the goals of their empty OBJECT and GC
    # pages are never reached: delayed page reuse keeps those pages, and so their segments.
    assert counters["segments_freed"] == 0


def test_without_page_delay_the_stress_frees_segments() -> None:
    counters = _clean(30, Config(mutations=frozenset(["no-page-delay"])))
    assert counters["segments_freed"] > 0


def test_stress_is_clean_in_the_debug_build() -> None:
    _clean(20, Config(pydebug=True))


def test_stress_replays_exactly() -> None:
    sc = get("mimalloc-stress")
    first = execute(sc, Config(), PCT(7, 3, sc.pct_steps).execution(0))
    again = execute(sc, Config(), Replay(first.schedule).execution(0))
    assert (again.steps, again.schedule, again.ok) == (first.steps, first.schedule, first.ok)


@pytest.mark.slow
def test_stress_is_clean_under_1000_random_and_pct_schedules() -> None:
    _clean(1000, Config())


@pytest.mark.slow
def test_stress_is_clean_under_200_schedules_in_the_debug_build() -> None:
    _clean(200, Config(pydebug=True))
