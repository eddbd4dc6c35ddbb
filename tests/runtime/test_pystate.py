"""Thread states (`ftlab/runtime/pystate.py`): attach and detach, stop-the-world, the eval
breaker and the order of `_Py_HandlePending`, thread creation and deletion."""

from __future__ import annotations

import pytest

from ftlab import Config
from ftlab.check.qsbr import QsbrOracle
from ftlab.runtime import Runtime, qsbr
from ftlab.runtime.observer import Observer
from ftlab.runtime.pystate import (
    EVAL_EXPLICIT_MERGE_BIT,
    EVAL_PLEASE_STOP_BIT,
    GC_SCHEDULED_BIT,
    THREAD_SUSPENDED,
    ThreadState,
    set_eval_breaker_bit,
)
from ftlab.sim import PCT, Random, RoundRobin
from ftlab.sim.violation import ViolationError


class _WorldInvariant:
    """After every step: while the world is stopped, every linked thread but the requester is
    SUSPENDED (none can touch refcounts, heaps or its QSBR slot)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.stopped_steps = 0
        rt.machine.after_step = self

    def __call__(self, vt) -> None:
        stw = self.rt.stw
        if stw.world_stopped:
            self.stopped_steps += 1
            for t in self.rt.threads_head:
                if t is not stw.requester:
                    assert t.peek_state() == THREAD_SUSPENDED, f"{t.name} runs in a stopped world"


def _run(rt: Runtime, chooser=None) -> Runtime:
    rt.machine.run(chooser or RoundRobin().execution(0))
    v = rt.machine.violation
    if v is not None:
        raise ViolationError(v.kind, v.message + "\n" + "\n".join(v.details), v.details)
    return rt


def _schedules(n_random: int, n_pct: int, steps: int = 200):
    for i in range(n_random):
        yield Random(21).execution(i)
    for i in range(n_pct):
        yield PCT(21, depth=3, steps=steps).execution(i)


# ---------------------------------------------------------------------------------------------
# Thread creation and deletion

def test_set_up_threads_are_linked_and_registered_and_attach_as_their_first_step():
    rt = Runtime(Config())
    seen = []

    async def body(t):
        seen.append((t.name, t.status, t.qsbr.peek_seq() == rt.qsbr.peek_wr_seq()))

    a = rt.start_thread(body, name="a")
    b = rt.start_thread(body, name="b")
    assert rt.threads_head == [b, a]                        # newest first, as in C
    assert a.qsbr.tstate is a and b.qsbr.tstate is b
    assert a.status == b.status == "detached"               # the attach is their first step
    _run(rt)
    assert seen == [("a", "attached", True), ("b", "attached", True)]
    assert rt.threads_head == [] and a.status == b.status == "deleted"
    assert all(not s.allocated for s in rt.qsbr.slots)


def test_bare_threads_never_enter_the_interpreter():
    rt = Runtime(Config())
    seen = []

    async def body(t):
        seen.append((t.status, t.qsbr))

    rt.start_thread(body, name="bare", interpreter=False)
    assert rt.threads_head == [] and rt.qsbr.size == 0
    _run(rt)
    assert seen == [("detached", None)]


def test_a_thread_must_end_attached():
    rt = Runtime(Config())

    async def body(t):
        await t.detach()

    rt.start_thread(body, name="t")
    rt.machine.run(RoundRobin().execution(0))
    assert rt.machine.violation.kind == "crash"
    assert "must end attached" in rt.machine.violation.message


# ---------------------------------------------------------------------------------------------
# Stop-the-world

def _stw_program(rt: Runtime, worker_checks: int):
    """`worker` runs periodic checks (attached); `sleeper` waits detached for an event that
    the requester sets only after restarting the world; `requester` stops the world."""
    shared = {"at stop": None}
    released = rt.event("released")

    async def worker(t):
        for _ in range(worker_checks):
            await t.periodic_check()

    async def sleeper(t):
        await t.detach()
        await released.wait()       # a sim event: detached while it blocks
        await t.attach()

    async def requester(t):
        await t.periodic_check()
        await rt.stop_the_world(t)
        # a thread that is no longer linked is being deleted (its status stays ATTACHED
        # until the free, as in C) or is gone
        shared["at stop"] = {u.name: u.status if u in rt.threads_head else "unlinked"
                             for u in rt.tstates if u is not t}
        for _ in range(3):
            await t.yield_now()
        shared["parked while stopped"] = [u.name for u in rt.stw.parked]
        await rt.start_the_world(t)
        await released.set()

    rt.start_thread(worker, name="worker")
    rt.start_thread(sleeper, name="sleeper")
    rt.start_thread(requester, name="requester")
    return shared


def test_stop_the_world_waits_for_attached_threads_and_not_for_detached_ones():
    outcomes = {}
    for chooser in _schedules(120, 120):
        rt = Runtime(Config())
        shared = _stw_program(rt, worker_checks=6)
        inv = _WorldInvariant(rt)
        _run(rt, chooser)
        at_stop = shared["at stop"]
        # the attached worker parked at a periodic check or was already leaving; the
        # detached sleeper was parked without running (it is blocked on its event)
        assert at_stop["worker"] in ("suspended", "unlinked")
        assert at_stop["sleeper"] == "suspended"
        # parked in `attach`: the worker after its stop request, either of them if the stop
        # came before their first step
        assert set(shared["parked while stopped"]) <= {"worker", "sleeper"}
        outcomes[at_stop["worker"]] = outcomes.get(at_stop["worker"], 0) + 1
        assert inv.stopped_steps > 0
    # the worker was caught running in some schedules and leaving in others
    assert outcomes.get("suspended", 0) > 20 and outcomes.get("unlinked", 0) > 20


def test_an_attached_thread_is_asked_to_stop_at_its_next_periodic_check():
    """The worker runs until the world has been stopped, so only the stop request (the
    EVAL_PLEASE_STOP bit) can park it; Random only: a spinning thread starves under PCT."""
    for i in range(60):
        rt = Runtime(Config())
        s = {"stopped": False, "checks after": 0}

        async def worker(t):
            while not s["stopped"]:
                await t.periodic_check()

        async def requester(t):
            await t.yield_now()
            await rt.stop_the_world(t)
            s["stopped"] = True
            s["worker"] = rt.tstates[0].status
            await rt.start_the_world(t)

        rt.start_thread(worker, name="worker")
        rt.start_thread(requester, name="requester")
        _WorldInvariant(rt)
        _run(rt, Random(i).execution(0))
        assert s["worker"] == "suspended"


def test_a_detached_thread_blocked_elsewhere_does_not_hold_up_the_world():
    for chooser in _schedules(60, 60):
        rt = Runtime(Config())
        shared = _stw_program(rt, worker_checks=2)
        _WorldInvariant(rt)
        _run(rt, chooser)       # a wait for the sleeper would be a deadlock
        assert shared["at stop"]["sleeper"] == "suspended"


def test_a_detached_thread_cannot_attach_while_the_world_is_stopped():
    parked = 0
    for chooser in _schedules(150, 150):
        rt = Runtime(Config())
        log = []

        async def flipper(t):
            for _ in range(3):
                await t.detach()
                await t.yield_now()
                await t.attach()
                log.append(rt.world_stopped)        # never attached in a stopped world

        async def requester(t):
            await rt.stop_the_world(t)
            for _ in range(4):
                await t.yield_now()
            log.append(("parked", [u.name for u in rt.stw.parked]))
            await rt.start_the_world(t)

        rt.start_thread(flipper, name="flipper")
        rt.start_thread(requester, name="requester")
        _WorldInvariant(rt)
        _run(rt, chooser)
        assert [x for x in log if x is True] == []
        parked += any(x == ("parked", ["flipper"]) for x in log)
    assert parked > 10      # it did try, and blocked until the world restarted


def test_concurrent_stop_the_world_requests_take_turns():
    for chooser in _schedules(100, 100):
        rt = Runtime(Config())
        inside = []

        async def gc_like(t):
            await t.periodic_check()
            await rt.stop_the_world(t)      # the second requester waits detached
            inside.append(t.name)
            assert len(inside) == 1, f"two stopped worlds at once: {inside}"
            await t.yield_now()
            inside.remove(t.name)
            await rt.start_the_world(t)
            await t.periodic_check()

        async def worker(t):
            for _ in range(4):
                await t.periodic_check()

        for name in ("g0", "g1"):
            rt.start_thread(gc_like, name=name)
        rt.start_thread(worker, name="worker")
        _WorldInvariant(rt)
        _run(rt, chooser)


def test_a_thread_created_during_a_stop_request_cannot_run_until_the_world_restarts(
        monkeypatch):
    """A thread state linked while a stop is requested starts SUSPENDED (init_threadstate), or
    is parked by the requester's scan; either way the invariant holds and `start_the_world`
    finds every linked thread SUSPENDED."""
    created = []
    new_threadstate = ThreadState.new_threadstate

    async def recording(self, creator):
        await new_threadstate(self, creator)
        created.append(self.status)

    monkeypatch.setattr(ThreadState, "new_threadstate", recording)
    for chooser in _schedules(150, 150):
        rt = Runtime(Config())

        async def child(t):
            await t.periodic_check()

        async def parent(t):
            c = await t.spawn(child, name="child")
            await t.periodic_check()
            await t.join(c)

        async def requester(t):
            await rt.stop_the_world(t)
            await t.yield_now()
            await rt.start_the_world(t)

        rt.start_thread(parent, name="parent")
        rt.start_thread(requester, name="requester")
        _WorldInvariant(rt)
        _run(rt, chooser)
    assert "suspended" in created and "detached" in created


def test_join_detaches_while_it_waits():
    """The joined thread stops the world: a join that kept the joiner attached would never
    let it finish."""
    for chooser in _schedules(50, 50):
        rt = Runtime(Config())

        async def child(t):
            await rt.stop_the_world(t)
            await rt.start_the_world(t)

        async def main(t):
            c = await t.spawn(child, name="child")
            await t.join(c)

        rt.start_thread(main, name="main")
        _WorldInvariant(rt)
        _run(rt, chooser)


# ---------------------------------------------------------------------------------------------
# The periodic check and `_Py_HandlePending`

class _Log(Observer):
    def __init__(self, log):
        self.log = log

    def qsbr_quiescent(self, t, seq):
        self.log.append(("quiescent", seq))

    def qsbr_detach(self, t):
        self.log.append("detach")

    def qsbr_attach(self, t, seq):
        self.log.append("attach")


def _with_pending_work(rt: Runtime, log: list) -> None:
    def hook(name, bit):
        async def fn(t):
            if bit:
                assert not t.peek_eval_breaker() & bit, "the bit is cleared before the work"
            log.append(name)
        return fn

    # this test's own work only, registered out of order: the runtime keeps
    # _Py_HandlePending's order
    rt.pending.clear()
    rt.add_pending("gc", hook("gc", GC_SCHEDULED_BIT), bit=GC_SCHEDULED_BIT)
    rt.add_pending("explicit_merge", hook("merge", EVAL_EXPLICIT_MERGE_BIT),
                   bit=EVAL_EXPLICIT_MERGE_BIT)
    rt.add_pending("process_delayed", hook("delayed", 0),
                   when=lambda t: t.qsbr.should_process)


def test_periodic_check_reports_a_quiescent_state_then_handles_pending_in_c_order():
    rt = Runtime(Config())
    log = []
    _with_pending_work(rt, log)

    async def body(t):
        rt.add_observer(_Log(log))
        await qsbr.advance(t.qsbr)
        t.qsbr.should_process = True
        for bit in (GC_SCHEDULED_BIT, EVAL_EXPLICIT_MERGE_BIT, EVAL_PLEASE_STOP_BIT):
            await set_eval_breaker_bit(t, bit)
        await t.periodic_check()
        log.append(("breaker", t.peek_eval_breaker()))

    rt.start_thread(body, name="t")
    _run(rt)
    # quiescent state first; the stop request (no stop-the-world is under way, so the thread
    # detaches and re-attaches); then the merge, 3.14's delayed frees, the GC
    assert log == [("quiescent", 3), "detach", "attach", "merge", "delayed", "gc",
                   ("breaker", 0), "detach"]       # the last: the thread's exit


def test_without_an_event_bit_the_periodic_check_is_only_a_quiescent_state():
    rt = Runtime(Config())
    log = []
    _with_pending_work(rt, log)

    async def body(t):
        rt.add_observer(_Log(log))
        t.qsbr.should_process = True        # no bit of its own: waits for some event
        await t.periodic_check()
        await set_eval_breaker_bit(t, GC_SCHEDULED_BIT)
        await t.periodic_check()

    rt.start_thread(body, name="t")
    _run(rt)
    assert log == [("quiescent", 1), ("quiescent", 1), "delayed", "gc", "detach"]


def test_pending_work_registration_is_checked():
    rt = Runtime(Config())

    async def fn(t):
        pass

    rt.pending.clear()
    with pytest.raises(ValueError, match="unknown pending work"):
        rt.add_pending("signals", fn, bit=1)
    with pytest.raises(ValueError, match="exactly one"):
        rt.add_pending("gc", fn)
    rt.add_pending("gc", fn, bit=GC_SCHEDULED_BIT)
    with pytest.raises(ValueError, match="already registered"):
        rt.add_pending("gc", fn, bit=GC_SCHEDULED_BIT)


def test_during_a_stop_the_requester_reaches_every_goal_handed_out_before():
    """A thread parked by a stop-the-world is offline in QSBR, so a goal handed out before the
    stop is reached by the requester alone (what the GC's delayed-free processing relies
    on)."""
    for chooser in _schedules(80, 80):
        rt = Runtime(Config())
        QsbrOracle.install(rt)
        answers = []

        async def worker(t):
            for _ in range(5):
                await t.periodic_check()

        async def requester(t):
            goal = await qsbr.advance(t.qsbr)
            await rt.stop_the_world(t)
            await t.periodic_check()
            answers.append(await qsbr.poll(t.qsbr, goal))
            await rt.start_the_world(t)

        rt.start_thread(worker, name="worker")
        rt.start_thread(requester, name="requester")
        _WorldInvariant(rt)
        _run(rt, chooser)
        assert answers == [True]    # the worker is SUSPENDED (offline) or gone
