"""The list-resize scenario (ftlab.scenarios.list_resize): clean with delayed frees under Random,
PCT and bounded DFS schedules (a few hundred by default, >= 10,000 and an exhaustive DFS(2) in
the slow run); `no-free-delayed` found within 1,000 schedules of the default portfolio."""

from __future__ import annotations

import pytest

from ftlab import Config, run
from ftlab.explore.campaign import first_detection as _first_detection
from ftlab.explore.execute import execute
from ftlab.scenarios import catalog, get
from ftlab.runtime.listobject import new_allocated
from ftlab.scenarios.list_resize import INITIAL, LIST_RESIZE
from ftlab.sim import DFS, PCT, Random, Replay

NAME = "list-resize"


def _clean(strategy, budget: int, config: Config | None = None) -> tuple[int, int]:
    """Run up to `budget` executions; each must be clean. Returns (runs, runs in which the old
    array was freed during the run)."""
    sc = get(NAME)
    config = config or Config()
    n = freed = 0
    while n < budget and (chooser := strategy.execution(n)) is not None:
        r = execute(sc, config, chooser)
        assert r.ok, f"{strategy.describe()} execution {n}: {r.violation} [{r.schedule}]"
        freed += r.stats["delayed_freed"] == 1
        n += 1
    return n, freed


def first_detection(mutation: str, budget: int = 1000, seed: int = 0):
    return _first_detection(get(NAME), mutation, budget, seed)


def test_the_scenario_is_in_the_catalog():
    assert catalog()[NAME] is LIST_RESIZE
    assert LIST_RESIZE.mutations == {
        "no-free-delayed": ("premature-reuse", "use-after-free", "data-race"),
        "list-items-freed-at-once": ("premature-reuse", "use-after-free", "data-race")}


def test_the_first_append_resizes_a_full_array_of_just_over_1_mib():
    assert 8 + 8 * INITIAL > 1024 * 1024
    queued = []
    for seed in range(10):
        r = run(get(NAME), Config(), Random(seed))
        assert r.ok, r.violation
        queued.append(r.stats["delayed_queued"])
    # delayed once the reader has marked the list shared, at once before that
    assert set(queued) == {0, 1}
    assert new_allocated(INITIAL + 1, INITIAL) == 147_460


@pytest.mark.parametrize("mutation", ["no-free-delayed", "list-items-freed-at-once"])
def test_each_mutation_is_found_within_1000_schedules(mutation):
    r, n = first_detection(mutation)
    assert r is not None, f"{mutation} not found in 1000 schedules"
    assert r.violation.kind in LIST_RESIZE.mutations[mutation], str(r.violation)
    # no-free-delayed still passes the array to _PyMem_FreeDelayed (which frees it at once);
    # list-items-freed-at-once never does
    delayed = mutation == "no-free-delayed"
    if r.violation.kind == "premature-reuse":
        assert ("passed to _PyMem_FreeDelayed" in r.violation.message) == delayed
    elif r.violation.kind == "use-after-free":   # the reader reads the freed old array
        assert any("passed to _PyMem_FreeDelayed" in d for d in r.violation.details) == delayed
    again = run(get(NAME), r.config, Replay(r.schedule))
    v, w = again.violation, r.violation
    assert (w.kind, w.message, w.step, w.thread) == (v.kind, v.message, v.step, v.thread)


def test_clean_under_300_random_and_pct_schedules_and_an_exhaustive_dfs_1():
    sc = get(NAME)
    freed = 0
    for strategy in (Random(11), PCT(11, 2, sc.pct_steps), PCT(12, 3, sc.pct_steps)):
        freed += _clean(strategy, 100)[1]
    # the old array is freed when the writer exits (3.14 processes the interpreter queue)
    assert freed > 0
    n, _ = _clean(DFS(preemption_bound=1), 2000)
    assert n < 2000, "DFS(1) is exhausted"


def test_clean_under_3_13_0():
    sc = get(NAME)
    config = Config(version="3.13.0")
    _clean(Random(5), 50, config)
    _clean(PCT(5, 2, sc.pct_steps), 50, config)


@pytest.mark.slow
def test_clean_under_10000_random_and_pct_schedules_and_an_exhaustive_dfs_2():
    sc = get(NAME)
    for strategy in (Random(101), PCT(101, 1, sc.pct_steps), PCT(102, 2, sc.pct_steps),
                     PCT(103, 3, sc.pct_steps)):
        assert _clean(strategy, 2500)[0] == 2500
    n, _ = _clean(DFS(preemption_bound=sc.dfs_bound), 20_000)
    assert n < 20_000, "DFS(2) is exhausted"
