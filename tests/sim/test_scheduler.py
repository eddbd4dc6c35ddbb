"""The scheduler and the strategies: exact schedule counts, determinism, blocking, bounds."""

from __future__ import annotations

import itertools
import math

import pytest

from ftlab.sim import DFS, PCT, Machine, Random, Replay, RoundRobin, ScheduleError, decode, encode
from ftlab.sim.race import RaceDetector
from ftlab.sim.sync import Event, Mutex


def _program(m: Machine, steps: list[int]) -> int:
    """Threads that each do `steps[i]` atomic increments on their own word."""
    base = m.mem.reserve(1 << 16)
    m.mem.commit(base, 4096)

    def make(i: int, n: int):
        async def body(t):
            for _ in range(n):
                await t.mem.fetch_add(base + 8 * i, 1)
        return body

    for i, n in enumerate(steps):
        m.spawn(lambda t, f=make(i, n): f(t), name=f"w{i}")
    return base


def _explore(strategy, steps: list[int], limit: int = 100_000) -> list[tuple[int, ...]]:
    seen = []
    for i in range(limit):
        chooser = strategy.execution(i)
        if chooser is None:
            return seen
        m = Machine()
        _program(m, steps)
        m.run(chooser)
        assert m.violation is None
        seen.append(tuple(m.choices))
    raise AssertionError("strategy did not exhaust")


def _interleavings(steps: list[int]):
    """Brute force: every sequence of thread indices with steps[i] occurrences of i."""
    pool = [i for i, n in enumerate(steps) for _ in range(n)]
    return set(itertools.permutations(pool))


def _preemptions(seq: tuple[int, ...], steps: list[int]) -> int:
    left = list(steps)
    count = 0
    prev = None
    for i in seq:
        if prev is not None and i != prev and left[prev] > 0:
            count += 1
        left[i] -= 1
        prev = i
    return count


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_dfs_unbounded_visits_binomial_many_schedules(n):
    schedules = _explore(DFS(), [n, n])
    assert len(schedules) == math.comb(2 * n, n)
    assert len(set(schedules)) == len(schedules)


@pytest.mark.parametrize("steps", [[2, 2], [3, 2], [3, 3], [2, 2, 2], [2, 1, 2]])
@pytest.mark.parametrize("bound", [0, 1, 2])
def test_dfs_bounded_counts_match_brute_force(steps, bound):
    want = [s for s in _interleavings(steps) if _preemptions(s, steps) <= bound]
    dfs = DFS(preemption_bound=bound)
    got = _explore(dfs, steps)
    assert len(got) == len(want)
    assert dfs.exhausted
    assert dfs.executions == len(want)


def test_dfs_visits_fewer_preemptions_first():
    got = _explore(DFS(preemption_bound=2), [2, 2])
    # decisions only where both can run; reconstruct full orders from the choices
    counts = []
    for choices in got:
        m = Machine()
        _program(m, [2, 2])
        m.run(Replay(list(choices)).execution(0))
        counts.append(m.preemptions)
    assert counts == sorted(counts)


def test_same_seed_same_trace_for_100_seeds():
    for seed in range(100):
        traces = []
        for _ in range(2):
            m = Machine(trace=True, race=RaceDetector())
            _program(m, [3, 3, 2])
            m.run(Random(seed).execution(0))
            traces.append([(e.step, e.thread, e.what) for e in m.trace])
        assert traces[0] == traces[1]


def test_replay_reproduces_trace():
    for seed in range(20):
        m = Machine(trace=True)
        _program(m, [3, 3])
        m.run(PCT(seed, depth=2, steps=6).execution(seed))
        again = Machine(trace=True)
        _program(again, [3, 3])
        again.run(Replay(encode(m.choices)).execution(0))
        assert again.trace == m.trace


def test_replay_refuses_a_choice_that_is_not_runnable():
    m = Machine()
    _program(m, [2, 2])
    with pytest.raises(ScheduleError, match="diverges at decision 0.*picks thread c"):
        m.run(Replay([2, 0]).execution(0))


def test_replay_refuses_a_schedule_that_ends_early():
    m = Machine()
    _program(m, [2, 2])
    with pytest.raises(ScheduleError, match="schedule ends at decision 1"):
        m.run(Replay([0]).execution(0))


def test_replay_refuses_a_schedule_that_is_too_long():
    m = Machine()
    _program(m, [1, 1])
    with pytest.raises(ScheduleError, match="1 more choice"):
        m.run(Replay([0, 1]).execution(0))


@pytest.mark.parametrize("bad", [
    lambda s: s[:-1],                      # truncated checksum
    lambda s: s[:4] + s[5:],               # a character removed
    lambda s: s.replace("a", "b", 1),      # an edited choice
    lambda s: "S2:" + s[3:],               # another version
    lambda s: "hello",
    lambda s: s.split(".")[0],             # no checksum
])
def test_schedule_string_edits_are_refused(bad):
    s = encode([0, 0, 1, 0, 1, 1, 2, 0])
    with pytest.raises(ScheduleError):
        decode(bad(s))


