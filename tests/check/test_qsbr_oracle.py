"""The QSBR oracle (`ftlab/check/qsbr.py`): it fires when a poll reports a goal reached while a
thread attached at the advance has not passed a quiescent state, and stays quiet otherwise."""

from __future__ import annotations

from ftlab import Config
from ftlab.check.qsbr import QsbrOracle
from ftlab.runtime import Runtime, qsbr
from ftlab.sim import PCT, Random
from ftlab.sim.atomics import SEQ_CST


def _reader_writer(reader_detaches: bool):
    """The writer advances, passes a quiescent state and polls while the reader stays attached
    (it may hold a pointer loaded before the unlink) or, with `reader_detaches`, detaches and
    re-attaches in between (an extended quiescent state)."""
    rt = Runtime(Config())
    polled, ready = rt.event("polled"), rt.event("ready")
    answers = []

    async def writer(t):
        await ready.wait()
        goal = await qsbr.advance(t.qsbr)
        await t.periodic_check()
        answers.append(await qsbr.poll(t.qsbr, goal))
        await polled.set()

    async def reader(t):
        if reader_detaches:
            await t.detach()
            await t.attach()
        await ready.set()
        await polled.wait()             # attached, no quiescent state: the goal must wait
        await t.periodic_check()

    rt.start_thread(writer, name="writer")
    rt.start_thread(reader, name="reader")
    oracle = QsbrOracle.install(rt)
    return rt, oracle, answers


def _scan_skipping(name: str):
    """A broken `qsbr_poll_scan` that does not look at the slot of thread `name`."""
    async def poll_scan(shared):
        mem = shared.rt.mem
        min_seq = await mem.load(shared.wr_seq_addr, 8, SEQ_CST)
        for slot in shared.slots:
            if slot.tstate is not None and slot.tstate.name == name:
                continue
            seq = await mem.load(slot.addr, 8, SEQ_CST)
            if seq != qsbr.QSBR_OFFLINE and qsbr.QSBR_LT(seq, min_seq):
                min_seq = seq
        rd_seq = await mem.load(shared.rd_seq_addr, 8, SEQ_CST)
        if qsbr.QSBR_LT(rd_seq, min_seq):
            await mem.cas(shared.rd_seq_addr, rd_seq, min_seq, 8, SEQ_CST)
            rd_seq = min_seq
        return rd_seq
    return poll_scan


def test_a_scan_that_skips_an_attached_thread_is_premature_reuse(monkeypatch):
    monkeypatch.setattr(qsbr, "poll_scan", _scan_skipping("reader"))
    rt, oracle, answers = _reader_writer(reader_detaches=False)
    rt.machine.run(Random(0).execution(0))
    v = rt.machine.violation
    assert v is not None and v.kind == "premature-reuse"
    assert "reader" in v.message and "writer" in v.message
    assert answers == []                # stopped inside the poll that answered True


def test_a_scan_that_ignores_the_minimum_is_premature_reuse(monkeypatch):
    async def poll_scan(shared):        # rd_seq := wr_seq, as if every thread had quiesced
        wr = await shared.rt.mem.load(shared.wr_seq_addr, 8, SEQ_CST)
        await shared.rt.mem.store(shared.rd_seq_addr, wr, 8, SEQ_CST)
        return wr
    monkeypatch.setattr(qsbr, "poll_scan", poll_scan)
    rt, oracle, answers = _reader_writer(reader_detaches=False)
    rt.machine.run(Random(1).execution(0))
    assert rt.machine.violation is not None and rt.machine.violation.kind == "premature-reuse"


def test_the_oracle_is_quiet_when_the_goal_waits_for_the_attached_reader():
    for i in range(50):
        rt, oracle, answers = _reader_writer(reader_detaches=False)
        rt.machine.run(Random(i).execution(0))
        assert rt.machine.violation is None
        assert answers == [False]       # the reader holds the goal back


def test_a_detach_before_the_advance_does_not_release_the_goal():
    """The reader detached and re-attached before the goal was handed out: it is attached at
    the advance and still at an old seq, so the goal waits for it and the oracle is quiet."""
    for strategy in (Random(5), PCT(5, depth=2, steps=60)):
        for i in range(50):
            rt, oracle, answers = _reader_writer(reader_detaches=True)
            rt.machine.run(strategy.execution(i))
            assert rt.machine.violation is None
            assert answers == [False]
            assert oracle.goals_checked == 0


def test_a_skipped_thread_that_had_detached_since_the_advance_is_no_violation(monkeypatch):
    """Skipping a thread is only wrong when that thread may hold a pointer: here it detached
    after the goal was handed out, so the oracle accepts the (lucky) answer."""
    monkeypatch.setattr(qsbr, "poll_scan", _scan_skipping("sleeper"))
    rt = Runtime(Config())
    handed_out, asleep, done = rt.event("handed out"), rt.event("asleep"), rt.event("done")
    answers = []

    async def writer(t):
        goal = await qsbr.advance(t.qsbr)
        await handed_out.set()
        await t.wait(asleep)
        await t.periodic_check()
        answers.append(await qsbr.poll(t.qsbr, goal))
        await done.set()

    async def sleeper(t):
        await handed_out.wait()
        await t.detach()
        await asleep.set()
        await done.wait()
        await t.attach()

    rt.start_thread(writer, name="writer")
    rt.start_thread(sleeper, name="sleeper")
    oracle = QsbrOracle.install(rt)
    rt.machine.run(Random(2).execution(0))
    assert rt.machine.violation is None
    assert answers == [True] and oracle.goals_checked == 1


def test_install_adds_the_oracle_once():
    rt = Runtime(Config())
    a = QsbrOracle.install(rt)
    assert QsbrOracle.install(rt) is a and QsbrOracle.find(rt) is a
