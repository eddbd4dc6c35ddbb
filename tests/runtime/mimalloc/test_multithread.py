"""Cross-thread frees, delayed frees, abandonment and reclaim (reference §9.2-9.4, §12)."""

from __future__ import annotations

from ftlab.runtime.mimalloc import block_info
from ftlab.runtime.mimalloc.stats import allocated_blocks, snapshot
from ftlab.runtime.mimalloc.types import HeapTag, MiDelayed
from ftlab.runtime.mimalloc.visit import abandoned_pool_visit_blocks, heap_visit_blocks
from ftlab.sim import PCT, Random
from ftlab.sim.memory import Tag

USE, FREEING, NO, NEVER = (MiDelayed.MI_USE_DELAYED_FREE, MiDelayed.MI_DELAYED_FREEING,
                           MiDelayed.MI_NO_DELAYED_FREE, MiDelayed.MI_NEVER_DELAYED_FREE)


def test_first_remote_free_goes_to_the_heap_list_later_ones_to_the_page(make_run) -> None:
    """§9.3, as verified on the real build: B frees two blocks of A's non-full page; the first
    lands in A's heap `thread_delayed_free`, the second in the page's `xthread_free`, and the
    state is MI_NO_DELAYED_FREE. A's next generic-path malloc drains both."""
    run = make_run()
    rt, mi = run.rt, run.mi
    ready, done = rt.event("ready"), rt.event("done")
    box: dict[str, object] = {}

    async def owner(t):
        heap = t.mimalloc.heaps[HeapTag.MEM]
        ps = [await t.malloc(64) for _ in range(6)]
        box["ps"] = ps
        await ready.set()
        await done.wait()
        page = run.page_of(ps[0])
        tf = mi.mem.raw_load(page.tf_addr, 8)
        tdf = mi.mem.raw_load(heap.tdf_addr, 8)
        assert tf & 3 == NO
        assert tdf == ps[0], "the first remote free goes to the heap's delayed list"
        assert tf & ~3 == ps[1], "the second one to the page's thread-free list"
        assert page.used == 6, "remote frees are not counted until collected"
        await t.malloc(1000)        # a generic-path allocation drains the heap list
        assert mi.mem.raw_load(heap.tdf_addr, 8) == 0
        assert mi.mem.raw_load(page.tf_addr, 8) & 3 == USE
        assert page.used == 4
        for p in ps[2:]:
            await t.free(p)

    async def freer(t):
        await ready.wait()
        ps = box["ps"]
        await t.free(ps[0])
        await t.free(ps[1])
        await done.set()

    assert run.go(owner, freer) is None
    assert mi.counters["frees_delayed"] == 1 and mi.counters["frees_remote"] == 2


def test_exit_abandons_and_first_malloc_of_another_thread_reclaims_by_tag(make_run) -> None:
    """A thread exits with live blocks in three tagged heaps; the next thread's first malloc
    has no segment of its own, reclaims the abandoned one, and gets each page in its heap of
    the same tag (CPython's `_mi_heap_by_tag`); its frees are then local."""
    run = make_run()
    rt, mi = run.rt, run.mi
    box: dict[str, object] = {}

    async def leaver(t):
        box["blocks"] = [await t.mimalloc.heaps[tag].malloc(48)
                         for tag in (HeapTag.MEM, HeapTag.OBJECT, HeapTag.GC)]
        box["seg"] = block_info(rt, box["blocks"][0]).segment_base

    async def main(t):
        child = await t.spawn(leaver)
        await t.join(child)
        seg = mi.segments[box["seg"]]
        assert seg.thread_id == 0 and seg.abandoned == seg.used == 3
        st = snapshot(mi)
        assert st.segments_abandoned == 1 and st.pages_abandoned == 3
        # visiting the pool by tag (CPython's GC does this with the world stopped)
        seen: list[int] = []
        await abandoned_pool_visit_blocks(
            mi, HeapTag.GC, True, lambda h, a, b, s: (b is None or seen.append(b)) or True)
        assert seen == [box["blocks"][2]]
        assert await allocated_blocks(rt) == 3
        p = await t.malloc(16)                              # reclaims the segment
        assert seg.thread_id == t.mimalloc.tld.thread_id
        for b, tag in zip(box["blocks"], (HeapTag.MEM, HeapTag.OBJECT, HeapTag.GC)):
            page = run.page_of(b)
            assert page.heap is t.mimalloc.heaps[tag]
            assert page.tag == tag
        for b in box["blocks"] + [p]:
            await t.free(b)

    assert run.go(main) is None
    assert mi.counters["segments_reclaimed"] == 1
    assert mi.counters["frees_remote"] == 0


