"""The free-threaded GC (ftlab.runtime.gc) against hand-computed expectations: gc_refs of a
small graph, buffered counts flushing at exactly +/-512, scheduling through the eval breaker,
every other thread SUSPENDED during a collection."""

from __future__ import annotations

from ftlab import Config
from ftlab.check import install
from ftlab.runtime import Runtime
from ftlab.runtime import gc
from ftlab.runtime.listobject import list_append, list_new
from ftlab.runtime.object import GC_BITS_UNREACHABLE, OB_GC_BITS, OB_TID, PyType, header, refcnt
from ftlab.runtime.observer import Observer
from ftlab.runtime.pystate import GC_SCHEDULED_BIT
from ftlab.runtime.tupleobject import tuple_new, tuple_set_item
from ftlab.sim.strategies import RoundRobin

GC_THING = PyType("GCThing", basicsize=48, gc=True)


def checked_runtime(config: Config | None = None) -> Runtime:
    rt = Runtime(config)
    install(rt)
    return rt


async def small_graph(t):
    """L1 -> [L2, T], T -> (L1,); the caller holds L1 and L2. Refcounts: L1 2, L2 2, T 1."""
    l1 = await list_new(t)
    l2 = await list_new(t)
    tup = await tuple_new(t, 1)
    await t.incref(l1)
    tuple_set_item(t, tup, 0, l1)
    await t.incref(l2)
    await list_append(t, l1, l2)
    await list_append(t, l1, tup)
    return l1, l2, tup


def test_update_refs_computes_external_references_in_ob_tid_and_scan_restores_it():
    seen = {}

    async def main(t):
        l1, l2, tup = await small_graph(t)
        seen["objs"] = (l1, l2, tup)
        seen["rc"] = [refcnt(t.mem, o) for o in (l1, l2, tup)]
        rt = t.rt
        await rt.stop_the_world(t)
        state = gc.CollectionState(t, gc.REASON_MANUAL)
        await gc.gc_visit_heaps(t, state, lambda op: gc.update_refs(t, op))
        seen["gc_refs"] = [t.mem.load_u64(o + OB_TID) for o in (l1, l2, tup)]
        seen["unreachable"] = [bool(t.mem.load_u8(o + OB_GC_BITS) & GC_BITS_UNREACHABLE)
                               for o in (l1, l2, tup)]
        await gc.gc_visit_heaps(t, state, lambda op: gc.mark_heap_visitor(t, op))
        await gc.gc_visit_heaps(t, state, lambda op: gc.scan_heap_visitor(t, state, op))
        seen["after"] = [header(t.mem, o)[0] for o in (l1, l2, tup)]
        seen["long_lived"] = state.long_lived_total
        seen["worklist"] = state.unreachable.head
        await rt.start_the_world(t)
        seen["tid"] = t.tid
        await t.decref(l1)
        await t.decref(l2)
        seen["collected"] = await t.gc_collect()

    rt = checked_runtime()
    rt.run_main(main)
    rt.finalize()
    rt.observer.run_finished(rt)
    assert seen["rc"] == [2, 2, 1]
    assert seen["gc_refs"] == [1, 1, 0], "refcount minus references from tracked objects"
    assert seen["unreachable"] == [True, True, True]
    assert seen["after"] == [seen["tid"]] * 3, "reachable objects get their segment's tid back"
    assert seen["long_lived"] == 3 and seen["worklist"] == 0
    assert seen["collected"] == 3                   # L2 is only L1's now: all three


def test_cycle_is_collected_and_the_survivor_keeps_its_owner():
    seen = {}

    async def main(t):
        l1, l2, tup = await small_graph(t)
        await t.decref(l1)                          # L1 <-> T is now garbage
        seen["collected"] = await t.gc_collect()
        seen["l2"] = (header(t.mem, l2), refcnt(t.mem, l2), t.tid)
        seen["long_lived"] = t.rt.gc.long_lived_total
        await t.decref(l2)

    rt = checked_runtime()
    rt.run_main(main)
    (tid, local, shared), rc, me = seen["l2"]
    assert seen["collected"] == 2
    assert (tid, local, shared, rc) == (me, 1, 0, 1), "L2 untouched: owned, local 1, shared 0"
    assert seen["long_lived"] == 1
    assert rt.stats["objects_deallocated"] == 3


