"""BatchedWaitForMultipleObjects (runtime/waits.py): argument checks, return shapes, the 63 and
3969 boundaries, timeouts, Ctrl-C, and the batched-wait scenario with its mutation."""

from __future__ import annotations

import errno

import pytest

from ftlab.config import Config
from ftlab.runtime.waits import (BATCH_SIZE, INFINITE, MAX_HANDLES, ProcessHandle, ThreadHandle,
                                 WaitEvent, batched_wait)
from ftlab.sim import Machine, Random, RoundRobin
from ftlab.sim.machine import DONE


def _sync(coro):
    """Run a coroutine that must finish without a scheduling point (argument checks)."""
    with pytest.raises(StopIteration) as stop:
        coro.send(None)
    return stop.value.value


def _run(body, *, n_events: int = 0, strategy=None, prepare=None):
    """Run `body(vt, events)` as thread a of a fresh machine; returns (result or exception,
    machine, events)."""
    m = Machine(max_steps=200_000)
    events = [WaitEvent(m, f"ev{i}") for i in range(n_events)]
    if prepare is not None:
        prepare(m, events)
    out: dict[str, object] = {}

    async def main(vt):
        try:
            out["result"] = await body(vt, events)
        except (OSError, KeyboardInterrupt) as e:
            out["result"] = e

    m.spawn(main, name="main")
    m.run((strategy or RoundRobin(1)).execution(0))
    assert m.violation is None, m.violation
    assert all(t.state == DONE for t in m.threads), "every helper has exited"
    return out["result"], m, events


# --- argument checks --------------------------------------------------------------------------

def test_not_a_sequence_is_type_error():
    with pytest.raises(TypeError, match="sequence type expected, got 'int'"):
        _sync(batched_wait(None, 5, True))
    with pytest.raises(TypeError, match="sequence type expected, got 'dict'"):
        _sync(batched_wait(None, {}, False))


def test_element_not_a_handle_is_type_error():
    with pytest.raises(TypeError, match="handle is required"):
        _sync(batched_wait(None, [1, 2], True))


def test_too_many_handles_is_value_error():
    m = Machine()
    ev = WaitEvent(m)
    with pytest.raises(ValueError, match="need at most 3969 handles, got a sequence of length 3970"):
        _sync(batched_wait(None, [ev] * (MAX_HANDLES + 1), True))


def test_bad_wait_all_and_milliseconds_types():
    with pytest.raises(TypeError):
        _sync(batched_wait(None, [], "yes"))
    with pytest.raises(TypeError, match="integer is required"):
        _sync(batched_wait(None, [], True, 1.5))


def test_empty_sequence_returns_none_or_empty_list():
    assert _sync(batched_wait(None, [], True)) is None
    assert _sync(batched_wait(None, (), False)) == []


def test_milliseconds_is_a_dword():
    # format 'k': -1 keeps its low 32 bits, which is INFINITE; the call is accepted.
    assert MAX_HANDLES == BATCH_SIZE ** 2 == 3969 and INFINITE == 2 ** 32 - 1

    def prepare(m, events):
        events[0].flag = True
    r, _, _ = _run(lambda vt, ev: batched_wait(vt, ev, True, -1), n_events=1, prepare=prepare)
    assert r is None


# --- return shapes ----------------------------------------------------------------------------

def _set(indices):
    def prepare(m, events):
        for i in indices:
            events[i].flag = True
    return prepare


def test_wait_all_returns_none_when_all_signalled():
    r, _, _ = _run(lambda vt, ev: batched_wait(vt, ev, True), n_events=130,
                   prepare=_set(range(130)))
    assert r is None


def test_wait_all_timeout_is_timeout_error_winerror_258():
    r, _, _ = _run(lambda vt, ev: batched_wait(vt, ev, True, 0), n_events=70,
                   prepare=_set(range(69)))
    assert isinstance(r, TimeoutError) and r.winerror == 258


def test_wait_any_reports_at_most_one_index_per_batch_in_order():
    sig = [5, 7, 63, 200]
    r, m, _ = _run(lambda vt, ev: batched_wait(vt, ev, False), n_events=256, prepare=_set(sig))
    # batch 0 reports its lowest signalled handle; batch 3 (189..251) reports 200; 2 nothing
    # is signalled there, so it was woken by the cancel event
    assert r == [5, 63, 200]
    assert sum(t.name.startswith("batch-wait") for t in m.threads) == 5


