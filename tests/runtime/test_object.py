"""Object header and reference counting (ftlab.runtime.object): field values after each
transition match the reference encoding (cpython-ft-internals.md §0.1, §4)."""

from __future__ import annotations

import pytest

from ftlab import Config
from ftlab.check.refcount import install
from ftlab.runtime import Runtime
from ftlab.runtime import object as obj
from ftlab.runtime.mimalloc import block_info
from ftlab.runtime.object import (
    IMMORTAL_REFCNT_LOCAL, REF_MAYBE_WEAKREF, REF_MERGED, REF_QUEUED, REF_SHARED, PyType,
    header, refcnt,
)
from ftlab.sim.violation import ViolationError

THING = PyType("Thing", basicsize=48)


def run(fn, config: Config | None = None, checked: bool = True):
    """Run `fn(t)` as the main thread of a fresh runtime (with the refcount oracles)."""
    rt = Runtime(config)
    if checked:
        install(rt)
    result = rt.run_main(fn)
    return rt, result


def test_header_offsets_are_the_real_ones():
    assert (obj.OB_TID, obj.OB_FLAGS, obj.OB_MUTEX, obj.OB_GC_BITS, obj.OB_REF_LOCAL,
            obj.OB_REF_SHARED, obj.OB_TYPE) == (0, 8, 10, 11, 12, 16, 24)
    assert obj.SIZEOF_PYOBJECT == 32
    assert REF_SHARED(1, 0) == 4 and REF_SHARED(0, REF_MERGED) == 3
    assert REF_SHARED(-1, REF_QUEUED) == (-4 + 2) & (2**64 - 1)


def test_new_object_is_owned_by_its_thread_with_local_1_shared_0():
    seen = {}

    async def main(t):
        o = await t.new_object(THING)
        seen["header"] = header(t.mem, o)
        seen["tid"] = t.tid
        seen["type"] = t.mem.load_u64(o + obj.OB_TYPE)
        seen["flags"] = (t.mem.load_u16(o + obj.OB_FLAGS), t.mem.load_u8(o + obj.OB_MUTEX),
                         t.mem.load_u8(o + obj.OB_GC_BITS))
        await t.decref(o)

    rt, _ = run(main)
    tid, local, shared = seen["header"]
    assert tid == seen["tid"] != 0
    assert (local, shared) == (1, 0)
    assert seen["flags"] == (0, 0, 0)
    assert seen["type"] == rt.objects.types[THING]


def test_thread_ids_are_distinct_and_nonzero():
    tids = []

    async def child(t):
        tids.append(t.tid)

    async def main(t):
        tids.append(t.tid)
        c = await t.spawn(child)
        await t.join(c)

    run(main)
    assert len(set(tids)) == 2 and 0 not in tids


def test_owner_incref_decref_is_plain_and_frees_at_zero():
    seen = []

    async def main(t):
        o = await t.new_object(THING)
        await t.incref(o)
        seen.append(header(t.mem, o)[1:])
        await t.decref(o)
        seen.append(header(t.mem, o)[1:])
        await t.decref(o)       # local 0, shared exactly 0: freed without an atomic

    rt, _ = run(main)
    assert seen == [(2, 0), (1, 0)]
    assert rt.stats["refcnt_nonatomic"] == 3
    assert rt.stats["refcnt_atomic"] == 0
    assert rt.stats["objects_deallocated"] == 1


def test_one_non_owner_incref_of_a_fresh_object_leaves_ob_ref_shared_4():
    seen = {}

    async def other(t, o):
        await t.incref(o)
        seen["after incref"] = header(t.mem, o)[1:]
        await t.decref(o)
        seen["after decref"] = header(t.mem, o)[1:]

    async def main(t):
        o = await t.new_object(THING)
        c = await t.spawn(other, o)
        await t.join(c)
        await t.decref(o)

    run(main)
    assert seen["after incref"] == (1, 4)
    assert seen["after decref"] == (1, 0)


