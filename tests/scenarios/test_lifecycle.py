"""The thread-churn scenario (ftlab.scenarios.lifecycle): clean under a few Random, PCT and
3.13.0 schedules by default (10,000 Random+PCT and its DFS bound in the slow run); its mutation
found within 1,000 schedules of the default portfolio."""

from __future__ import annotations

import pytest

from ftlab import Config
from ftlab.explore.campaign import first_detection
from ftlab.explore.execute import execute
from ftlab.runtime import qsbr
from ftlab.scenarios import catalog, get
from ftlab.scenarios.lifecycle import THREAD_CHURN
from ftlab.sim import DFS, PCT, Random


def _clean(strategy, budget: int, config: Config = Config()) -> int:
    sc = get("thread-churn")
    n = 0
    while n < budget and (chooser := strategy.execution(n)) is not None:
        r = execute(sc, config, chooser)
        assert r.ok, f"thread-churn {strategy.describe()} execution {n}: {r.violation} " \
                     f"[{r.schedule}]"
        n += 1
    return n


def test_in_the_catalog_with_its_mutation():
    assert catalog()["thread-churn"] is THREAD_CHURN
    assert set(THREAD_CHURN.mutations) == {"qsbr-unregister-stale-slot"}


def test_the_second_child_grows_the_qsbr_array():
    from ftlab.runtime import Runtime
    rt = Runtime(Config())
    THREAD_CHURN.setup(rt)
    assert rt.qsbr.size == qsbr.MIN_ARRAY_SIZE
    # three slots free: the churner, the freer, the first child
    free, slot = 0, rt.qsbr.freelist
    while slot is not None:
        free, slot = free + 1, slot.freelist_next
    assert free == 3


def test_clean_under_a_few_random_pct_and_3_13_0_schedules():
    sc = get("thread-churn")
    _clean(Random(7), 5)
    _clean(PCT(7, 2, sc.pct_steps), 5)
    _clean(Random(8), 3, Config(version="3.13.0"))


def test_the_mutation_is_found_within_1000_schedules():
    r, n = first_detection(get("thread-churn"), "qsbr-unregister-stale-slot", 1000)
    assert r is not None, "qsbr-unregister-stale-slot not found within 1000 schedules"
    assert r.violation.kind == "segfault", str(r.violation)


@pytest.mark.slow
@pytest.mark.timeout(3600)      # ~540 steps a run: 10,000 runs exceed the default 300 s
def test_clean_under_10000_random_and_pct_schedules_and_dfs():
    sc = get("thread-churn")
    for strategy in (Random(101), PCT(101, 1, sc.pct_steps), PCT(102, 2, sc.pct_steps),
                     PCT(103, 3, sc.pct_steps)):
        assert _clean(strategy, 2500) == 2500
    _clean(DFS(preemption_bound=sc.dfs_bound), 5000)


# ---------------------------------------------------------------------------------------------
# shutdown-del-thread: a destructor at shutdown starts a thread

def test_a_destructor_at_shutdown_gets_python_finalization_error_once():
    sc = get("shutdown-del-thread")
    for strategy in (Random(3), PCT(3, 2, sc.pct_steps)):
        for i in range(5):
            r = execute(sc, Config(), strategy.execution(i))
            assert r.ok, f"{strategy.describe()} execution {i}: {r.violation}"


def test_a_thread_started_at_shutdown_runs_on_a_freed_thread_state():
    sc = get("shutdown-del-thread")
    r, n = first_detection(sc, "finalization-allows-threads", 20)
    assert r is not None and n == 1
    assert r.violation.kind == "segfault" and r.violation.thread.endswith(":late")


def test_the_check_fires_when_thread_start_raises_nothing():
    """The scenario's check on its own: the destructor must have been refused exactly once."""
    from ftlab.runtime import Runtime
    from ftlab.sim.violation import ViolationError

    sc = get("shutdown-del-thread")
    rt = Runtime(Config())
    sc.setup(rt)
    with pytest.raises(ViolationError, match="raised nothing"):
        sc.check(rt)
    rt.shared.refused.append("can't create new thread at interpreter shutdown")
    sc.check(rt)


def test_zapthreads_frees_only_the_thread_states_still_linked():
    from ftlab.runtime import Runtime
    from ftlab.sim.violation import ViolationError

    rt = Runtime(Config())
    left = rt.start_thread(_never_run, name="left")         # linked in set-up, never run
    kept = rt.start_thread(_never_run, name="finalizing")
    rt._zapthreads(kept)
    assert rt.threads_head == [kept]
    rt.mem.load_u32(kept.block)
    with pytest.raises(ViolationError, match="unmapped"):
        rt.mem.load_u32(left.block)


async def _never_run(t) -> None:
    await t.yield_now()


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("version", ["3.13.0", "3.14", "main"])
def test_shutdown_del_thread_clean_under_10000_random_and_pct_schedules_and_dfs(version):
    sc = get("shutdown-del-thread")
    config = Config(version=version)
    for strategy in (Random(101), PCT(101, 1, sc.pct_steps), PCT(102, 2, sc.pct_steps),
                     PCT(103, 3, sc.pct_steps), DFS(sc.dfs_bound)):
        n = 0
        while n < 2500 and (chooser := strategy.execution(n)) is not None:
            r = execute(sc, config, chooser)
            assert r.ok, f"{strategy.describe()} execution {n}: {r.violation} [{r.schedule}]"
            n += 1
