"""The delayed-free-raw-object scenario (ftlab.scenarios.delayed, issue 12 item 2): a raw block
and an object in the delayed-free queue, processed while a lock-free reader may hold both
(3.13.0: the chunk fills; 3.14 and main: `should_process`), then the memory reused. Clean
unmutated; `free-delayed-stale-goal` is found under every version policy."""

from __future__ import annotations

import pytest

from ftlab import Config
from ftlab.explore.campaign import first_detection
from ftlab.explore.execute import execute
from ftlab.scenarios import get
from ftlab.sim import DFS, PCT, Random

NAME = "delayed-free-raw-object"
VERSIONS = ["3.13.0", "3.14", "main"]


def _clean(strategy, budget: int, config: Config) -> int:
    sc = get(NAME)
    n = 0
    while n < budget and (chooser := strategy.execution(n)) is not None:
        r = execute(sc, config, chooser)
        assert r.ok, f"{strategy.describe()} execution {n}: {r.violation} [{r.schedule}]"
        n += 1
    return n


@pytest.mark.parametrize("version", VERSIONS)
def test_clean_under_a_few_random_and_pct_schedules(version):
    config = Config(version=version)
    _clean(Random(4), 6, config)
    _clean(PCT(4, 2, get(NAME).pct_steps), 4, config)


@pytest.mark.parametrize("version", VERSIONS)
def test_both_items_are_processed_and_freed_once_the_reader_has_quiesced(version):
    """The scenario reaches what it is about: the queue is processed with the reader alive and
    frees the raw block and the object item (schedule: the reader runs to its end first)."""
    from ftlab.check import install
    from ftlab.runtime import Runtime

    sc = get(NAME)
    rt = Runtime(Config(version=version))
    install(rt)
    sc.setup(rt)
    for name, fn in sc.threads:
        rt.start_thread(fn, name=name)
    rt.machine.run(Random(3).execution(0))
    assert rt.machine.violation is None, rt.machine.violation
    assert rt.stats["delayed_freed"] >= 2, rt.stats


@pytest.mark.parametrize("version", VERSIONS)
def test_a_stale_goal_is_found_within_the_default_budget(version):
    sc = get(NAME)
    r, n = first_detection(sc, "free-delayed-stale-goal", version=version)
    assert r is not None, f"free-delayed-stale-goal not found in {n} schedules under {version}"
    assert r.violation.kind in sc.mutations["free-delayed-stale-goal"], r.violation
    assert n <= 100, f"free-delayed-stale-goal needed {n} schedules under {version}"


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 3.13.0 runs ~600 steps (252 filler items fill the work chunk)
@pytest.mark.parametrize("version", VERSIONS)
def test_clean_under_10000_random_and_pct_schedules_and_dfs(version):
    sc = get(NAME)
    config = Config(version=version)
    for strategy in (Random(101), PCT(101, 1, sc.pct_steps), PCT(102, 2, sc.pct_steps),
                     PCT(103, 3, sc.pct_steps)):
        assert _clean(strategy, 2500, config) == 2500
    _clean(DFS(preemption_bound=sc.dfs_bound), 20000, config)


# ---------------------------------------------------------------------------------------------
# delayed-free-reentrant: a destructor run by the processing processes the queue again

REENTRANT = "delayed-free-reentrant"


@pytest.mark.parametrize("version", ["3.14", "main"])
def test_reentrant_processing_is_clean_and_nests(version, monkeypatch):
    """Clean under a few schedules, and every one of them reaches what it is about: a
    process_queue nested in another on the writer's queue (the destructor's collection)."""
    from ftlab.runtime import obmalloc

    depth, nested = [0], [0]
    outer = obmalloc.process_queue

    async def counting(t, head, keep_empty, cb=None):
        depth[0] += 1
        nested[0] += depth[0] > 1 and head is t.mem_free_queue
        try:
            await outer(t, head, keep_empty, cb)
        finally:
            depth[0] -= 1

    monkeypatch.setattr(obmalloc, "process_queue", counting)
    sc = get(REENTRANT)
    for strategy in (Random(5), PCT(5, 2, sc.pct_steps)):
        for i in range(4):
            before = nested[0]
            r = execute(sc, Config(version=version), strategy.execution(i))
            assert r.ok, f"{strategy.describe()} execution {i}: {r.violation}"
            assert nested[0] > before, f"{strategy.describe()} execution {i} never nested"


def test_rd_idx_after_the_free_is_a_negative_merge():
    """The refcount oracle fires on a merge that takes the count below zero (the nested
    processing decrefs X a second time); unmutated it stays quiet (the test above)."""
    sc = get(REENTRANT)
    r, n = first_detection(sc, "process-queue-rd-after-free", 20)
    assert r is not None and n == 1
    assert r.violation.kind == "refcount" and "negative refcount" in r.violation.message


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.14", "main"])
def test_reentrant_clean_under_10000_random_and_pct_schedules_and_dfs(version):
    sc = get(REENTRANT)
    config = Config(version=version)
    for strategy in (Random(201), PCT(201, 1, sc.pct_steps), PCT(202, 2, sc.pct_steps),
                     PCT(203, 3, sc.pct_steps), DFS(sc.dfs_bound)):
        n = 0
        while n < 2500 and (chooser := strategy.execution(n)) is not None:
            r = execute(sc, config, chooser)
            assert r.ok, f"{strategy.describe()} execution {n}: {r.violation} [{r.schedule}]"
            n += 1