def test_wait_any_timeout_zero_with_nothing_signalled():
    r, _, _ = _run(lambda vt, ev: batched_wait(vt, ev, False, 0), n_events=10)
    assert isinstance(r, TimeoutError) and r.winerror == 258


def test_finite_timeout_is_a_scheduling_decision():
    """With a finite timeout the wait may or may not see a signal that comes later: both
    outcomes occur over schedules, and no run depends on a clock."""
    outcomes = set()
    for seed in range(30):
        m = Machine()
        ev = [WaitEvent(m, "e")]
        out = {}

        async def waiter(vt):
            try:
                out["r"] = await batched_wait(vt, ev, False, 10)
            except TimeoutError:
                out["r"] = "timeout"

        async def setter(vt):
            await ev[0].set()

        m.spawn(waiter, name="w")
        m.spawn(setter, name="s")
        m.run(Random(seed).execution(0))
        assert m.violation is None
        outcomes.add(str(out["r"]))
    assert outcomes == {"[0]", "timeout"}


def test_closed_handle_is_os_error_winerror_6():
    def prepare(m, events):
        events[1].close()
    r, _, _ = _run(lambda vt, ev: batched_wait(vt, ev, True), n_events=2, prepare=prepare)
    assert type(r) is OSError and r.winerror == 6
    r, _, _ = _run(lambda vt, ev: batched_wait(vt, ev, False), n_events=2, prepare=prepare)
    assert type(r) is OSError and r.winerror == 6


def test_thread_and_process_handles():
    def body_factory():
        async def body(vt, ev):
            async def worker(w):
                await w.yield_now()
            child = await vt.spawn(worker, name="child")
            proc = ProcessHandle(vt.machine, "proc")

            async def exiter(w):
                await proc.exit(3)
            await vt.spawn(exiter, name="exiter")
            got = await batched_wait(vt, [ThreadHandle(child), proc], True)
            return got, proc.exit_code
        return body
    r, _, _ = _run(body_factory())
    assert r == (None, 3)


# --- boundaries -------------------------------------------------------------------------------

@pytest.mark.parametrize("n, helpers", [(63, 1), (64, 2), (126, 2), (127, 3), (3969, 63)])
def test_batch_boundaries(n, helpers):
    r, m, _ = _run(lambda vt, ev: batched_wait(vt, ev, False), n_events=n, prepare=_set([n - 1]))
    assert r == [n - 1]
    assert sum(t.name.startswith("batch-wait") for t in m.threads) == helpers


def test_3969_wait_all():
    r, _, _ = _run(lambda vt, ev: batched_wait(vt, ev, True), n_events=3969,
                   prepare=_set(range(3969)))
    assert r is None


# --- Ctrl-C -----------------------------------------------------------------------------------

def _ctrl_c_run(n: int, wait_all: bool, check_signals, signalled=()):
    m = Machine()
    evs = [WaitEvent(m, f"e{i}") for i in range(n)]
    for i in signalled:
        evs[i].flag = True
    sigint = WaitEvent(m, "sigint")
    sigint.flag = True
    out = {}

    async def main(vt):
        try:
            out["r"] = await batched_wait(vt, evs, wait_all, sigint=sigint,
                                          check_signals=check_signals)
        except (KeyboardInterrupt, InterruptedError) as e:
            out["r"] = e

    m.spawn(main, name="main")
    m.run(RoundRobin(1).execution(0))
    assert m.violation is None, m.violation
    assert all(t.state == DONE for t in m.threads), "helpers joined after Ctrl-C"
    return out["r"]


@pytest.mark.parametrize("n", [1, 63, 64, 130])
def test_ctrl_c_in_wait_all_after_a_batch(n):
    """Polled after every satisfied batch, the last one included: PyErr_CheckSignals' exception
    (KeyboardInterrupt by default) wins, else InterruptedError (EINTR)."""

    def raising():
        raise KeyboardInterrupt

    r = _ctrl_c_run(n, True, raising, signalled=range(n))
    assert type(r) is KeyboardInterrupt
    r = _ctrl_c_run(n, True, lambda: None, signalled=range(n))
    assert type(r) is InterruptedError and r.errno == errno.EINTR


