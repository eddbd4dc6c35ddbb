"""Issue 13's shortcuts for stretches with one thread: the run loop's run-to-next-decision path
(`Machine._run_solo`) and the race detector's `solo` thread (started after every other thread
ended, so ordered with everything recorded). Each must give what the general path gives."""

from __future__ import annotations

import pytest

from ftlab.sim import Machine, Random, Replay
from ftlab.sim.race import RaceDetector
from ftlab.sim.strategies import RoundRobin


def _scratch(m: Machine) -> int:
    base = m.mem.reserve(1 << 16)
    m.mem.commit(base, 4 * 4096)
    return base


def test_livelock_of_a_lone_thread_at_the_same_step_as_before():
    # the solo path stops one step short of the bound; the general path takes the step that
    # exceeds it, so the livelock is at max_steps + 1 as with two threads
    m = Machine(max_steps=50)

    async def spin(t):
        while True:
            await t.yield_now()

    m.spawn(spin)
    m.run(Random(0).execution(0))
    assert m.violation is not None and m.violation.kind == "livelock"
    assert m.violation.step == 51 and m.steps == 51


def test_solo_stretches_give_what_the_general_loop_gives():
    # A thread that runs alone for long stretches between decisions (the other waits on an
    # event). The solo path is skipped when an after-step hook is set, so the same schedule run
    # both ways must give the same steps, choices, switches and preemptions.
    from ftlab.sim.sync import Event

    def run(seed: int, general: bool) -> tuple:
        m = Machine()
        if general:
            m.after_step = lambda t: None
        x = _scratch(m)
        ev = Event(m)

        async def long(t):
            for _ in range(20):
                await t.mem.fetch_add(x, 1)
            await ev.set()
            for _ in range(20):
                await t.mem.fetch_add(x, 1)

        async def waiter(t):
            await ev.wait()
            await t.mem.fetch_add(x, 100)

        async def short(t):
            for _ in range(3):
                await t.mem.fetch_add(x, 1000)

        m.spawn(long, name="long")
        m.spawn(waiter, name="waiter")
        m.spawn(short, name="short")
        m.run(Random(seed).execution(0))
        assert m.violation is None, m.violation
        return m.steps, m.choices, m.switches, m.preemptions, m.mem.load_u64(x)

    for seed in range(8):
        fast = run(seed, general=False)
        assert fast == run(seed, general=True)
        assert fast[4] == 3140


def test_a_violation_in_a_solo_stretch_stops_the_run_at_its_step():
    from ftlab.sim.violation import ViolationError

    m = Machine()

    async def lone(t):
        for _ in range(7):
            await t.yield_now()
        raise ViolationError("heap-integrity", "broken in the 7th step")

    m.spawn(lone)
    m.run(RoundRobin().execution(0))
    assert m.violation is not None and m.violation.kind == "heap-integrity" and m.violation.step == 7


def test_the_thread_started_after_all_is_solo_until_it_starts_one():
    race = RaceDetector()
    m = Machine(race=race)
    x = _scratch(m)
    seen = {}

    async def early(t):
        t.mem.store_u64(x, 1)

    async def child(t):
        await t.yield_now()
        t.mem.store_u64(x, 3)           # races with the finalizer's store after the spawn

    async def finalizer(t):
        seen["solo"] = race.solo is t
        before = race.checks
        t.mem.store_u64(x, 2)           # ordered after `early`: no check, no record
        seen["unchecked"] = race.checks == before
        await t.spawn(child)
        seen["cleared"] = race.solo is None
        await t.yield_now()
        t.mem.load_u64(x)

    m.spawn(early)
    m.run(RoundRobin().execution(0))
    assert m.violation is None
    m.spawn(finalizer, after_all=True)
    m.run(Random(1).execution(0))
    assert seen == {"solo": True, "unchecked": True, "cleared": True}
    # the finalizer's read after the spawn and the child's write are unordered: still found
    found = []
    for seed in range(20):
        mm = Machine(race=RaceDetector())
        xx = _scratch(mm)

        async def early2(t):
            t.mem.store_u64(xx, 1)

        async def child2(t):
            await t.yield_now()
            t.mem.store_u64(xx, 3)

        async def fin2(t):
            t.mem.store_u64(xx, 2)
            await t.spawn(child2)
            await t.yield_now()
            t.mem.load_u64(xx)

        mm.spawn(early2)
        mm.run(RoundRobin().execution(0))
        mm.spawn(fin2, after_all=True)
        mm.run(Random(seed).execution(0))
        found.append(mm.violation.kind if mm.violation else None)
    assert "data-race" in found


def test_not_solo_while_another_thread_is_unfinished():
    race = RaceDetector()
    m = Machine(race=race)
    x = _scratch(m)

    async def unfinished(t):
        await t.yield_now()
        t.mem.store_u64(x, 1)

    async def late(t):
        await t.yield_now()
        t.mem.store_u64(x + 8, 2)

    m.spawn(unfinished)
    m.spawn(late, after_all=True)
    assert race.solo is None
    m.run(RoundRobin().execution(0))
    assert m.violation is None and race.checks == 2     # both stores checked and recorded


def test_a_thread_started_by_set_up_code_while_one_runs_solo_is_refused():
    m = Machine(race=RaceDetector())

    async def lone(t):
        await t.yield_now()

    m.spawn(lone, after_all=True)
    with pytest.raises(RuntimeError, match="runs alone after every other thread"):
        m.spawn(lone)
