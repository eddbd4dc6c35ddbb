"""QSBR (`ftlab/runtime/qsbr.py`): sequences, goals, polls, slots and the growth of the array,
for both version policies, with the invariants of the reference checked at every step."""

from __future__ import annotations

from ftlab import Config
from ftlab.check.qsbr import QsbrOracle
from ftlab.runtime import Runtime, qsbr
from ftlab.runtime.pystate import THREAD_SUSPENDED
from ftlab.runtime.qsbr import (
    MIN_ARRAY_SIZE,
    QSBR_DEFERRED_LIMIT,
    QSBR_INCR,
    QSBR_INITIAL,
    QSBR_LEQ,
    QSBR_LT,
    QSBR_OFFLINE,
    QSBR_PAD_SIZE,
    SEQ_MASK,
)
from ftlab.sim import PCT, Random, RoundRobin
from ftlab.sim.violation import ViolationError


def _runtime(version: str = "3.14", **kw) -> Runtime:
    return Runtime(Config(version=version, **kw))


class _Invariants:
    """After every step: `wr_seq` odd, `rd_seq` never decreasing and never ahead of `wr_seq`,
    and no thread but the requester attached while the world is stopped."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.rd_seq = rt.qsbr.peek_rd_seq()
        self.steps = 0
        rt.machine.after_step = self

    def __call__(self, vt) -> None:
        self.steps += 1
        shared = self.rt.qsbr
        wr, rd = shared.peek_wr_seq(), shared.peek_rd_seq()
        assert wr & 1, f"wr_seq {wr} is even"
        assert QSBR_LEQ(self.rd_seq, rd), f"rd_seq went back from {self.rd_seq} to {rd}"
        assert QSBR_LEQ(rd, wr), f"rd_seq {rd} is ahead of wr_seq {wr}"
        self.rd_seq = rd
        stw = self.rt.stw
        if stw.world_stopped:
            for t in self.rt.threads_head:
                if t is not stw.requester:
                    assert t.peek_state() == THREAD_SUSPENDED, f"{t.name} runs in a stopped world"


def _run(rt: Runtime, chooser=None) -> Runtime:
    rt.machine.run(chooser or RoundRobin().execution(0))
    v = rt.machine.violation
    if v is not None:
        raise ViolationError(v.kind, v.message + "\n" + "\n".join(v.details), v.details)
    return rt


# ---------------------------------------------------------------------------------------------
# Constants and comparisons

def test_comparisons_are_wrap_safe():
    top = SEQ_MASK                    # the largest odd value; + 2 wraps to 1
    assert QSBR_LT(1, 3) and not QSBR_LT(3, 1) and not QSBR_LT(3, 3)
    assert QSBR_LEQ(3, 3) and QSBR_LEQ(1, 3) and not QSBR_LEQ(5, 3)
    assert QSBR_LT(top, 1) and not QSBR_LT(1, top)      # 1 comes after the wrap
    assert QSBR_LEQ(top - 2, (top + QSBR_INCR) & SEQ_MASK)
    assert QSBR_OFFLINE == 0 and QSBR_INITIAL == 1 and QSBR_INCR == 2


def test_a_new_interpreter_starts_at_the_initial_sequence_with_no_array():
    rt = _runtime()
    assert rt.qsbr.peek_wr_seq() == QSBR_INITIAL
    assert rt.qsbr.peek_rd_seq() == QSBR_INITIAL
    assert rt.qsbr.size == 0 and rt.qsbr.peek_array() == 0


# ---------------------------------------------------------------------------------------------
# One thread: advance, quiescent state, attach and detach, goal_reached and poll

def test_advance_adds_two_and_returns_the_new_write_sequence():
    rt = _runtime()
    goals = []

    async def body(t):
        for _ in range(3):
            goals.append(await qsbr.advance(t.qsbr))

    _run(rt_with(rt, body))
    assert goals == [3, 5, 7]
    assert rt.qsbr.peek_wr_seq() == 7


def rt_with(rt: Runtime, *bodies) -> Runtime:
    for i, body in enumerate(bodies):
        rt.start_thread(body, name=f"T{i}")
    _Invariants(rt)
    return rt


def test_attach_quiescent_state_and_detach_store_what_the_reference_says():
    rt = _runtime()
    seen = {}

    async def body(t):
        slot = t.qsbr
        seen["attached"] = slot.peek_seq()              # attach stored wr_seq (1)
        await qsbr.advance(slot)
        seen["after advance"] = slot.peek_seq()         # still 1: no quiescent state yet
        await t.periodic_check()
        seen["after quiescent"] = slot.peek_seq()       # 3
        await t.detach()
        seen["detached"] = slot.peek_seq()              # OFFLINE
        await qsbr.advance(slot)
        await t.attach()
        seen["reattached"] = slot.peek_seq()            # the current wr_seq, 5

    _run(rt_with(rt, body))
    assert seen == {"attached": 1, "after advance": 1, "after quiescent": 3, "detached": 0,
                    "reattached": 5}


def test_goal_reached_uses_only_the_cached_read_sequence():
    rt = _runtime()
    answers = []

    async def body(t):
        goal = await qsbr.advance(t.qsbr)
        await t.periodic_check()
        answers.append(await qsbr.goal_reached(t.qsbr, goal))   # rd_seq is still 1
        answers.append(await qsbr.poll(t.qsbr, goal))           # the scan moves it to 3
        answers.append(await qsbr.goal_reached(t.qsbr, goal))

    _run(rt_with(rt, body))
    assert answers == [False, True, True]
    assert rt.qsbr.peek_rd_seq() == 3


def test_the_caller_itself_must_pass_a_quiescent_state():
    rt = _runtime()
    answers = []

    async def body(t):
        goal = await qsbr.advance(t.qsbr)
        answers.append(await qsbr.poll(t.qsbr, goal))   # own seq is still 1
        await t.periodic_check()
        answers.append(await qsbr.poll(t.qsbr, goal))

    _run(rt_with(rt, body))
    assert answers == [False, True]


# ---------------------------------------------------------------------------------------------
# Several threads

def test_poll_waits_for_every_attached_thread_and_takes_the_minimum():
    rt = _runtime()
    ev = {n: rt.event(n) for n in ("advanced", "polled", "quiesced")}
    answers = []

    async def writer(t):
        goal = await qsbr.advance(t.qsbr)
        await t.periodic_check()
        await ev["advanced"].set()
        answers.append(await qsbr.poll(t.qsbr, goal))   # the reader is at seq 1
        answers.append(rt.qsbr.peek_rd_seq())
        await ev["polled"].set()
        await ev["quiesced"].wait()
        answers.append(await qsbr.poll(t.qsbr, goal))

    async def reader(t):
        await ev["advanced"].wait()     # attached while it waits: it may hold a pointer
        await ev["polled"].wait()
        await t.periodic_check()
        await ev["quiesced"].set()

    _run(rt_with(rt, writer, reader), Random(0).execution(0))
    assert answers == [False, 1, True]
    assert rt.qsbr.peek_rd_seq() == 3


def test_poll_ignores_detached_threads():
    for i in range(30):
        rt = _runtime()
        asleep, done = rt.event("asleep"), rt.event("done")
        answers = []

        async def writer(t):
            await t.wait(asleep)
            goal = await qsbr.advance(t.qsbr)
            await t.periodic_check()
            answers.append(await qsbr.poll(t.qsbr, goal))
            await done.set()

        async def sleeper(t):
            await t.detach()
            await asleep.set()
            await done.wait()           # detached: never scanned
            await t.attach()

        _run(rt_with(rt, writer, sleeper), Random(i).execution(0))
        assert answers == [True]


def test_detached_threads_never_delay_a_goal():
    """A thread detached throughout; two workers advance, then (after a barrier) pass a
    quiescent state, then (after a second barrier) poll: every poll succeeds, under any
    schedule, whatever the detached thread's slot holds."""
    for strategy in (Random(7), PCT(7, depth=3, steps=150)):
        for i in range(40):
            rt = _runtime()
            asleep = rt.event("asleep")
            phase = [[rt.event(f"a{k}"), rt.event(f"b{k}")] for k in range(2)]
            done = [rt.event("done0"), rt.event("done1")]
            reached = []

            async def offline(t):
                await t.detach()
                await asleep.set()
                await done[0].wait()
                await done[1].wait()
                await t.attach()

            def worker(me):
                other = 1 - me

                async def body(t):
                    await t.wait(asleep)
                    goal = await qsbr.advance(t.qsbr)
                    await phase[me][0].set()
                    await t.wait(phase[other][0])   # both goals handed out
                    await t.periodic_check()
                    await phase[me][1].set()
                    await t.wait(phase[other][1])   # both quiescent since
                    reached.append(await qsbr.poll(t.qsbr, goal))
                    await done[me].set()
                return body

            rt_with(rt, offline, worker(0), worker(1))
            QsbrOracle.install(rt)
            _run(rt, strategy.execution(i))
            assert reached == [True, True]


