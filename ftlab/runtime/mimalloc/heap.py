"""Heaps (`src/heap.c`): collection, heap creation and deletion, absorption.

A heap owns pages in its 75 queues (`page_queue`); all heaps of a thread share the thread's
segments (`Tld.segments`). CPython gives each thread state four heaps, one per tag (MEM 0 is
also the backing heap, OBJECT 1, GC 2, GC_PRE 3; `init.tstate_mimalloc_bind`); `heap_new`
makes further heaps (`mi_heap_new`: the record is a block of the backing heap, `no_reclaim`).

Collection (`heap_collect_ex`, kinds NORMAL / FORCE / ABANDON; ABANDON counts as forced):
1. the heartbeat; 2. on the main thread's backing heap, a forced collection first reclaims every
abandoned segment (end of program; CPython also requires the heap to belong to the calling
thread, since the GC may collect other threads' heaps); 3. ABANDON sets every page to
`MI_NEVER_DELAYED_FREE`, so that remote frees stop touching the heap; 4. the heap's delayed
frees are all processed (after this, with ABANDON, nothing refers into the heap's pages from
its delayed list); 5. retired pages are collected, then (CPython) the thread's QSBR page list;
6. every page is collected and freed if all free, or abandoned (ABANDON); 7. abandoned segments
that became empty are freed (`abandoned_collect`).

Thread exit in CPython (`_PyThreadState_ClearMimallocHeaps`) is `heap_collect_abandon` of the
four heaps; the segments whose every used page is then abandoned go to the interpreter's pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Awaitable, Callable

from ftlab.runtime.mimalloc import page as _page
from ftlab.runtime.mimalloc import segment as _seg
from ftlab.runtime.mimalloc.alloc import heap_malloc
from ftlab.runtime.mimalloc.arena import arena_collect
from ftlab.runtime.mimalloc.free import mi_free
from ftlab.runtime.mimalloc.visit import heap_visit
from ftlab.runtime.mimalloc.types import (
    MI_BIN_FULL,
    Heap,
    MiCollect,
    MiDelayed,
    Page,
    PageQueue,
    Tld,
)
from ftlab.sim.memory import Tag

if TYPE_CHECKING:
    from ftlab.runtime.mimalloc.init import MiRuntime

MI_NORMAL, MI_FORCE, MI_ABANDON = MiCollect.MI_NORMAL, MiCollect.MI_FORCE, MiCollect.MI_ABANDON

PageVisitor = Callable[[Heap, PageQueue, Page], Awaitable[bool]]


# ---------------------------------------------------------------------------------------------
# Helpers

async def heap_visit_pages(heap: Heap, fn: PageVisitor) -> bool:
    """`mi_heap_visit_pages`: every page of every queue (0..74), remembering `next` first since
    the visitor may remove the page. CPython returns true for an empty heap (upstream false)."""
    if heap.page_count == 0:
        return True
    for pq in heap.pages:
        page = pq.first
        while page is not None:
            nxt = page.next
            if not await fn(heap, pq, page):
                return False
            page = nxt
    return True


def _page_queues_empty(mi: "MiRuntime") -> list[PageQueue]:
    """`MI_PAGE_QUEUES_EMPTY`: a heap's 75 empty queues (issue 13: made for every heap of every
    thread, so built by `map` rather than a comprehension)."""
    sizes = mi.queue_block_sizes
    return list(map(PageQueue, sizes, range(len(sizes))))


def heap_is_backing(heap: Heap) -> bool:
    """`mi_heap_is_backing`."""
    return heap.tld.heap_backing is heap


# ---------------------------------------------------------------------------------------------
# Collect

async def heap_page_collect(heap: Heap, pq: PageQueue, page: Page, collect: int) -> bool:
    """`mi_heap_page_collect` (CPython: an all-free page goes through `page_maybe_free`; if it
    is kept back (QSBR) and the thread is exiting, it is abandoned like a used page)."""
    force = collect >= MI_FORCE
    await _page.page_free_collect(page, force)
    if page.used == 0:
        freed = await heap.mi.hooks.page_maybe_free(page, pq, force)
        if not freed and collect == MI_ABANDON:
            await _page.page_abandon(page, pq)
    elif collect == MI_ABANDON:
        await _page.page_abandon(page, pq)
    return True


async def heap_collect_ex(heap: Heap, collect: int) -> None:
    """`mi_heap_collect_ex` (module docstring)."""
    mi = heap.mi
    tld = heap.tld
    force = collect >= MI_FORCE
    _page.deferred_free(heap, force)
    # NDEBUG (release builds) collects only on MI_FORCE; debug builds also on MI_ABANDON
    kinds = collect == MI_FORCE if mi.build.debug == 0 else collect >= MI_FORCE
    force_main = (kinds and mi.is_main_thread() and heap_is_backing(heap)
                  and not heap.no_reclaim and heap.thread_id == mi.thread_id())
    if force_main:
        await _seg.abandoned_reclaim_all(heap, tld.segments)

    if collect == MI_ABANDON:
        async def never_delayed(h: Heap, pq: PageQueue, page: Page) -> bool:
            await _page.page_use_delayed_free(page, MiDelayed.MI_NEVER_DELAYED_FREE, False)
            return True
        await heap_visit_pages(heap, never_delayed)

    await _page.heap_delayed_free_all(heap)
    await _page.heap_collect_retired(heap, force)
    await mi.hooks.heap_collect_qsbr(heap)

    async def page_collect(h: Heap, pq: PageQueue, page: Page) -> bool:
        return await heap_page_collect(h, pq, page, collect)
    await heap_visit_pages(heap, page_collect)

    await _seg.abandoned_collect(heap, collect == MI_FORCE, tld.segments)
    if force and mi.is_main_thread() and heap_is_backing(heap):
        arena_collect(mi, True)
    mi.rt.observer.mi_op_done(tld.tstate)


async def heap_collect_abandon(heap: Heap) -> None:
    """`_mi_heap_collect_abandon`."""
    await heap_collect_ex(heap, MI_ABANDON)


async def heap_collect(heap: Heap, force: bool) -> None:
    """`mi_heap_collect`."""
    await heap_collect_ex(heap, MI_FORCE if force else MI_NORMAL)


# ---------------------------------------------------------------------------------------------
# Heap new

def heap_init_ex(mi: "MiRuntime", heap: Heap, tld: Tld, addr: int, no_reclaim: bool, tag: int) -> None:
    """CPython's `_mi_heap_init_ex`: a copy of the empty heap for `tld` at `addr`, with its own
    random state (backing heap) or one split from the backing heap's, cookie and keys, pushed
    on the thread's heap list."""
    import random as _random

    heap.mi = mi
    heap.tld = tld
    heap.addr = addr
    heap.tdf_addr = addr + mi.build.heap_offset_thread_delayed_free
    empty = mi.page_empty
    heap.pages_free_direct = [empty] * mi.build.pages_direct
    heap.pages = _page_queues_empty(mi)
    heap.thread_id = tld.thread_id
    heap.arena_id = 0
    if tld.heap_backing is heap or tld.heap_backing is None:
        heap.random = _random.Random(mi.random.getrandbits(64))
    else:
        heap.random = _random.Random(tld.heap_backing.random.getrandbits(64))
    heap.cookie = heap.random.getrandbits(64) | 1
    heap.keys0 = heap.random.getrandbits(64)
    heap.keys1 = heap.random.getrandbits(64)
    heap.page_count = 0
    heap.page_retired_min = MI_BIN_FULL
    heap.page_retired_max = 0
    heap.no_reclaim = no_reclaim
    heap.tag = tag
    heap.debug_offset = 0
    heap.page_use_qsbr = False
    heap.deleted = False
    heap.next = tld.heaps
    tld.heaps = heap
    # the words other threads use: the delayed-free list head and the owner's id
    mem = mi.mem
    mem.store_u64(heap.tdf_addr, 0, Tag.META)
    mem.store_u64(addr + mi.build.heap_offset_thread_id, tld.thread_id, Tag.META)
    mi.heaps_by_addr[addr] = heap


