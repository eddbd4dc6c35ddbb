"""The GC scenarios (ftlab.scenarios.gc): each clean under Random, PCT and bounded DFS schedules
(a few dozen by default; >= 10,000 and its DFS bound in the slow run), each mutation found
within 1,000 schedules of the default portfolio, by the kinds its row names."""

from __future__ import annotations

import pytest

from ftlab import Config
from ftlab.explore.campaign import first_detection
from ftlab.explore.execute import execute
from ftlab.scenarios import catalog, get
from ftlab.scenarios.gc import SCENARIOS
from ftlab.sim import DFS, PCT, Random

NAMES = [s.name for s in SCENARIOS]


def _clean(name: str, strategy, budget: int) -> int:
    sc = get(name)
    n = 0
    while n < budget and (chooser := strategy.execution(n)) is not None:
        r = execute(sc, Config(), chooser)
        assert r.ok, f"{name} {strategy.describe()} execution {n}: {r.violation} [{r.schedule}]"
        n += 1
    return n


def test_the_scenarios_are_in_the_catalog_with_their_mutations():
    c = catalog()
    assert NAMES == ["gc-cycle", "gc-thread-exit", "gc-threshold", "gc-reader-page"]
    assert all(c[s.name] is s for s in SCENARIOS)
    named = {m for s in SCENARIOS for m in s.mutations}
    assert {"gc-no-merge", "gc-tid-not-restored", "gc-skips-abandoned",
            "gc-count-lost"} <= named


@pytest.mark.parametrize("name", NAMES)
def test_clean_under_a_few_random_and_pct_schedules(name):
    sc = get(name)
    _clean(name, Random(7), 8)
    _clean(name, PCT(7, 2, sc.pct_steps), 8)


@pytest.mark.parametrize("name,mutation",
                         [(s.name, m) for s in SCENARIOS for m in s.mutations])
def test_each_mutation_is_found_within_1000_schedules(name, mutation):
    sc = get(name)
    r, n = first_detection(sc, mutation, 1000)
    assert r is not None, f"{mutation} not found in {name} within 1000 schedules"
    assert r.violation.kind in sc.mutations[mutation], str(r.violation)


def test_a_cycle_is_freed_exactly_once_and_the_collector_stopped_the_world():
    r = execute(get("gc-cycle"), Config(), Random(3).execution(0))
    assert r.ok, r.violation
    assert r.stats["objects_deallocated"] == 4      # A, B, C, D


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_clean_under_10000_random_and_pct_schedules_and_dfs(name):
    sc = get(name)
    for strategy in (Random(101), PCT(101, 1, sc.pct_steps), PCT(102, 2, sc.pct_steps),
                     PCT(103, 3, sc.pct_steps)):
        assert _clean(name, strategy, 2500) == 2500
    _clean(name, DFS(preemption_bound=sc.dfs_bound), 5000)


@pytest.mark.parametrize("name", NAMES)
def test_clean_under_3_13_0(name):
    sc = get(name)
    config = Config(version="3.13.0")
    for strategy in (Random(5), PCT(5, 2, sc.pct_steps)):
        n = 0
        while n < 5:
            r = execute(sc, config, strategy.execution(n))
            assert r.ok, f"{name} 3.13.0: {r.violation} [{r.schedule}]"
            n += 1


@pytest.mark.parametrize("version", ["3.14", "3.13.0"])
def test_the_collection_processes_the_pending_delayed_free(monkeypatch, version):
    from ftlab.runtime import gc
    orig = gc.process_delayed_frees
    freed = []

    async def counting(t, state):
        before = t.rt.stats["delayed_freed"]
        await orig(t, state)
        freed.append(t.rt.stats["delayed_freed"] - before)

    monkeypatch.setattr(gc, "process_delayed_frees", counting)
    r = execute(get("gc-reader-page"), Config(version=version), Random(1).execution(0))
    assert r.ok, r.violation
    assert freed == [1], "the old item array, queued by the resize, is freed with the world stopped"
