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
from ftlab.sim import DFS, PCT, Random, Replay


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


def test_a_thread_started_at_shutdown_is_found_and_leaves_at_must_exit():
    """Without the start check the destructor's thread starts; `thread_run`'s
    `_PyThreadState_MustExit` (gh-108987) makes it leave without running, so the scenario's
    check is what finds the mutation."""
    sc = get("shutdown-del-thread")
    r, n = first_detection(sc, "finalization-allows-threads", 20)
    assert r is not None and n == 1
    assert r.violation.kind == "check" and "raised nothing" in r.violation.message
    again = execute(sc, Config(mutations=frozenset({"finalization-allows-threads"}), trace=True),
                    Replay(r.schedule).execution(0))
    late = [e for e in again.trace if e.what == "thread_run: exits at shutdown"]
    assert len(late) == 1, "the late thread leaves at thread_run, once"


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


# ---------------------------------------------------------------------------------------------
# start-races-finalize (issue 11): thread start racing Py_FinalizeEx, with daemon threads

def test_start_races_finalize_in_the_catalog():
    sc = catalog()["start-races-finalize"]
    assert sc.daemon == ("daemon",)
    assert set(sc.mutations) == {"finalization-frees-daemon-tstate",
                                 "finalization-restarts-daemons"}
    assert sc.versions == ("3.14", "main")


def test_start_races_finalize_clean_under_a_few_schedules():
    sc = get("start-races-finalize")
    for version in ("3.14", "main"):
        for strategy in (Random(5), PCT(5, 2, sc.pct_steps)):
            for i in range(15):
                r = execute(sc, Config(version=version), strategy.execution(i))
                assert r.ok, f"{version} {strategy.describe()} {i}: {r.violation} [{r.schedule}]"


def test_both_sides_of_the_race_happen():
    """Some schedules let the child run before finalization, others park it (SUSPENDED) or
    make it leave at `_PyThreadState_MustExit`; the daemon's start always succeeds."""
    sc = get("start-races-finalize")
    seen = set()
    for i in range(40):
        r = execute(sc, Config(trace=True), PCT(7, 2, sc.pct_steps).execution(i))
        assert r.ok, r.violation
        what = [e.what for e in r.trace]
        if any(e.what == "exit" and r.threads[e.thread].endswith(":child") for e in r.trace):
            seen.add("child ran to its end")
        if any(w.startswith("attach: the interpreter is finalizing") for w in what):
            seen.add("must exit at attach")
        if any(w == "ended by the process exit" for w in what):
            seen.add("ended by the process exit")
    assert seen == {"child ran to its end", "must exit at attach", "ended by the process exit"}


def test_freeing_daemon_thread_states_is_found():
    sc = get("start-races-finalize")
    r, n = first_detection(sc, "finalization-frees-daemon-tstate", 200)
    assert r is not None, f"not found in {n} schedules"
    assert r.violation.kind == "segfault" and "released region" in r.violation.message


def test_restarting_the_daemons_is_found_by_the_lifecycle_oracle():
    sc = get("start-races-finalize")
    r, n = first_detection(sc, "finalization-restarts-daemons", 50)
    assert r is not None and r.violation.kind == "lifecycle"
    assert "started finalizing" in r.violation.message


def test_3_13_0_frees_thread_states_a_thread_may_still_attach_with():
    """The window the mutation opens is CPython 3.13's own: `_PyThreadState_DeleteList` frees
    the unlinked thread states (3.14 reference-counts them since gh-130649, for
    gh-124878; 3.13.15 still frees them). The mutation's counterexample, replayed unmutated under
    3.13.0, faults the same way."""
    sc = get("start-races-finalize")
    r, _ = first_detection(sc, "finalization-frees-daemon-tstate", 200)
    again = execute(sc, Config(version="3.13.0"), Replay(r.schedule).execution(0))
    assert again.violation is not None and again.violation.kind == "segfault"
    assert execute(sc, Config(version="3.14"), Replay(r.schedule).execution(0)).ok


def test_the_race_check_fires_on_a_refused_daemon_start_and_a_missing_refusal():
    from ftlab.runtime import Runtime
    from ftlab.sim.violation import ViolationError

    sc = get("start-races-finalize")
    rt = Runtime(Config())
    sc.setup(rt)
    with pytest.raises(ViolationError, match="finalizing thread's start raised nothing"):
        sc.check(rt)
    rt.shared.late_refused.append("can't create new thread at interpreter shutdown")
    sc.check(rt)
    rt.shared.refused.append("can't create new thread at interpreter shutdown")
    with pytest.raises(ViolationError, match="the daemon's thread start raised"):
        sc.check(rt)


def _finalizing_main(log):
    async def main(t) -> None:
        await t.spawn(_non_daemon, log, name="worker", daemon=False)
        await t.spawn(_daemon_parent, log, name="dparent", daemon=True)
        await t.rt.finalize_ex(t)
        log.append("finalized")
    return main


async def _non_daemon(t, log) -> None:
    for _ in range(3):
        await t.periodic_check()
    log.append("worker done")


async def _daemon_parent(t, log) -> None:
    child = await t.spawn(_never_run, name="dchild")
    log.append(f"child daemon={child.daemon}")


def test_finalize_ex_joins_non_daemon_threads_and_children_inherit_daemon():
    from ftlab.scenarios import Scenario

    inherited = 0
    for i in range(20):
        log: list[str] = []
        sc = Scenario(name="t", description="t", threads=(("main", _finalizing_main(log)),))
        r = execute(sc, Config(), Random(11).execution(i))
        assert r.ok, r.violation
        assert log.index("worker done") < log.index("finalized"), log
        assert "child daemon=False" not in log
        inherited += "child daemon=True" in log
    assert inherited > 0, "the daemon parent never got to start its child"


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("version", ["3.14", "main"])
def test_start_races_finalize_clean_under_10000_random_and_pct_schedules_and_dfs(version):
    sc = get("start-races-finalize")
    config = Config(version=version)
    for strategy in (Random(101), PCT(101, 1, sc.pct_steps), PCT(102, 2, sc.pct_steps),
                     PCT(103, 3, sc.pct_steps), DFS(sc.dfs_bound)):
        n = 0
        while n < 2000 and (chooser := strategy.execution(n)) is not None:
            r = execute(sc, config, chooser)
            assert r.ok, f"{strategy.describe()} execution {n}: {r.violation} [{r.schedule}]"
            n += 1
