"""Litmus tests of the c11 memory model (ftlab/sim/c11.py): for each program and choice of
orders, the exact set of outcomes an exhaustive DFS over thread and data decisions produces."""

from __future__ import annotations

import pytest

from ftlab.sim.atomics import ACQUIRE, RELAXED, RELEASE, SEQ_CST
from ftlab.sim.machine import Machine
from ftlab.sim.race import RaceDetector
from ftlab.sim.strategies import DFS, Replay
from ftlab.sim.schedule import encode



def _setup(m: Machine) -> int:
    base = m.mem.reserve(4096)
    m.mem.commit(base, 4096)
    return base


X = _setup(Machine())
Y = X + 8


def outcomes(threads, final=(), memory_model="c11"):
    """Every outcome: the tuple of each thread's result, then the final values of `final`."""
    dfs = DFS()
    seen = set()
    i = 0
    while (chooser := dfs.execution(i)) is not None:
        i += 1
        m = Machine(race=RaceDetector(), memory_model=memory_model)
        assert _setup(m) == X, 'addresses are deterministic'
        ts = [m.spawn(lambda t, f=f: f(t)) for f in threads]
        m.run(chooser)
        assert m.violation is None, f"litmus program failed: {m.violation}"
        seen.add(tuple(t.result for t in ts) + tuple(m.mem.raw_load(a, 8) for a in final))
    return seen


def sb(so, lo, fence=None):
    async def t0(t):
        await t.mem.store(X, 1, order=so)
        if fence is not None:
            await t.mem.fence(fence)
        return await t.mem.load(Y, order=lo)

    async def t1(t):
        await t.mem.store(Y, 1, order=so)
        if fence is not None:
            await t.mem.fence(fence)
        return await t.mem.load(X, order=lo)
    return [t0, t1]


ALL_SB = {(0, 1), (1, 0), (1, 1), (0, 0)}


@pytest.mark.parametrize("so,lo,fence,expected", [
    (RELAXED, RELAXED, None, ALL_SB),
    (RELEASE, ACQUIRE, None, ALL_SB),
    (SEQ_CST, SEQ_CST, None, ALL_SB - {(0, 0)}),
    (RELAXED, RELAXED, SEQ_CST, ALL_SB - {(0, 0)}),
    (RELAXED, RELAXED, RELEASE, ALL_SB),
])
def test_sb(so, lo, fence, expected):
    assert outcomes(sb(so, lo, fence)) == expected


def sb_fence_vs_sc(so):
    """SB with an SC fence on one side and a store of order `so` then an SC load on the other:
    the shape of qsbr_poll_scan (release X, fence, load Y) against _Py_qsbr_attach (store Y,
    then load X). RC11 forbids (0, 0) when the store is SC (fence ->psc W_sc(Y) ->sb R_sc(X)
    ->rb W(X) ->sb fence) and allows it when the store is only release."""
    async def scan(t):
        await t.mem.store(X, 1, order=RELEASE)
        await t.mem.fence(SEQ_CST)
        return await t.mem.load(Y, order=SEQ_CST)

    async def attach(t):
        await t.mem.store(Y, 1, order=so)
        return await t.mem.load(X, order=SEQ_CST)
    return [scan, attach]


@pytest.mark.parametrize("so,expected", [
    (SEQ_CST, ALL_SB - {(0, 0)}),
    (RELEASE, ALL_SB),
])
def test_sb_fence_against_sc_store(so, expected):
    assert outcomes(sb_fence_vs_sc(so)) == expected


def mp(so, lo, wfence=None, rfence=None):
    async def writer(t):
        await t.mem.store(X, 1, order=RELAXED)
        if wfence is not None:
            await t.mem.fence(wfence)
        await t.mem.store(Y, 1, order=so)

    async def reader(t):
        f = await t.mem.load(Y, order=lo)
        if rfence is not None:
            await t.mem.fence(rfence)
        return f, await t.mem.load(X, order=RELAXED)
    return [writer, reader]


ALL_MP = {(None, (0, 0)), (None, (0, 1)), (None, (1, 1)), (None, (1, 0))}