def test_two_non_owner_decrefs_queue_once_and_the_second_goes_negative():
    seen = {}

    async def other(t, o):
        await t.decref(o)       # count 0, INIT: queued (the queue keeps this reference)
        seen["first"] = header(t.mem, o)[1:]
        await t.decref(o)       # QUEUED: subtract, the shared count goes negative
        seen["second"] = header(t.mem, o)[1:]

    async def main(t):
        o = await t.new_object(THING)
        await t.incref(o)
        await t.incref(o)       # local 3
        c = await t.spawn(other, o)
        await t.join(c)
        seen["refcnt"] = refcnt(t.mem, o)       # main's reference and the queue's
        await t.periodic_check()                # merge with -1 (the queue's reference)
        seen["merged"] = header(t.mem, o)
        await t.decref(o)                       # merged: the shared path, MERGED/0: freed

    rt, _ = run(main)
    assert seen["first"] == (3, REF_QUEUED)
    assert seen["second"] == (3, REF_SHARED(-1, REF_QUEUED))
    assert seen["refcnt"] == 2
    assert seen["merged"] == (0, 0, REF_SHARED(1, REF_MERGED))
    assert rt.stats["brc_queued"] == 1 and rt.stats["brc_explicit_merges"] == 1
    assert rt.stats["objects_deallocated"] == 1


def test_owner_last_decref_with_shared_references_merges_and_gives_up_ownership():
    seen = {}

    async def other(t, o, ev):
        await t.incref(o)
        await ev.wait()
        seen["merged"] = header(t.mem, o)
        await t.decref(o)       # MERGED with count 1 -> MERGED/0: this thread deallocates

    async def main(t):
        ev = t.rt.event()
        o = await t.new_object(THING)
        c = await t.spawn(other, o, ev)
        while header(t.mem, o)[2] != 4:
            await t.yield_now()
        await t.decref(o)       # local 0, shared 4: tid 0, MERGED, count 1
        await ev.set()
        await t.join(c)

    rt, _ = run(main)
    assert seen["merged"] == (0, 0, REF_SHARED(1, REF_MERGED))
    assert rt.stats["objects_deallocated"] == 1


def test_immortal_objects_are_never_counted_or_freed():
    seen = {}

    async def other(t, none):
        await t.incref(none)
        await t.decref(none)
        await t.decref(none)
        seen["other"] = header(t.mem, none)

    async def main(t):
        none = t.rt.objects.immortal_object(THING, name="None")
        for _ in range(3):
            await t.decref(none)
        await t.incref(none)
        assert obj.try_incref_fast(t, none)
        c = await t.spawn(other, none)
        await t.join(c)
        seen["main"] = header(t.mem, none)
        seen["refcnt"] = refcnt(t.mem, none)

    rt, _ = run(main)
    assert seen["main"] == seen["other"] == (0, IMMORTAL_REFCNT_LOCAL, 0)
    assert seen["refcnt"] == obj.IMMORTAL_INITIAL_REFCNT
    assert rt.stats["objects_deallocated"] == 0
    assert rt.stats["refcnt_atomic"] == 0


def test_set_maybe_weakref_only_moves_init_forward():
    seen = []

    async def main(t):
        o = await t.new_object(THING)
        await t.set_maybe_weakref(o)
        seen.append(header(t.mem, o)[2])
        await t.set_maybe_weakref(o)
        seen.append(header(t.mem, o)[2])
        # QUEUED and MERGED are left alone
        t.mem.store_u64(o + obj.OB_REF_SHARED, REF_SHARED(1, REF_QUEUED))
        await t.set_maybe_weakref(o)
        seen.append(header(t.mem, o)[2])
        t.mem.store_u64(o + obj.OB_REF_SHARED, REF_MAYBE_WEAKREF)
        await t.decref(o)

    run(main)
    assert seen == [REF_MAYBE_WEAKREF, REF_MAYBE_WEAKREF, REF_SHARED(1, REF_QUEUED)]


@pytest.mark.parametrize("shared,accepted", [
    (0, False),                              # the owner may free it without an atomic
    (REF_MERGED, False),                     # merged with count 0: being freed
    (REF_MAYBE_WEAKREF, True),               # count 0 but the owner must take the CAS path
    (REF_SHARED(1, REF_MERGED), True),
    (REF_SHARED(2, 0), True),
    (REF_SHARED(0, REF_QUEUED), True),
])
def test_try_incref_shared_refuses_exactly_0_and_merged_0(shared, accepted):
    seen = {}

    async def other(t, o):
        seen["ok"] = await obj.try_incref_shared(t, o)
        seen["after"] = header(t.mem, o)[2]

    async def main(t):
        o = await t.new_object(THING)
        t.mem.store_u64(o + obj.OB_REF_SHARED, shared)
        c = await t.spawn(other, o)
        await t.join(c)

    run(main, checked=False)
    assert seen["ok"] is accepted
    assert seen["after"] == ((shared + 4) & (2**64 - 1) if accepted else shared)


def test_tryincref_accepts_zero_mutation_accepts_a_zero_field():
    seen = {}

    async def other(t, o):
        seen["ok"] = await obj.try_incref_shared(t, o)

    async def main(t):
        o = await t.new_object(THING)
        c = await t.spawn(other, o)
        await t.join(c)

    run(main, Config(mutations=frozenset(["tryincref-accepts-zero"])), checked=False)
    assert seen["ok"] is True


