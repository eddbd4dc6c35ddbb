"""Per-object critical sections (ftlab.runtime.critical_section): ABBA nesting completes under
every schedule, a stop-the-world completes while a thread is parked on a section, re-entry and
two-object ordering."""

from __future__ import annotations

from dataclasses import replace

from ftlab import Config, run
from ftlab.explore.execute import execute
from ftlab.runtime import critical_section as cs
from ftlab.runtime.object import OB_MUTEX
from ftlab.scenarios import Scenario, get
from ftlab.scenarios.critical_section import CRITICAL_SECTION_ABBA, nested
from ftlab.sim import DFS, Random


def _exhaust(sc: Scenario, strategy, config: Config, budget: int) -> int:
    n = 0
    while n < budget and (chooser := strategy.execution(n)) is not None:
        r = execute(sc, config, chooser)
        assert r.ok, f"execution {n}: {r.violation} [{r.schedule}]"
        n += 1
    return n


def test_abba_nesting_completes_under_every_schedule_with_two_preemptions():
    n = _exhaust(get("critical-section-abba"), DFS(preemption_bound=2), Config(), 5000)
    assert 1 < n < 5000, f"DFS(2) was not exhausted ({n} schedules)"


def test_abba_deadlocks_without_suspension():
    r = run(get("critical-section-abba"),
            Config(mutations=frozenset({"critical-section-no-suspend"})), Random(0))
    found = r
    seed = 0
    while found.ok and seed < 50:
        seed += 1
        found = run(get("critical-section-abba"),
                    Config(mutations=frozenset({"critical-section-no-suspend"})), Random(seed))
    assert not found.ok and found.violation.kind == "deadlock", found.violation


async def _stop_the_world(t) -> None:
    await t.rt.stop_the_world(t)
    await t.rt.start_the_world(t)


async def _ab_with_check(t) -> None:
    c = await cs.begin(t, t.shared.a)
    await t.periodic_check()            # may park for the stop-the-world while holding A
    c2 = await cs.begin(t, t.shared.b)
    await cs.end(t, c2)
    await cs.end(t, c)


async def _ba(t) -> None:
    await nested(t, t.shared.b, t.shared.a)


def _no_check(rt) -> None:
    pass


STW = replace(CRITICAL_SECTION_ABBA, name="cs-stw",
              threads=(("ab", _ab_with_check), ("ba", _ba), ("stw", _stop_the_world)),
              check=_no_check, mutations={})


def test_stop_the_world_completes_while_a_thread_is_blocked_in_a_critical_section():
    n = _exhaust(STW, DFS(preemption_bound=1), Config(), 3000)
    assert 10 < n < 3000, f"DFS(1) was not exhausted ({n} schedules)"
    _exhaust(STW, Random(3), Config(), 200)


def _single(fn) -> Scenario:
    return replace(CRITICAL_SECTION_ABBA, name="cs-single", threads=(("t", fn),),
                   check=_no_check, mutations={})


def test_reentry_on_the_same_object_is_a_no_op_section():
    seen = []

    async def body(t):
        a = t.shared.a
        c1 = await cs.begin(t, a)
        c2 = await cs.begin(t, a)           # the fast CAS fails; the top holds the mutex
        seen.append((c2.pushed, len(t.critical_sections), t.mem.peek(a + OB_MUTEX, 1)))
        await cs.end(t, c2)
        seen.append(t.mem.peek(a + OB_MUTEX, 1))
        await cs.end(t, c1)
        seen.append(t.mem.peek(a + OB_MUTEX, 1))

    r = run(_single(body), Config(), Random(0))
    assert r.ok, r.violation
    assert seen == [(False, 1, cs.LOCKED), cs.LOCKED, 0]


def test_two_object_section_locks_in_address_order_and_detach_suspends_it():
    seen = []

    async def body(t):
        a, b = t.shared.a, t.shared.b
        c = await cs.begin2(t, b, a)
        seen.append((c.mutex, c.mutex2) == (min(a, b) + OB_MUTEX, max(a, b) + OB_MUTEX))
        await t.detach()
        seen.append((c.inactive, t.mem.peek(a + OB_MUTEX, 1), t.mem.peek(b + OB_MUTEX, 1)))
        await t.attach()
        seen.append((c.inactive, t.mem.peek(a + OB_MUTEX, 1), t.mem.peek(b + OB_MUTEX, 1)))
        await cs.end(t, c)

    r = run(_single(body), Config(), Random(0))
    assert r.ok, r.violation
    assert seen == [True, (True, 0, 0), (False, cs.LOCKED, cs.LOCKED)]