def test_goals_are_reached_only_after_every_thread_attached_at_the_advance_quiesced():
    """The core safety property (reference §A.5) as a property over many schedules: three
    threads advance, poll, pass quiescent states, detach and attach in varied orders; the
    QSBR oracle checks each reached goal against its ghost state, and the invariants run at
    every step."""
    runs = _property_runs(Random(11), 150)
    pct = _property_runs(PCT(11, depth=3, steps=200), 150)
    for k in runs:
        runs[k] += pct[k]
    assert runs["reached"] > 100 and runs["not reached"] > 20   # both outcomes happen
    assert runs["checked"] > 100


async def _scripted(t, script):
    """One of three threads: a mix of every QSBR operation."""
    goals = []
    for op in script:
        if op == "advance":
            goals.append(await qsbr.advance(t.qsbr))
        elif op == "next":
            goals.append(await qsbr.shared_next(t.qsbr))
        elif op == "check":
            await t.periodic_check()
        elif op == "poll":
            for g in goals:
                t.shared["outcomes"].append(await qsbr.poll(t.qsbr, g))
        elif op == "detach":
            await t.detach()
            await t.yield_now()
            await t.attach()


_SCRIPTS = (
    ("advance", "check", "poll", "check", "poll"),
    ("check", "next", "detach", "check", "poll", "advance", "poll"),
    ("detach", "check", "advance", "poll", "check", "check", "poll"),
)