async def heap_new(tld: Tld) -> Heap:
    """`mi_heap_new`: the record is allocated from the thread's backing heap (3064 bytes, so
    the 3072-byte size class); `no_reclaim`, tag 0."""
    mi = tld.mi
    addr = await heap_malloc(tld.heap_backing, mi.build.sizeof_heap())
    if addr == 0:
        raise MemoryError("mi_heap_new: out of memory")
    heap = Heap()
    heap_init_ex(mi, heap, tld, addr, True, 0)
    return heap


def heap_reset_pages(heap: Heap) -> None:
    """`mi_heap_reset_pages`: empty queues and direct pages."""
    mi = heap.mi
    heap.pages_free_direct = [mi.page_empty] * mi.build.pages_direct
    heap.pages = _page_queues_empty(mi)
    mi.mem.store_u64(heap.tdf_addr, 0, Tag.META)
    heap.page_count = 0


async def heap_free(heap: Heap) -> None:
    """`mi_heap_free`: unlink a non-backing heap from its thread and free its record."""
    if heap_is_backing(heap):
        return
    tld = heap.tld
    prev = None
    curr = tld.heaps
    while curr is not heap and curr is not None:
        prev = curr
        curr = curr.next
    if curr is heap:
        if prev is not None:
            prev.next = heap.next
        else:
            tld.heaps = heap.next
    heap.deleted = True
    del heap.mi.heaps_by_addr[heap.addr]
    await mi_free(heap.mi, heap.addr)


