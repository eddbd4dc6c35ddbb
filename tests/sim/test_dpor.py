"""DPOR (ftlab/sim/dpor.py): one complete execution per Mazurkiewicz trace, every trace of the
unbounded DFS, every violation it finds; the search crosses process boundaries; `explore
--strategy dpor` says `verified` when the search completes."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import pytest

from ftlab.config import Config
from ftlab.explore.campaign import explore
from ftlab.explore.execute import execute
from ftlab.explore.portfolio import ExploreError, dfs_restore, dfs_state, parse_spec
from ftlab.scenarios import Scenario, catalog
from ftlab.sim.dpor import DPOR, Traced, independent, trace_class
from ftlab.sim.strategies import DFS, PCT, Random
from ftlab.sim.sync import Event, Mutex


def _search(scenario: Scenario, strategy, config: Config | None = None, cap: int = 20_000,
            skip_unfinished: bool = False):
    """{trace class: violation kind or None} of every complete execution, and the count of
    executions run (DPOR's blocked ones included)."""
    config = config or Config()
    classes: dict = {}
    n = 0
    while n < cap:
        chooser = strategy.execution(n)
        if chooser is None:
            break
        traced = chooser if isinstance(strategy, DPOR) else Traced(chooser)
        r = execute(scenario, config, traced)
        n += 1
        if isinstance(strategy, DPOR):
            if traced.blocked >= 0:
                continue
            assert trace_class(traced.events) not in classes, \
                f"DPOR ran two executions of one trace ({r.schedule})"
        classes[trace_class(traced.events)] = r.violation.kind if r.violation else None
    if skip_unfinished and not strategy.exhausted:
        pytest.skip(f"{strategy.describe()} did not finish in {cap} executions")
    assert strategy.exhausted, f"{strategy.describe()} did not finish in {cap} executions"
    return classes, n


# ---------------------------------------------------------------------------------------------
# Generated programs: atomics, mutexes, an event, joins and a data-dependent branch

@dataclass
class _Shared:
    addr: list[int]
    mu: list[Mutex]
    ev: Event


def _program(seed: int, n_threads: int, n_ops: int, exit_ends_others: bool = False) -> Scenario:
    rng = random.Random(seed)
    programs = []
    for i in range(n_threads):
        ops, held = [], None
        for _ in range(n_ops):
            kind = rng.choice(["load", "store", "fadd", "lock", "set", "wait", "join", "branch"])
            a = rng.randrange(2)
            if kind == "lock":
                if held is None:
                    held = a
                    ops.append(("lock", a))
                else:
                    ops.append(("unlock", held))
                    held = None
            elif kind == "join":
                if i + 1 < n_threads:
                    ops.append(("join", rng.randrange(i + 1, n_threads)))   # no join cycle
            else:
                ops.append((kind, a))
        if held is not None:
            ops.append(("unlock", held))
        programs.append(ops)

    def setup(rt) -> None:
        base = rt.mem.reserve(1 << 16)
        rt.mem.commit(base, 4096)
        rt.shared = _Shared([base, base + 64], [Mutex(rt.machine, "m0"), Mutex(rt.machine, "m1")],
                            Event(rt.machine, "e"))

    def thread(i: int):
        async def body(t) -> None:
            s = t.shared
            await t.vt.yield_now()      # every thread has started before its first operation
            for kind, a in programs[i]:
                if kind == "load":
                    await t.mem.load(s.addr[a])
                elif kind == "store":
                    await t.mem.store(s.addr[a], i + 1)
                elif kind == "fadd":
                    await t.mem.fetch_add(s.addr[a], 1)
                elif kind == "lock":
                    await s.mu[a].lock()
                elif kind == "unlock":
                    await s.mu[a].unlock()
                elif kind == "set":
                    await s.ev.set()
                elif kind == "wait":
                    await s.ev.wait()
                elif kind == "join":
                    await t.vt.join(t.rt.machine.threads[a])
                elif await t.mem.load(s.addr[a]) & 1:        # branch on what was read
                    await t.mem.store(s.addr[1 - a], 3)
            if i == 0 and exit_ends_others:     # the process exit: the others end where they are
                m = t.rt.machine
                for u in m.threads[1:]:
                    m.end_thread(u, "ended by the process exit")
        return body

    return Scenario(name=f"generated-{seed}", description=repr(programs),
                    threads=tuple((f"t{i}", thread(i)) for i in range(n_threads)),
                    setup=setup, interpreter=False)


def _same_traces_as_dfs(program: Scenario) -> None:
    by_dpor, _ = _search(program, DPOR())
    by_dfs, _ = _search(program, DFS(), skip_unfinished=True)     # a few spaces are too big
    assert set(by_dpor) == set(by_dfs), program.description
    assert by_dpor == by_dfs, "an equivalent execution ended differently: " + program.description


@pytest.mark.parametrize("seed", range(16))
def test_generated_programs_one_execution_per_trace_and_every_trace(seed):
    _same_traces_as_dfs(_program(seed, 2, 2 + seed % 2))


@pytest.mark.parametrize("seed", range(8))
def test_generated_programs_whose_exit_ends_the_other_threads(seed):
    # not maximal executions: a thread ended before its next step must still get to run it
    # first in another execution (the first execution runs t0 alone to its exit)
    _same_traces_as_dfs(_program(seed, 2 + seed % 2, 2, exit_ends_others=True))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(200))
def test_generated_programs_one_execution_per_trace_and_every_trace_larger(seed):
    _same_traces_as_dfs(_program(seed, 2, 3) if seed % 2 else _program(seed, 3, 2))