def test_try_incref_fast_succeeds_for_the_owner_only():
    seen = {}

    async def other(t, o):
        seen["other"] = obj.try_incref_fast(t, o)

    async def main(t):
        o = await t.new_object(THING)
        seen["owner"] = obj.try_incref_fast(t, o)
        seen["local"] = header(t.mem, o)[1]
        c = await t.spawn(other, o)
        await t.join(c)
        await t.decref(o)
        await t.decref(o)

    run(main)
    assert seen == {"owner": True, "local": 2, "other": False}


def test_try_incref_compare_undoes_the_increment_when_the_slot_changed():
    seen = {}

    async def other(t, slot, o):
        seen["ok"] = await t.try_incref_compare(slot, o)
        seen["after"] = header(t.mem, o)[2]

    async def main(t):
        slot = t.rt.raw_calloc(8)
        o = await t.new_object(THING)
        await t.set_maybe_weakref(o)
        p = await t.new_object(THING)
        await t.mem.store(slot, p)
        c = await t.spawn(other, slot, o)
        await t.join(c)
        await t.decref(o)
        await t.decref(p)

    run(main)
    assert seen == {"ok": False, "after": REF_MAYBE_WEAKREF}


def test_xget_ref_returns_a_new_reference_or_0_for_null():
    seen = {}

    async def other(t, slot):
        o = await t.xget_ref(slot)
        seen["header"] = header(t.mem, o)[2]
        await t.decref(o)
        await t.mem.store(slot, 0)
        seen["null"] = await t.xget_ref(slot)

    async def main(t):
        slot = t.rt.raw_calloc(8)
        o = await t.new_object(THING)
        await t.set_maybe_weakref(o)
        await t.mem.store(slot, o)
        c = await t.spawn(other, slot)
        await t.join(c)
        await t.decref(o)

    run(main)
    assert seen == {"header": REF_SHARED(1, REF_MAYBE_WEAKREF), "null": 0}


def test_new_ref_with_lock_sets_maybe_weakref_on_an_init_field():
    seen = []

    async def other(t, o):
        await t.new_ref_with_lock(o)
        seen.append(header(t.mem, o)[2])
        await t.new_ref_with_lock(o)
        seen.append(header(t.mem, o)[2])
        await t.decref(o)
        await t.decref(o)

    async def main(t):
        o = await t.new_object(THING)
        c = await t.spawn(other, o)
        await t.join(c)
        await t.decref(o)

    run(main)
    assert seen == [REF_SHARED(1, REF_MAYBE_WEAKREF), REF_SHARED(2, REF_MAYBE_WEAKREF)]


def test_explicit_merge_clears_tid_and_local_and_returns_the_count():
    seen = {}

    async def main(t):
        o = await t.new_object(THING)
        await t.incref(o)                                   # local 2
        t.mem.store_u64(o + obj.OB_REF_SHARED, REF_SHARED(-1, REF_QUEUED))
        count = await obj.explicit_merge_refcount(t, o, 0)
        seen["count"] = count
        seen["header"] = header(t.mem, o)

    run(main, checked=False)
    assert seen["count"] == 1
    assert seen["header"] == (0, 0, REF_SHARED(1, REF_MERGED))


def test_a_preheader_object_lives_after_its_16_byte_preheader():
    seen = {}
    gc_pre = PyType("GCPre", basicsize=48, gc=True, preheader=True)

    async def main(t):
        o = await t.new_object(gc_pre)
        seen["o"] = o
        seen["pre"] = t.mem.load_u64(o - 16), t.mem.load_u64(o - 8)
        seen["block tag"] = block_info(t.rt, o - 16).tag
        await t.decref(o)

    run(main)
    assert seen["pre"] == (0, 0)
    assert seen["block tag"] == 3          # GC_PRE heap


def test_a_second_writer_of_ob_ref_local_is_a_data_race():
    """The owner's plain accesses are race-checked: a thread that wrongly takes the owner's
    path on another thread's object races with the owner."""

    async def impostor(t, o):
        local = t.mem.load_u32(o + obj.OB_REF_LOCAL)
        t.mem.store_u32(o + obj.OB_REF_LOCAL, local + 1)

    async def main(t):
        o = await t.new_object(THING)
        c = await t.spawn(impostor, o)
        await t.incref(o)
        await t.join(c)

    with pytest.raises(ViolationError) as e:
        run(main, checked=False)
    assert e.value.kind == "data-race"
