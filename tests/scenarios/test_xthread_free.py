"""The xthread-free scenario (ftlab.scenarios.xthread_free, issue 12 item 2): clean unmutated;
a wrong atomic on a page's `xthread_free` (the owner's exchange as load+store, the pusher's CAS
as a plain store) is found within the default budget, in tens of schedules for most seeds."""

from __future__ import annotations

import pytest

from ftlab import Config
from ftlab.explore.campaign import first_detection
from ftlab.explore.execute import execute
from ftlab.scenarios import get
from ftlab.sim import DFS, PCT, Random

NAME = "xthread-free"


def _clean(strategy, budget: int, config: Config | None = None) -> int:
    sc = get(NAME)
    n = 0
    while n < budget and (chooser := strategy.execution(n)) is not None:
        r = execute(sc, config or Config(), chooser)
        assert r.ok, f"{strategy.describe()} execution {n}: {r.violation} [{r.schedule}]"
        n += 1
    return n


@pytest.mark.parametrize("version", ["3.13.0", "3.14"])
def test_clean_under_100_random_and_pct_schedules(version):
    config = Config(version=version)
    _clean(Random(4), 60, config)
    _clean(PCT(4, 2, get(NAME).pct_steps), 40, config)


def test_the_owner_collects_frees_pushed_by_the_other_threads():
    """The scenario reaches what it is about: remote frees on xthread_free, collected by the
    owner (not only at its final forced collect)."""
    from ftlab.check import install
    from ftlab.runtime import Runtime

    sc = get(NAME)
    rt = Runtime(Config())
    install(rt)
    sc.setup(rt)
    for name, fn in sc.threads:
        rt.start_thread(fn, name=name)
    rt.machine.run(Random(9).execution(0))
    assert rt.machine.violation is None, rt.machine.violation
    counters = rt.mimalloc.counters
    assert counters["frees_remote"] == 4 and counters["thread_free_collected"] >= 3, counters


@pytest.mark.parametrize("mutation", ["mi-thread-free-collect-store", "mi-free-mt-plain-store"])
def test_each_wrong_atomic_is_found_within_the_default_budget(mutation):
    sc = get(NAME)
    r, n = first_detection(sc, mutation)
    assert r is not None, f"{mutation} not found in {n} schedules"
    assert r.violation.kind in sc.mutations[mutation], r.violation
    assert n <= 50, f"{mutation} needed {n} schedules (seed 0 finds it in under 10)"


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 10,000 schedules on a loaded 2-core machine
def test_clean_under_10000_random_and_pct_schedules_and_dfs():
    sc = get(NAME)
    for strategy in (Random(101), PCT(101, 1, sc.pct_steps), PCT(102, 2, sc.pct_steps),
                     PCT(103, 3, sc.pct_steps)):
        assert _clean(strategy, 2500) == 2500
    _clean(DFS(preemption_bound=sc.dfs_bound), 5000)