def test_schedule_round_trip():
    for choices in ([], [0], [1, 1, 1, 0], list(range(52)), [5] * 1000):
        assert decode(encode(choices)) == choices


def test_round_robin_alternates():
    m = Machine()
    _program(m, [2, 2])
    m.run(RoundRobin(1).execution(0))
    assert m.choices == [0, 1, 0]


def test_mutex_parks_waiters_without_busy_loop():
    m = Machine(race=RaceDetector())
    mu = Mutex(m, "mu")
    order = []

    async def body(t):
        await mu.lock()
        order.append(t.index)
        await t.yield_now()
        await t.yield_now()
        await mu.unlock()

    for i in range(3):
        m.spawn(body, name=f"t{i}")
    m.run(RoundRobin(1).execution(0))
    assert m.violation is None
    assert sorted(order) == [0, 1, 2]
    # every resumption of a parked thread is after an unlock: few steps, no spinning
    assert m.steps <= 3 * 4 + 3


def test_deadlock_names_each_wait():
    m = Machine()
    a, b = Mutex(m, "A"), Mutex(m, "B")

    async def ab(t):
        await a.lock(); await b.lock(); await b.unlock(); await a.unlock()

    async def ba(t):
        await b.lock(); await a.lock(); await a.unlock(); await b.unlock()

    m.spawn(ab, name="ab")
    m.spawn(ba, name="ba")
    m.run(Replay([0, 1, 0]).execution(0))
    v = m.violation
    assert v is not None and v.kind == "deadlock"
    assert "a:ab waits for B (held by b:ba)" in v.details
    assert "b:ba waits for A (held by a:ab)" in v.details


def test_livelock_at_the_step_bound():
    m = Machine(max_steps=50)

    async def spin(t):
        while True:
            await t.yield_now()

    m.spawn(spin)
    m.run(Random(0).execution(0))
    assert m.violation is not None and m.violation.kind == "livelock"


def test_event_wait_blocks_until_set():
    m = Machine()
    ev = Event(m, "go")
    seen = []

    async def waiter(t):
        await ev.wait()
        seen.append("woke")

    async def setter(t):
        seen.append("set")
        await ev.set()

    m.spawn(waiter)
    m.spawn(setter)
    m.run(RoundRobin(1).execution(0))
    assert seen == ["set", "woke"]


def test_spawn_and_join():
    m = Machine(race=RaceDetector())
    base = m.mem.reserve(1 << 16)
    m.mem.commit(base, 4096)

    async def child(t, k):
        t.mem.store_u64(base, k)
        return k * 2

    async def parent(t):
        c = await t.spawn(child, 21)
        r = await t.join(c)
        assert t.mem.load_u64(base) == 21
        return r

    p = m.spawn(parent)
    m.run(Random(3).execution(0))
    assert m.violation is None
    assert p.result == 42


def test_new_thread_runs_to_its_first_scheduling_point_at_spawn():
    m = Machine()
    log = []

    async def body(t):
        log.append("prefix")
        await t.yield_now()
        log.append("after")

    m.spawn(body)
    assert log == ["prefix"]
    m.run(Random(0).execution(0))
    assert log == ["prefix", "after"]


def test_a_model_bug_is_reported_as_a_crash_not_raised():
    m = Machine()

    async def body(t):
        await t.yield_now()
        raise KeyError("oops")

    m.spawn(body)
    m.run(Random(0).execution(0))
    assert m.violation.kind == "crash" and "KeyError" in m.violation.message


def test_pct_executions_depend_only_on_seed_and_index():
    s1 = _explore_one(PCT(7, 3, 10), 5)
    s2 = _explore_one(PCT(7, 3, 10), 5)
    assert s1 == s2


def _explore_one(strategy, i):
    m = Machine()
    _program(m, [3, 3, 3])
    m.run(strategy.execution(i))
    return m.choices


def test_try_lock_takes_a_free_mutex_and_refuses_a_held_one():
    m = Machine(race=RaceDetector())
    mu = Mutex(m, "mu")
    got = {}

    async def first(t):
        got["first"] = await mu.try_lock()
        await t.yield_now()
        await mu.unlock()

    async def second(t):
        got["second"] = await mu.try_lock()

    m.spawn(first)
    m.spawn(second)
    m.run(Replay([0, 1]).execution(0))
    assert m.violation is None
    assert got == {"first": True, "second": False}


def test_dfs_snapshot_and_restore_split_a_search_without_overlap():
    whole = _explore(DFS(preemption_bound=1), [3, 3])
    first = DFS(preemption_bound=1)
    part = []
    for i in range(5):
        m = Machine()
        _program(m, [3, 3])
        m.run(first.execution(i))
        part.append(tuple(m.choices))
    rest = _explore(DFS.restore(first.snapshot()), [3, 3])
    assert part + rest == whole