def _property_runs(strategy, n):
    counts = {"reached": 0, "not reached": 0, "checked": 0}
    for i in range(n):
        rt = _runtime()
        rt.shared = {"outcomes": []}
        for k, script in enumerate(_SCRIPTS):
            rt.start_thread(_scripted, script, name=f"T{k}")
        _Invariants(rt)
        oracle = QsbrOracle.install(rt)
        _run(rt, strategy.execution(i))
        for ok in rt.shared["outcomes"]:
            counts["reached" if ok else "not reached"] += 1
        counts["checked"] += oracle.goals_checked
    return counts


# ---------------------------------------------------------------------------------------------
# Version policies

def test_deferred_advance_writes_wr_seq_only_every_tenth_call():
    rt = _runtime("3.13.0")
    trace = []

    async def body(t):
        for _ in range(2 * QSBR_DEFERRED_LIMIT):
            goal = await qsbr.deferred_advance(t.qsbr)
            trace.append((goal, rt.qsbr.peek_wr_seq()))

    _run(rt_with(rt, body))
    assert trace[:9] == [(3, 1)] * 9            # wr_seq + 2, not written
    assert trace[9] == (3, 3)                   # the 10th call advances
    assert trace[10:19] == [(5, 3)] * 9
    assert trace[19] == (5, 5)


def test_a_deferred_goal_needs_some_advance_and_then_every_quiescent_state():
    rt = _runtime("3.13.0")
    answers = []

    async def body(t):
        goal = await qsbr.deferred_advance(t.qsbr)      # 3, wr_seq stays 1
        await t.periodic_check()
        answers.append(await qsbr.poll(t.qsbr, goal))   # nobody can have observed 3
        await qsbr.advance(t.qsbr)                      # some thread advances: wr_seq 3
        answers.append(await qsbr.poll(t.qsbr, goal))   # ... but this thread is still at 1
        await t.periodic_check()
        answers.append(await qsbr.poll(t.qsbr, goal))

    _run(rt_with(rt, body))
    assert answers == [False, False, True]