def test_finalizer_resurrects_and_runs_once():
    seen = {"calls": 0}

    async def finalize(t, op):
        seen["calls"] += 1
        await t.incref(op)                          # resurrect: keep a reference
        seen["saved"] = op

    holder = PyType("Resurrector", basicsize=48, gc=True, finalize=finalize,
                    traverse=lambda mem, op: [mem.load_u64(op + 32)] if mem.load_u64(op + 32)
                    else [])

    async def main(t):
        a = await t.new_object(holder)
        t.mem.store_u64(a + 32, 0)
        from ftlab.runtime.object import gc_track, store_field
        gc_track(t, a)
        await t.incref(a)
        store_field(t, a, 32, a)                    # a -> a
        await t.decref(a)                           # only the self-reference left
        seen["first"] = await t.gc_collect()
        seen["second"] = await t.gc_collect()       # still garbage, already finalized
        seen["rc"] = refcnt(t.mem, a)

    rt = Runtime()
    rt.run_main(main)
    assert seen["calls"] == 1, "tp_finalize runs once (FINALIZED bit)"
    assert seen["first"] == 0, "the resurrected object is not collected"
    # The second collection finds it reachable (the finalizer's reference is external).
    assert seen["second"] == 0 and seen["rc"] == 2


def test_buffered_counts_flush_at_exactly_plus_and_minus_512():
    seen = {}

    async def main(t):
        objs = []
        for _ in range(511):
            objs.append(await t.new_object(GC_THING))
        seen["511"] = (t.rt.gc.peek_count(), t.gc.alloc_count)
        objs.append(await t.new_object(GC_THING))
        seen["512"] = (t.rt.gc.peek_count(), t.gc.alloc_count)
        for o in objs[:511]:
            await t.decref(o)
        seen["-511"] = (t.rt.gc.peek_count(), t.gc.alloc_count)
        await t.new_object(GC_THING)                # +1 then...
        await t.decref(objs[511])                   # ... -1: still -511
        o = objs.pop()
        seen["mid"] = (t.rt.gc.peek_count(), t.gc.alloc_count)
        extra = await t.new_object(GC_THING)
        await t.decref(extra)
        seen["pair"] = (t.rt.gc.peek_count(), t.gc.alloc_count)

    rt = Runtime(Config(checked=False))
    rt.run_main(main)
    assert seen["511"] == (0, 511)
    assert seen["512"] == (512, 0)
    assert seen["-511"] == (512, -511)
    # one more allocation (-510) and a free (-511): no flush yet; the leaked object stays
    assert seen["mid"] == (512, -511)
    # +1 -> -510, -1 -> -511: a pair never reaches -512
    assert seen["pair"] == (512, -511)


def test_deallocation_flush_at_minus_512_adds_the_negative_count():
    seen = {}

    async def main(t):
        objs = [await t.new_object(GC_THING) for _ in range(512)]
        for o in objs:
            await t.decref(o)
        seen["end"] = (t.rt.gc.peek_count(), t.gc.alloc_count)

    rt = Runtime(Config(checked=False))
    rt.run_main(main)
    assert seen["end"] == (0, 0), "+512 flushed, then -512 flushed"


def test_a_flush_past_the_threshold_schedules_a_collection_at_the_next_periodic_check():
    seen = {}

    async def main(t):
        keep = [await list_new(t) for _ in range(3)]        # flush at 2: count 2, not > 2
        seen["bit3"] = t.peek_eval_breaker() & GC_SCHEDULED_BIT
        keep.append(await list_new(t))                      # flush: count 4 > 2
        seen["bit4"] = t.peek_eval_breaker() & GC_SCHEDULED_BIT
        await t.periodic_check()
        seen["collections"] = t.rt.gc.collections
        seen["count"] = t.rt.gc.peek_count()
        for o in keep:
            await t.decref(o)

    rt = checked_runtime(Config(gc_local_threshold=2, gc_threshold=2))
    rt.run_main(main)
    assert not seen["bit3"] and seen["bit4"]
    assert seen["collections"] == 1 and seen["count"] == 0


class _Statuses(Observer):
    def __init__(self, rt):
        self.rt = rt
        self.seen = []

    def gc_collection_started(self, t):
        self.seen.append(sorted((p.vt.name, p.status) for p in self.rt.threads_head))


def test_every_other_thread_is_suspended_during_a_collection():
    rt = Runtime()
    install(rt)
    obs = _Statuses(rt)
    rt.add_observer(obs)
    go = rt.event("go")

    async def spinner(t):
        for _ in range(3):
            await t.periodic_check()

    async def waiter(t):
        await t.wait(go)

    async def main(t):
        s = await t.spawn(spinner, name="spinner")
        w = await t.spawn(waiter, name="waiter")
        await t.gc_collect()
        await go.set()
        await t.join(s)
        await t.join(w)

    rt.start_thread(main, name="main")
    rt.machine.run(RoundRobin().execution(0))
    assert rt.machine.violation is None
    assert len(obs.seen) == 1
    statuses = dict(obs.seen[0])
    assert statuses["main"] == "attached"
    assert all(statuses[n] == "suspended" for n in ("spinner", "waiter") if n in statuses)