def test_ctrl_c_in_wait_any_is_not_an_error_as_in_the_source():
    """The C compares with `WAIT_OBJECT_0 + handle_count` once `handle_count` counts the sigint
    slot: a Ctrl-C ends the wait, the helpers are cancelled and joined, and the call returns
    what the batches recorded."""

    def raising():
        raise KeyboardInterrupt

    assert _ctrl_c_run(70, False, raising) == []


# --- scenario and mutation --------------------------------------------------------------------

def test_scenario_clean_and_mutation_found():
    from ftlab import run
    from ftlab.scenarios import get
    s = get("batched-wait")
    for seed in range(20):
        res = run(s, config=Config(), strategy=Random(seed=seed))
        assert not res.violations, res.violations
    found = [run(s, config=Config(mutations=frozenset({"batched-wait-unjoined-helpers"})),
                 strategy=Random(seed=seed)).violations for seed in range(20)]
    kinds = {v.kind for vs in found for v in vs}
    assert kinds == {"use-after-free"}


def test_no_cancel_mutation_is_a_deadlock_and_quiet_unmutated():
    """Without the cancel event, the helper of a batch with nothing signalled never returns:
    the caller's join of every helper is a deadlock the machine reports."""
    from ftlab import run
    from ftlab.scenarios import get
    s = get("batched-wait")
    mut = Config(mutations=frozenset({"batched-wait-no-cancel"}))
    kinds = {v.kind for seed in range(10)
             for v in run(s, config=mut, strategy=Random(seed=seed)).violations}
    assert kinds == {"deadlock"}


def test_no_cancel_direct_wait_any_deadlocks():
    m = Machine(max_steps=10_000)
    evs = [WaitEvent(m, f"e{i}") for i in range(64)]
    evs[0].flag = True      # batch 0 fires; batch 1 (handle 63) never does

    async def main(vt):
        await batched_wait(vt, evs, False, mutations=frozenset({"batched-wait-no-cancel"}))

    m.spawn(main, name="main")
    m.run(RoundRobin(1).execution(0))
    assert m.violation is not None and m.violation.kind == "deadlock"


# --- a Python thread's wait detaches ----------------------------------------------------------

def _detaching_program(rt):
    """`waiter` (a Python thread) waits for any of 70 events; `stopper` stops the world and,
    once it has restarted it, sets one event. The waiter must be detached while it blocks, or
    the stop-the-world waits for it forever."""
    from ftlab.runtime.waits import WaitEvent as WE
    evs = [WE(rt.machine, f"e{i}") for i in range(70)]
    seen = {}

    async def waiter(t):
        seen["result"] = await batched_wait(t, evs, False)
        seen["attached after"] = t.attached

    async def stopper(t):
        await rt.stop_the_world(t)
        seen["waiter at stop"] = rt.tstates[0].status
        await rt.start_the_world(t)
        await evs[66].set()

    rt.start_thread(waiter, name="waiter")
    rt.start_thread(stopper, name="stopper")
    return seen


def test_a_python_thread_is_detached_while_it_waits():
    from ftlab.runtime.pystate import Runtime
    from ftlab.sim import PCT
    statuses = set()
    for i in range(40):
        chooser = Random(5).execution(i) if i % 2 else PCT(5, depth=3, steps=200).execution(i)
        rt = Runtime(Config())
        seen = _detaching_program(rt)
        rt.machine.run(chooser)
        assert rt.machine.violation is None, rt.machine.violation
        assert seen["result"] == [66] and seen["attached after"]
        statuses.add(seen["waiter at stop"])
    # the world was stopped both before the waiter's first step and during its wait
    assert "suspended" in statuses


def test_stw_scenario_clean_and_attached_mutation_is_a_deadlock():
    from ftlab import run
    from ftlab.scenarios import get
    s = get("batched-wait-stw")
    for seed in range(10):
        assert not run(s, config=Config(), strategy=Random(seed=seed)).violations
    mut = Config(mutations=frozenset({"batched-wait-attached"}))
    kinds = {v.kind for seed in range(5)
             for v in run(s, config=mut, strategy=Random(seed=seed)).violations}
    assert kinds == {"deadlock"}