# ---------------------------------------------------------------------------------------------
# Safe heap delete

async def heap_absorb(heap: Heap, frm: Heap) -> None:
    """`mi_heap_absorb`: move every page of `frm` to the end of `heap`'s queues."""
    if frm.page_count == 0:
        return
    await _page.heap_delayed_free_partial(frm)
    for i in range(MI_BIN_FULL + 1):
        pcount = await _page.page_queue_append(heap, heap.pages[i], frm.pages[i])
        heap.page_count += pcount
        frm.page_count -= pcount
    await _page.heap_delayed_free_all(frm)
    heap_reset_pages(frm)


async def heap_delete(heap: Heap) -> None:
    """`mi_heap_delete`: a non-backing heap hands its pages to the backing heap; the backing
    heap abandons its pages instead. Live blocks stay live."""
    if heap.deleted:
        return
    if not heap_is_backing(heap):
        await heap_absorb(heap.tld.heap_backing, heap)
    else:
        await heap_collect_abandon(heap)
    await heap_free(heap)
    heap.mi.rt.observer.mi_op_done(heap.tld.tstate)


# ---------------------------------------------------------------------------------------------
# Analysis

def heap_of_block(mi: "MiRuntime", p: int) -> Heap | None:
    """`mi_heap_of_block`."""
    segment = mi.segments.get((p - 1) & ~_seg.MI_SEGMENT_MASK)
    if segment is None:
        return None
    return _seg.segment_page_of(segment, p).heap


def heap_contains_block(heap: Heap, p: int) -> bool:
    """`mi_heap_contains_block`."""
    return heap_of_block(heap.mi, p) is heap


def heap_is_valid(heap: Heap) -> None:
    """Every page of the heap is valid and in the right queue (`mi_heap_is_valid`)."""
    from ftlab.runtime.mimalloc.page_queue import heap_queues_are_valid

    heap_queues_are_valid(heap)
    for pq in heap.pages:
        p = pq.first
        while p is not None:
            _page.page_is_valid(p)
            p = p.next



Heap.collect = heap_collect  # type: ignore[attr-defined]
Heap.delete = heap_delete  # type: ignore[attr-defined]
Heap.visit_blocks = heap_visit  # type: ignore[attr-defined]
