"""The refcount scenarios (ftlab.scenarios.refcount): every mutation is found within 1,000
schedules of the default portfolio, in the campaign's canonical order; every scenario is
clean without mutations (a few hundred Random + PCT schedules and an exhaustive bounded DFS
by default, >= 10,000 Random + PCT schedules in the slow run)."""

from __future__ import annotations

import pytest

from ftlab import Config, run
from ftlab.explore.campaign import first_detection as _first_detection
from ftlab.explore.execute import execute
from ftlab.scenarios import catalog, get
from ftlab.scenarios.refcount import SCENARIOS
from ftlab.sim import DFS, PCT, Random, Replay

NAMES = [s.name for s in SCENARIOS]


def _page_delay_modelled() -> bool:
    """Delayed page reuse (issue 4, item 3) replaces mimalloc's default `page_maybe_free`
    hook (free at once) with one that gives an empty object page a QSBR goal."""
    from ftlab.runtime import Runtime
    from ftlab.runtime.mimalloc.init import MiHooks
    return type(Runtime().mimalloc.hooks) is not MiHooks


# `no-page-delay` switches delayed page reuse off; until the runtime has it, the unmutated
# runtime already frees an emptied object page at once and the mutation changes nothing.
NEEDS_PAGE_DELAY = pytest.mark.xfail(
    not _page_delay_modelled(), run=False, strict=True,
    reason="no-page-delay switches off delayed reuse of mimalloc object pages "
           "(_PyMem_mi_page_maybe_free with QSBR goals, issue 4 item 3) and needs the "
           "premature-reuse oracle; neither is in the runtime yet")


def first_detection(name: str, mutation: str, budget: int = 1000, seed: int = 0):
    return _first_detection(get(name), mutation, budget, seed)


def test_the_scenarios_are_in_the_catalog():
    c = catalog()
    for s in SCENARIOS:
        assert c[s.name] is s


CASES = [(s.name, m) for s in SCENARIOS for m in s.mutations]


@pytest.mark.parametrize("name,mutation", [
    pytest.param(n, m, marks=NEEDS_PAGE_DELAY) if m == "no-page-delay" else (n, m)
    for n, m in CASES])
def test_each_mutation_is_found_within_1000_schedules(name, mutation):
    r, _ = first_detection(name, mutation)
    assert r is not None, f"{mutation} not found by {name} in 1000 schedules"
    assert r.violation.kind in get(name).mutations[mutation], str(r.violation)
    # the schedule replays to the same violation
    again = run(get(name), r.config, Replay(r.schedule))
    v, w = again.violation, r.violation
    assert (w.kind, w.message, w.step, w.thread) == (v.kind, v.message, v.step, v.thread)


def _clean(sc, strategy, budget: int) -> int:
    """Run up to `budget` executions of `strategy`; every one must be clean. Returns how many
    ran (fewer when a DFS is exhausted)."""
    config = Config()
    n = 0
    while n < budget and (chooser := strategy.execution(n)) is not None:
        r = execute(sc, config, chooser)
        assert r.ok, f"{strategy.describe()} execution {n}: {r.violation}"
        n += 1
    return n


@pytest.mark.parametrize("name", NAMES)
def test_each_scenario_is_clean_under_random_pct_and_bounded_dfs(name):
    sc = get(name)
    for strategy in (Random(11), PCT(11, 2, sc.pct_steps), PCT(12, 3, sc.pct_steps)):
        _clean(sc, strategy, 100)
    assert _clean(sc, DFS(preemption_bound=1), 2000) < 2000, "DFS(1) is exhausted"
    _clean(sc, DFS(preemption_bound=sc.dfs_bound), 200)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_each_scenario_is_clean_under_10000_random_and_pct_schedules_and_dfs(name):
    sc = get(name)
    strategies = [Random(101), PCT(101, 1, sc.pct_steps), PCT(102, 2, sc.pct_steps),
                  PCT(103, 3, sc.pct_steps)]
    for strategy in strategies:
        _clean(sc, strategy, 2500)
    assert _clean(sc, DFS(preemption_bound=sc.dfs_bound), 20_000) < 20_000, "DFS exhausted"


def test_hand_off_reports_its_refcount_statistics():
    r = run(get("hand-off"), Config(), Random(0))
    assert r.ok, r.violation
    s = r.stats
    assert s["objects_allocated"] == s["objects_deallocated"] == 1
    assert s["brc_queued"] == 1 and s["brc_explicit_merges"] == 1
    assert s["refcnt_atomic"] >= 3          # the receiver's incref and decrefs, the merge
