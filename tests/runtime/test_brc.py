"""The BRC inter-thread queue (ftlab.runtime.brc) and the run statistics of reference
counting."""

from __future__ import annotations

from ftlab import Config
from ftlab.check.refcount import install
from ftlab.explore.execute import execute
from ftlab.runtime import Runtime
from ftlab.runtime import object as obj
from ftlab.runtime.brc import BRC_NUM_BUCKETS, queue_object
from ftlab.runtime.object import REF_MERGED, REF_QUEUED, REF_SHARED, PyType, header
from ftlab.runtime.pystate import EVAL_EXPLICIT_MERGE_BIT
from ftlab.scenarios import Scenario
from ftlab.sim import PCT, Random

THING = PyType("Thing", basicsize=48)


def run(fn, config: Config | None = None):
    rt = Runtime(config)
    install(rt)
    return rt, rt.run_main(fn)


def test_a_queued_object_sets_the_owners_merge_bit_and_is_merged_at_its_periodic_check():
    seen = {}

    async def other(t, o):
        await t.decref(o)                       # the last reference, not the owner's thread

    async def main(t):
        o = await t.new_object(THING)
        c = await t.spawn(other, o)             # hands its reference over
        await t.join(c)
        seen["queued"] = header(t.mem, o)[1:]
        seen["bit"] = bool(t.peek_eval_breaker() & EVAL_EXPLICIT_MERGE_BIT)
        seen["stack"] = list(t.brc.objects_to_merge)
        seen["o"] = o
        await t.periodic_check()
        seen["bit after"] = bool(t.peek_eval_breaker() & EVAL_EXPLICIT_MERGE_BIT)
        seen["dealloc"] = t.rt.stats["objects_deallocated"]

    rt, _ = run(main)
    assert seen["queued"] == (1, REF_QUEUED)
    assert seen["bit"] and not seen["bit after"]
    assert seen["stack"] == [seen["o"]]
    assert seen["dealloc"] == 1
    assert rt.stats["brc_queued"] == 1 and rt.stats["brc_queue_pushes"] == 1
    assert rt.stats["brc_explicit_merges"] == 1


def test_a_thread_merges_its_queue_when_it_exits():
    async def other(t, o):
        await t.decref(o)

    async def main(t):
        o = await t.new_object(THING)
        c = await t.spawn(other, o)
        await t.join(c)                         # no periodic check: the exit merges

    rt, _ = run(main)
    assert rt.stats["brc_explicit_merges"] == 1
    assert rt.stats["objects_deallocated"] == 1


def test_when_the_owner_has_exited_the_queuing_thread_merges_directly():
    seen = {}

    async def owner(t, box):
        box.append(await t.new_object(THING))   # its reference goes to main

    async def main(t):
        box = []
        c = await t.spawn(owner, box)
        await t.join(c)                         # the owner has left the BRC table
        o = box[0]
        seen["owner in table"] = t.rt.brc.find_thread_state(header(t.mem, o)[0]) is not None
        await t.decref(o)                       # queues, finds no owner, merges with -1
        seen["pushes"] = t.rt.stats["brc_queue_pushes"]

    rt, _ = run(main)
    assert seen == {"owner in table": False, "pushes": 0}
    assert rt.stats["brc_queued"] == 1 and rt.stats["brc_explicit_merges"] == 1
    assert rt.stats["objects_deallocated"] == 1


def test_a_queuer_that_finds_tid_0_just_drops_its_reference():
    """The owner merged between the queuer's CAS and its load of ob_tid: the object is MERGED
    with the queue's reference still counted; the queuer's decref frees it."""
    seen = {}

    async def main(t):
        o = await t.new_object(THING)
        # hand-made state: merged by its owner, one reference (the queue's) left
        t.mem.store_u64(o + obj.OB_TID, 0)
        t.mem.store_u32(o + obj.OB_REF_LOCAL, 0)
        t.mem.store_u64(o + obj.OB_REF_SHARED, REF_SHARED(1, REF_MERGED))
        await queue_object(t, o)
        seen["dealloc"] = t.rt.stats["objects_deallocated"]
        seen["pushes"] = t.rt.stats["brc_queue_pushes"]

    rt = Runtime()
    rt.run_main(main)
    assert seen == {"dealloc": 1, "pushes": 0}


def test_thread_states_hash_into_257_buckets_by_tid():
    found = {}

    async def child(t):
        found["child"] = t.rt.brc.find_thread_state(t.tid) is t

    async def main(t):
        b = t.rt.brc.bucket(t.tid)
        found["bucket"] = b is t.rt.brc.bucket(t.tid + BRC_NUM_BUCKETS)
        found["main"] = t in b.root
        c = await t.spawn(child)
        await t.join(c)
        found["child gone"] = t.rt.brc.find_thread_state(c.tid) is None

    run(main)
    assert BRC_NUM_BUCKETS == 257
    assert found == {"bucket": True, "main": True, "child": True, "child gone": True}


# ---------------------------------------------------------------------------------------------
# Run statistics

async def _thread_local_workload(t):
    objs = [await t.new_object(THING) for _ in range(5)]
    for o in objs:
        for _ in range(3):
            await t.incref(o)
        assert obj.try_incref_fast(t, o)
        for _ in range(4):
            await t.decref(o)
    for o in objs:
        await t.decref(o)


def test_a_thread_local_workload_does_no_atomic_refcount_operation():
    r = execute(Scenario("local", "", threads=(("main", _thread_local_workload),)), Config(), Random(0).execution(0))
    assert r.ok, r.violation
    assert r.stats.get("refcnt_atomic", 0) == 0
    assert r.stats["refcnt_nonatomic"] == 5 * (3 + 1 + 4 + 1)
    assert r.stats["objects_deallocated"] == 5
    assert r.stats.get("brc_queued", 0) == 0


HANDED, KEPT = 6, 4


async def _consumer(t, objs):
    for o in objs:
        await t.decref(o)


async def _producer(t):
    handed = [await t.new_object(THING) for _ in range(HANDED)]
    kept = [await t.new_object(THING) for _ in range(KEPT)]
    await t.spawn(_consumer, handed)            # the references go with them
    await t.periodic_check()
    for o in kept:
        await t.decref(o)
    await t.periodic_check()


HAND_OFF_WORKLOAD = Scenario("hand-off-workload", "", threads=(("producer", _producer),))


def test_the_queued_fraction_of_a_hand_off_workload_is_the_handed_fraction():
    for strategy in (Random(1), PCT(1, 2, 60)):
        for i in range(20):
            r = execute(HAND_OFF_WORKLOAD, Config(), strategy.execution(i))
            assert r.ok, r.violation
            s = r.stats
            assert s["objects_deallocated"] == HANDED + KEPT
            assert s["brc_queued"] / s["objects_deallocated"] == HANDED / (HANDED + KEPT)
            # every queued object is merged once, by its owner or (owner gone) by the queuer
            assert s["brc_explicit_merges"] == HANDED
            assert s["brc_queue_pushes"] <= HANDED
            assert s["refcnt_nonatomic"] == KEPT
