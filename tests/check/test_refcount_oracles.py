"""The refcount, resurrection, object use-after-free and leak oracles (ftlab.check.refcount):
each fires on a hand-made bad state or access and stays quiet on valid runs."""

from __future__ import annotations

import pytest

from ftlab import Config
from ftlab.check.refcount import RefcountOracle, install
from ftlab.explore.execute import execute
from ftlab.runtime import Runtime
from ftlab.runtime import object as obj
from ftlab.runtime.object import REF_QUEUED, REF_SHARED, PyType
from ftlab.scenarios import Scenario
from ftlab.sim import Random
from ftlab.sim.violation import ViolationError

THING = PyType("Thing", basicsize=48)


def violation_of(fn, config: Config | None = None) -> ViolationError:
    rt = Runtime(config)
    install(rt)
    with pytest.raises(ViolationError) as e:
        rt.run_main(fn)
    return e.value


def test_a_count_that_disagrees_with_the_held_references_is_a_refcount_violation():
    async def main(t):
        o = await t.new_object(THING)
        t.mem.store_u32(o + obj.OB_REF_LOCAL, 5)     # a lost or invented update
        await t.incref(o)

    v = violation_of(main)
    assert v.kind == "refcount"
    assert "has refcount 6" in v.message and "2 reference(s) are held" in v.message


def test_tid_0_without_merged_is_a_refcount_violation():
    async def other(t, o):
        await t.incref(o)

    async def main(t):
        o = await t.new_object(THING)
        t.mem.store_u64(o + obj.OB_TID, 0)
        c = await t.spawn(other, o)
        await t.join(c)

    v = violation_of(main)
    assert v.kind == "refcount" and "ob_tid 0 but is INIT, not MERGED" in v.message


def test_leaving_merged_is_a_refcount_violation():
    async def other(t, o, ev):
        await t.incref(o)
        await ev.wait()
        t.mem.store_u64(o + obj.OB_REF_SHARED, REF_SHARED(1, REF_QUEUED))   # back from MERGED
        await t.decref(o)

    async def main(t):
        ev = t.rt.event()
        o = await t.new_object(THING)
        await t.incref(o)
        c = await t.spawn(other, o, ev)
        while obj.header(t.mem, o)[2] != 4:
            await t.yield_now()
        await t.decref(o)
        await t.decref(o)           # merged: count 1 (other's)
        await ev.set()
        await t.join(c)

    v = violation_of(main)
    assert v.kind == "refcount" and "left the MERGED state for QUEUED" in v.message


def test_dropping_a_reference_nobody_holds_is_a_negative_refcount():
    async def main(t):
        o = await t.new_object(THING)
        await t.incref(o)
        oracle = RefcountOracle.find(t.rt)
        oracle.ref_dropped(t, o, "decref")
        oracle.ref_dropped(t, o, "decref")
        oracle.ref_dropped(t, o, "decref")

    v = violation_of(main)
    assert v.kind == "refcount"
    assert "negative refcount" in v.message or "has refcount" in v.message


def test_deallocating_a_referenced_object_is_a_refcount_violation():
    async def main(t):
        o = await t.new_object(THING)
        await obj.dealloc(t, o)

    v = violation_of(main)
    assert v.kind == "refcount" and "while 1 reference(s) to it are held" in v.message


def test_deallocating_twice_is_a_refcount_violation():
    async def main(t):
        o = await t.new_object(THING)
        await t.decref(o)
        await obj.dealloc(t, o)

    v = violation_of(main)
    assert v.kind == "refcount" and "already freed" in v.message


def test_only_the_owner_writes_ob_ref_local_while_it_runs():
    async def other(t, o):
        await obj.explicit_merge_refcount(t, o, 0)   # the owner is alive: not allowed

    async def main(t):
        o = await t.new_object(THING)
        c = await t.spawn(other, o)
        await t.join(c)

    v = violation_of(main)
    assert v.kind == "refcount" and "while its owner is still running" in v.message


def test_touching_a_freed_object_is_a_use_after_free():
    async def main(t):
        o = await t.new_object(THING)
        obj.store_field(t, o, 32, 7)
        await t.decref(o)
        obj.load_field(t, o, 32)

    v = violation_of(main)
    assert v.kind == "use-after-free"
    assert "payload +32 of the freed Thing object" in v.message
    assert any("freed" in d for d in v.details)