def test_heap_new_heaps_are_absorbed_at_exit_and_visit_sees_live_blocks(make_run) -> None:
    run = make_run()
    mi = run.mi

    async def main(t):
        h = await t.heap_new()
        assert h.no_reclaim and h.tag == 0
        assert block_info(run.rt, h.addr).block_size == 3072   # mi_heap_new's record
        ps = [await h.malloc(n) for n in (16, 16, 100, 3000, 20000, 200000)]
        await h.free(ps[1])
        seen: list[int] = []
        areas: list[int] = []

        def visitor(heap, area, block, bsize):
            if block is None:
                areas.append(area.used)
            else:
                seen.append(block)
            return True
        await heap_visit_blocks(h, True, visitor)
        assert sorted(seen) == sorted(ps[:1] + ps[2:])
        assert sum(areas) == 5
        run.rt.shared = ps                      # left live: absorbed by the backing heap

    assert run.go(main) is None
    # the exit deleted the heap (absorbed into MEM) and then abandoned MEM's pages
    st = snapshot(mi)
    assert st.blocks_live == 5
    assert run.checker is not None


def _contended_free(run, rounds: int):
    """Two threads: the owner allocates and hands blocks over while allocating more; the other
    frees them remotely; both exit (so the owner's abandon waits out MI_DELAYED_FREEING)."""
    rt = run.rt
    slot = rt.mem.reserve(1 << 16)
    rt.mem.commit(slot, 4096)

    async def owner(t):
        for i in range(rounds):
            p = await t.malloc(32)
            t.mem.store_u64(p, i, Tag.PAYLOAD)
            q = await t.mem.exchange(slot, p)
            if q:
                await t.free(q)
            await t.mimalloc.heaps[HeapTag.MEM].collect(False)   # drains the delayed list

    async def other(t):
        for _ in range(rounds):
            q = await t.mem.exchange(slot, 0)
            if q:
                await t.free(q)
        q = await t.mem.exchange(slot, 0)
        if q:
            await t.free(q)

    return run.go(owner, other, strategy=run.strategy)


def test_delayed_free_contention_is_clean_and_reaches_the_rare_paths(make_run) -> None:
    """Under many schedules a drain meets a page still in MI_DELAYED_FREEING (the block is
    pushed back) or an exit waits for one (a parked spin); never a violation."""
    total = {"spin_parks": 0, "delayed_blocks_deferred": 0, "frees_delayed": 0}
    for i in range(150):
        run = make_run()
        run.strategy = Random(i) if i % 2 else PCT(i, 4, 150)
        v = _contended_free(run, 6)
        assert v is None, (i, v)
        for k in total:
            total[k] += run.mi.counters[k]
    assert total["frees_delayed"] > 0
    assert total["spin_parks"] + total["delayed_blocks_deferred"] > 0, total


def test_debug_build_keeps_the_header_words_of_object_blocks(make_run) -> None:
    """MI_DEBUG=2 fills freed blocks with 0xDD from the page's debug_offset: 0 for MEM, 24 for
    OBJECT (ob_tid is then the free-list link, the refcount words are kept)."""
    run = make_run(pydebug=True)
    mem = run.rt.mem

    async def main(t):
        p = await t.mimalloc.heaps[HeapTag.OBJECT].malloc(64)
        q = await t.malloc(64)
        for b in (p, q):
            mem.write_bytes(b, bytes(range(64)), Tag.PAYLOAD)
        await t.free(p)
        await t.free(q)
        assert mem.read_bytes(p + 8, 16) == bytes(range(8, 24))        # refcount words kept
        assert mem.read_bytes(p + 24, 40) == b"\xdd" * 40
        assert mem.tag_of(p) == Tag.FREE_LINK
        assert mem.read_bytes(q + 8, 56) == b"\xdd" * 56

    run.main(main)