@pytest.mark.parametrize("so,lo,wf,rf,expected", [
    (RELAXED, RELAXED, None, None, ALL_MP),
    (RELEASE, RELAXED, None, None, ALL_MP),
    (RELAXED, ACQUIRE, None, None, ALL_MP),
    (RELEASE, ACQUIRE, None, None, ALL_MP - {(None, (1, 0))}),
    (SEQ_CST, SEQ_CST, None, None, ALL_MP - {(None, (1, 0))}),
    (RELAXED, RELAXED, RELEASE, ACQUIRE, ALL_MP - {(None, (1, 0))}),
    (RELAXED, RELAXED, SEQ_CST, SEQ_CST, ALL_MP - {(None, (1, 0))}),
    (RELAXED, RELAXED, RELEASE, None, ALL_MP),
    (RELEASE, RELAXED, None, ACQUIRE, ALL_MP - {(None, (1, 0))}),
])
def test_mp(so, lo, wf, rf, expected):
    assert outcomes(mp(so, lo, wf, rf)) == expected


@pytest.mark.parametrize("order", [RELAXED, SEQ_CST])
def test_lb_never_reads_from_the_future(order):
    async def t0(t):
        r = await t.mem.load(X, order=order)
        await t.mem.store(Y, 1, order=order)
        return r

    async def t1(t):
        r = await t.mem.load(Y, order=order)
        await t.mem.store(X, 1, order=order)
        return r
    assert outcomes([t0, t1]) == {(0, 0), (0, 1), (1, 0)}


@pytest.mark.parametrize("so,lo,weak", [(RELEASE, ACQUIRE, True), (RELAXED, RELAXED, True),
                                         (SEQ_CST, SEQ_CST, False)])
def test_iriw(so, lo, weak):
    async def wx(t):
        await t.mem.store(X, 1, order=so)

    async def wy(t):
        await t.mem.store(Y, 1, order=so)

    async def r1(t):
        return await t.mem.load(X, order=lo), await t.mem.load(Y, order=lo)

    async def r2(t):
        return await t.mem.load(Y, order=lo), await t.mem.load(X, order=lo)
    seen = outcomes([wx, wy, r1, r2])
    assert ((None, None, (1, 0), (1, 0)) in seen) == weak
    assert (None, None, (1, 1), (1, 1)) in seen


@pytest.mark.parametrize("order,weak", [(RELAXED, True), (RELEASE, True), (SEQ_CST, False)])
def test_2_2w(order, weak):
    async def t0(t):
        await t.mem.store(X, 1, order=order)
        await t.mem.store(Y, 2, order=order)

    async def t1(t):
        await t.mem.store(Y, 1, order=order)
        await t.mem.store(X, 2, order=order)
    seen = outcomes([t0, t1], final=(X, Y))
    assert ((None, None, 1, 1) in seen) == weak
    assert {(None, None, 2, 2), (None, None, 1, 2), (None, None, 2, 1)} <= seen


def test_corr_and_cowr_coherence():
    async def w(t):
        await t.mem.store(X, 1, order=RELAXED)
        await t.mem.store(X, 2, order=RELAXED)

    async def r(t):
        return await t.mem.load(X, order=RELAXED), await t.mem.load(X, order=RELAXED)

    async def wr(t):
        await t.mem.store(X, 3, order=RELAXED)
        return await t.mem.load(X, order=RELAXED)
    seen = outcomes([w, r])
    reads = {o[1] for o in seen}
    assert all(a <= b for a, b in reads), f"CoRR broken: {sorted(reads)}"
    assert reads == {(a, b) for a in range(3) for b in range(3) if a <= b}
    # CoWR: a thread never reads a store mo-before its own (here only the initial 0 is always
    # mo-before it; 1 and 2 are readable when the 3 went before them in mo).
    cowr = outcomes([w, wr], final=(X,))
    assert {o[1] for o in cowr} == {1, 2, 3}
    # ... and reading 1 means the 3 went before 1, so the final value is never 3 then.
    assert all(o[2] != 3 for o in cowr if o[1] == 1)


def test_store_choice_is_in_the_schedule_and_replays():
    prog = mp(RELAXED, RELAXED)
    dfs = DFS()
    weak = None
    i = 0
    while (ch := dfs.execution(i)) is not None:
        i += 1
        m = Machine(memory_model="c11")
        assert _setup(m) == X, 'addresses are deterministic'
        ts = [m.spawn(lambda t, f=f: f(t)) for f in prog]
        m.run(ch)
        if ts[1].result == (1, 0):
            weak = encode(m.choices)
    assert weak is not None
    m = Machine(memory_model="c11")
    assert _setup(m) == X, 'addresses are deterministic'
    ts = [m.spawn(lambda t, f=f: f(t)) for f in prog]
    m.run(Replay(weak).execution(0))
    assert ts[1].result == (1, 0)


def test_sc_mode_has_no_weak_outcomes():
    assert (None, (1, 0)) not in outcomes(mp(RELAXED, RELAXED), memory_model="sc")