def test_an_incref_of_a_freed_object_is_a_use_after_free_not_a_data_race():
    async def other(t, o):
        await t.incref(o)                   # the free overwrote ob_tid: the shared path

    async def main(t):
        o = await t.new_object(THING)
        await t.decref(o)
        c = await t.spawn(other, o)
        await t.join(c)

    v = violation_of(main)
    assert v.kind == "use-after-free" and "ob_ref_shared (incref)" in v.message


def test_a_try_incref_that_succeeds_on_a_freed_object_is_a_resurrection():
    async def other(t, o):
        await obj.try_incref_shared(t, o)

    async def main(t):
        o = await t.new_object(THING)
        await t.decref(o)
        t.mem.store_u64(o + obj.OB_REF_SHARED, REF_SHARED(1, 0))    # a header that lies
        c = await t.spawn(other, o)
        await t.join(c)

    v = violation_of(main)
    assert v.kind == "resurrection"
    assert "try-incref succeeded on the Thing object" in v.message and "freed" in v.message


def test_a_failing_try_incref_on_a_freed_object_is_allowed():
    async def other(t, slot, o):
        assert not await t.try_incref_compare(slot, o)

    async def main(t):
        slot = t.rt.raw_calloc(8)
        o = await t.new_object(THING)
        await t.decref(o)                   # freed; its header reads dead (local 0, shared 0)
        c = await t.spawn(other, slot, o)
        await t.join(c)

    rt = Runtime()
    install(rt)
    rt.run_main(main)


async def _leaky(t):
    await t.new_object(THING)


async def _unreferenced(t):
    o = await t.new_object(THING)
    t.mem.store_u32(o + obj.OB_REF_LOCAL, 0)
    RefcountOracle.find(t.rt).ref_dropped(t, o, "decref")   # count 0, never deallocated


@pytest.mark.parametrize("fn,words", [
    (_leaky, "still alive at the end of the run with 1 reference(s)"),
    (_unreferenced, "has no reference left but was never deallocated"),
])
def test_an_object_alive_at_the_end_is_a_leak(fn, words):
    r = execute(Scenario("leaky", "", threads=(("main", fn),)), Config(),
                Random(0).execution(0))
    assert r.violation is not None and r.violation.kind == "leak"
    assert words in r.violation.message


def test_the_oracles_are_quiet_on_valid_multithreaded_runs():
    async def reader(t, slot):
        for _ in range(3):
            o = await t.xget_ref(slot)
            if o:
                obj.load_field(t, o, 32)
                await t.decref(o)

    async def main(t):
        slot = t.rt.raw_calloc(8)
        o = await t.new_object(THING)
        obj.store_field(t, o, 32, 1)
        await t.set_maybe_weakref(o)
        await t.mem.store(slot, o)
        r = await t.spawn(reader, slot)
        await t.incref(o)
        h = await t.spawn(_dropper, o)                     # hands a reference over
        old = await t.mem.exchange(slot, 0)
        await t.decref(old)
        await t.periodic_check()
        await t.join(r)
        await t.join(h)

    s = Scenario("valid", "", threads=(("main", main),))
    for i in range(200):
        r = execute(s, Config(), Random(4).execution(i))
        assert r.ok, r.violation


async def _dropper(t, o):
    obj.load_field(t, o, 32)
    await t.decref(o)


def test_ghost_counts_objects_in_brc_queues():
    """A non-owner's last decref queues the object; the ghost counts it until the merge."""
    from ftlab.check.refcount import RefcountOracle
    from ftlab.config import Config
    from ftlab.explore.execute import execute
    from ftlab.scenarios import get
    from ftlab.sim import Random

    seen = []
    original = RefcountOracle.merge_finished

    def spy(self, t, op, extra):
        g = self.live.get(op)
        if g is not None and extra < 0:
            seen.append(g.queued)
        original(self, t, op, extra)

    RefcountOracle.merge_finished = spy
    try:
        for seed in range(5):
            assert execute(get("hand-off"), Config(), Random(seed).execution(0)).ok
    finally:
        RefcountOracle.merge_finished = original
    assert seen and all(q == 1 for q in seen)
