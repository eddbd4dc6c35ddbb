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