def test_shared_next_is_the_next_write_sequence_without_writing_it():
    rt = _runtime("3.14")
    seen = []

    async def body(t):
        seen.append(await qsbr.shared_next(t.qsbr))
        seen.append(await qsbr.shared_next(t.qsbr))
        seen.append(rt.qsbr.peek_wr_seq())
        goal = seen[0]
        await t.periodic_check()
        seen.append(await qsbr.poll(t.qsbr, goal))
        await qsbr.advance(t.qsbr)
        await t.periodic_check()
        seen.append(await qsbr.poll(t.qsbr, goal))

    _run(rt_with(rt, body))
    assert seen == [3, 3, 1, False, True]


def test_sequences_wrap_and_stay_odd():
    rt = _runtime()
    top = SEQ_MASK
    rt.mem.store_u64(rt.qsbr.wr_seq_addr, top)      # set-up: plain stores
    rt.mem.store_u64(rt.qsbr.rd_seq_addr, top)
    answers = []

    async def body(t):
        goal = await qsbr.advance(t.qsbr)
        answers.append(goal)
        answers.append(await qsbr.goal_reached(t.qsbr, goal))   # 1 is after 2**64 - 1
        answers.append(await qsbr.poll(t.qsbr, goal))
        await t.periodic_check()
        answers.append(await qsbr.poll(t.qsbr, goal))

    _run(rt_with(rt, body))
    assert answers == [1, False, False, True]
    assert rt.qsbr.peek_rd_seq() == 1


# ---------------------------------------------------------------------------------------------
# Slots: the freelist, reuse, growth under stop-the-world

def test_the_first_array_has_eight_slots_handed_out_from_the_top():
    rt = _runtime()
    ts = [rt.start_thread(_noop, name=f"T{i}") for i in range(3)]
    assert rt.qsbr.size == MIN_ARRAY_SIZE
    # the freelist is rebuilt by pushing free slots in index order
    assert [t.qsbr.index for t in ts] == [7, 6, 5]
    _run(rt)
    assert all(s.tstate is None and not s.allocated for s in rt.qsbr.slots)


async def _noop(t):
    pass


def test_a_slot_is_reused_after_unregister():
    rt = _runtime()
    seen = {}

    async def child(t):
        seen.setdefault("slots", []).append(t.qsbr.index)

    async def main(t):
        a = await t.spawn(child, name="a")
        await t.join(a)
        assert a.qsbr is None and a.status == "deleted"
        b = await t.spawn(child, name="b")
        await t.join(b)

    _run(rt_with(rt, main))
    a_slot, b_slot = seen["slots"]
    assert a_slot == b_slot == 6        # main has 7; a's slot went back on top of the freelist
    assert rt.qsbr.freelist.index == 7  # main's, given back last


def _growth_program(rt: Runtime, children: int, spin: int):
    """Main starts `children` threads that stay registered (each runs `spin` periodic checks,
    then waits detached for the end), so the array of 8 must grow while they run."""
    end = rt.event("end")
    shared = {"kids": [], "during_growth": []}

    async def child(t):
        for _ in range(spin):
            await t.periodic_check()
        await t.wait(end)

    async def main(t):
        for i in range(children):
            shared["kids"].append(await t.spawn(child, name=f"c{i}"))
        shared["slots"] = {k.name: k.qsbr.index for k in shared["kids"]}
        shared["main slot"] = t.qsbr.index
        await end.set()
        for k in shared["kids"]:
            await t.join(k)

    rt.start_thread(main, name="main")
    return shared