@pytest.mark.slow
def test_generated_program_with_sleep_set_blocking_still_covers_every_trace():
    # sleep sets stop some of this program's executions early (the waste source-DPOR has)
    program = _program(0, 3, 3)
    dpor = DPOR()
    by_dpor, _ = _search(program, dpor)
    assert (dpor.blocked, dpor.executions) == (5, 32)
    by_dfs, _ = _search(program, DFS())
    assert by_dpor == by_dfs, program.description


# ---------------------------------------------------------------------------------------------
# The engine scenarios

ENGINE = ("lost-update", "message-passing", "lock-order")


@pytest.mark.parametrize("name", ENGINE)
def test_engine_scenarios_dpor_gives_the_traces_of_the_unbounded_dfs(name):
    sc = catalog()[name]
    by_dpor, n_dpor = _search(sc, DPOR())
    by_dfs, n_dfs = _search(sc, DFS())
    assert set(by_dpor) == set(by_dfs) and n_dpor <= n_dfs


@pytest.mark.parametrize("name", ENGINE)
def test_engine_mutations_dpor_finds_every_violation_the_dfs_finds(name):
    sc = catalog()[name]
    for mutation in sc.mutations:
        config = Config(mutations=frozenset([mutation]))
        by_dpor, _ = _search(sc, DPOR(), config)
        by_dfs, _ = _search(sc, DFS(), config)
        kinds = {k for k in by_dfs.values() if k}
        assert kinds and kinds == {k for k in by_dpor.values() if k}, mutation


def test_unsync_rmw_needs_fewer_executions_than_dfs():
    config = Config(mutations=frozenset(["unsync-rmw"]))
    _, n_dpor = _search(catalog()["lost-update"], DPOR(), config)
    _, n_dfs = _search(catalog()["lost-update"], DFS(), config)
    assert (n_dpor, n_dfs) == (34, 70)      # 70 interleavings of 4+4 steps, 34 traces


# ---------------------------------------------------------------------------------------------
# The runtime: a lock-free reader against an owner's free, joined at the end

def test_tryincref_zero_random_and_pct_runs_are_traces_dpor_ran():
    sc = catalog()["tryincref-zero"]
    by_dpor, n = _search(sc, DPOR(), cap=300)
    for i in range(12):
        strategy = Random(i) if i % 2 else PCT(i, 2, sc.pct_steps)
        traced = Traced(strategy.execution(0))
        r = execute(sc, Config(), traced)
        assert by_dpor.get(trace_class(traced.events), "missing") == (
            r.violation.kind if r.violation else None), r.schedule


# ---------------------------------------------------------------------------------------------
# Mechanics

def test_independence_is_a_shared_key_with_a_write():
    assert independent({1: False}, {1: False})
    assert not independent({1: False}, {1: True})
    assert not independent({2: True, 1: False}, {1: True})
    assert independent({1: True}, {2: True})


def test_the_search_state_crosses_a_process_boundary_unchanged():
    sc = catalog()["lost-update"]
    config = Config(mutations=frozenset(["unsync-rmw"]))
    whole = DPOR()
    schedules = []
    while (c := whole.execution(len(schedules))) is not None:
        schedules.append(execute(sc, config, c).schedule)
    chained, i, blob = [], 0, None
    while True:
        dpor = dfs_restore(None, blob, "dpor")
        c = dpor.execution(i)
        if c is None:
            break
        chained.append(execute(sc, config, c).schedule)
        i += 1
        blob = dfs_state(dpor)
        json.loads(json.dumps(dpor.snapshot()))     # plain data
    assert chained == schedules and len(schedules) == 34


def test_dpor_refuses_the_c11_memory_model():
    with pytest.raises(ValueError, match="sequential consistency only"):
        execute(catalog()["lost-update"], Config(memory_model="c11"), DPOR().execution(0))


def test_strategy_spec_dpor_takes_no_parameter():
    assert str(parse_spec("dpor")) == "dpor" and parse_spec("dpor").chained
    with pytest.raises(ExploreError, match="no bound"):
        parse_spec("dpor:2")


def test_explore_says_verified_when_the_dpor_search_completes(tmp_path):
    result = explore(["lost-update", "lock-order"], strategies=["dpor"], version="3.14",
                     db=str(tmp_path / "r.sqlite"))
    verdicts = {(r.scenario, r.mutation or None): r.verdict for r in result.rows}
    assert verdicts[("lost-update", None)] == "verified (dpor, 6 executions)"
    assert verdicts[("lock-order", None)] == "verified (dpor, 4 executions)"
    assert verdicts[("lost-update", "unsync-rmw")] == "found check"
    assert verdicts[("lock-order", "lock-order-inversion")] == "found deadlock"


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n, s in catalog().items() if s.dpor])
def test_checked_scenarios_every_sampled_run_is_a_trace_dpor_ran(name):
    # what `Scenario.dpor` claims: the footprints hold every dependency these runs have
    sc = catalog()[name]
    config = Config(version="3.14" if not sc.versions or "3.14" in sc.versions else sc.versions[0])
    by_dpor, _ = _search(sc, DPOR(), config, cap=2000)
    assert not any(by_dpor.values()), "the unmutated scenario has a violating trace"
    for i in range(60):
        strategy = Random(i) if i % 2 else PCT(i, 2, sc.pct_steps)
        traced = Traced(strategy.execution(0))
        r = execute(sc, config, traced)
        assert trace_class(traced.events) in by_dpor, f"{name}: {r.schedule} is a trace DPOR missed"