def test_array_growth_under_stop_the_world_keeps_every_registered_slot(monkeypatch):
    grow = qsbr.grow_thread_array
    growths = []

    def checked_grow(shared):
        rt = shared.rt
        if rt.machine.current is None:
            return grow(shared)         # set-up: the first array, nothing runs yet
        before = {s.tstate.name: (s.index, s.peek_seq()) for s in shared.slots if s.tstate}
        others = [t for t in rt.threads_head if t is not rt.stw.requester]
        assert rt.world_stopped and all(t.peek_state() == THREAD_SUSPENDED for t in others)
        old_array = shared.peek_array()
        grow(shared)
        after = {s.tstate.name: (s.index, s.peek_seq()) for s in shared.slots if s.tstate}
        assert after == before                  # same index, same seq, for every thread
        for s in shared.slots:
            if s.tstate is not None:
                assert s.tstate.qsbr is s
                assert s.addr == shared.peek_array() + s.index * QSBR_PAD_SIZE
        assert rt.mem.region_of(old_array) is None      # the old array is gone
        free, slot = [], shared.freelist
        while slot is not None:
            free.append(slot.index)
            slot = slot.freelist_next
        # exactly the slots nobody holds, the highest first
        assert free == [s.index for s in reversed(shared.slots) if not s.allocated]
        growths.append((len(before), shared.size))

    monkeypatch.setattr(qsbr, "grow_thread_array", checked_grow)
    for i in range(12):
        rt = _runtime()
        shared = _growth_program(rt, children=10, spin=3)
        _Invariants(rt)
        _run(rt, Random(i).execution(0))
        # main (slot 7) and c0..c6 fill the array; creating c7 grows it to 16, and the new
        # free slots are handed out from the top again
        assert shared["main slot"] == 7
        assert shared["slots"] == {"c0": 6, "c1": 5, "c2": 4, "c3": 3, "c4": 2, "c5": 1,
                                   "c6": 0, "c7": 15, "c8": 14, "c9": 13}
        assert rt.qsbr.size == 16
    assert growths and all(g == (8, 16) for g in growths)


def test_growing_the_array_without_stopping_the_world_is_a_data_race(monkeypatch):
    """What the stop-the-world in `reserve` prevents: children that run while the array moves
    race with the copy (their atomic `seq` stores against its plain reads)."""
    async def reserve_without_stw(rt, creator):
        shared = rt.qsbr
        await qsbr._lock(creator, shared.mutex)
        slot = qsbr.qsbr_allocate(shared)
        if slot is None:
            rt.stw.world_stopped = True         # only to pass the growth's own assertion
            qsbr.grow_thread_array(shared)
            rt.stw.world_stopped = False
            slot = qsbr.qsbr_allocate(shared)
        await shared.mutex.unlock()
        return slot.index

    monkeypatch.setattr(qsbr, "reserve", reserve_without_stw)
    for i in range(10):
        rt = _runtime()
        _growth_program(rt, children=10, spin=6)
        rt.machine.run(Random(i).execution(0))
        assert rt.machine.violation is not None and rt.machine.violation.kind == "data-race"


def test_threads_exiting_while_the_array_grows_find_their_moved_slot():
    """Children exit (unregister, which re-reads the slot inside the mutex) while their
    siblings' creation grows the array; the race detector checks the copy and a stale slot
    would fault on the released old array."""
    for strategy in (Random(3), PCT(3, depth=3, steps=400)):
        for i in range(15):
            rt = _runtime()
            async def child(t):
                await t.periodic_check()

            async def main(t):
                kids = [await t.spawn(child, name=f"c{k}") for k in range(12)]
                for k in kids:
                    await t.join(k)

            rt.start_thread(main, name="main")
            _Invariants(rt)
            QsbrOracle.install(rt)
            _run(rt, strategy.execution(i))
            assert all(not s.allocated for s in rt.qsbr.slots)


def test_unregister_with_the_slot_loaded_before_the_mutex_reads_the_freed_array():
    """Mutation qsbr-unregister-stale-slot on the program above: some schedule has a child
    wait for the QSBR mutex in unregister while a sibling's creation grows the array; its
    slot pointer, loaded before the wait, is then in the released array."""
    found = 0
    for i in range(40):
        rt = _runtime(mutations=frozenset({"qsbr-unregister-stale-slot"}))

        async def child(t):
            await t.periodic_check()

        async def main(t):
            kids = [await t.spawn(child, name=f"c{k}") for k in range(12)]
            for k in kids:
                await t.join(k)

        rt.start_thread(main, name="main")
        rt.machine.run(Random(5).execution(i))
        v = rt.machine.violation
        if v is not None:
            assert v.kind == "segfault" and "released region" in v.message, str(v)
            found += 1
    assert found, "no schedule had a child unregister across a growth"
