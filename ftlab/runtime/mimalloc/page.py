"""Pages (`src/page.c`): the core of the allocator. Every segment contains pages of one block
size; the main function exported is `find_page`, the page-finding half of `malloc_generic`.

A page's blocks are handed out from three lists, each threaded through the first word of the
free blocks themselves (in simulated memory, tagged FREE_LINK; encoded with the page keys in
`MI_DEBUG` builds):

* `free`: what `malloc` pops;
* `local_free`: blocks freed by the owner; moved to `free` only when `free` is empty
  (`page_free_collect`), which gives the allocator a deterministic "heartbeat" slow path;
* `xthread_free` (an atomic word in simulated memory): blocks freed by other threads, pushed
  with CAS; its low 2 bits are the delayed-free state (`MiDelayed`). The owner moves the list
  to the front of `local_free` with one CAS (`page_thread_free_collect`).

`used` counts the blocks handed out, including those sitting in `local_free` or `xthread_free`;
so `used + |free| + |local_free| == capacity` always holds (blocks on the thread-free list are
still counted as used), and "all free" (`used == 0`) needs an up-to-date collection.

A fresh page (`page_init`) gets `reserved = page size / block size` and a first extension;
`page_extend_free` threads the next blocks in ascending address order, at most one OS page
(4 KiB) worth but at least 4 blocks. A page whose `used` drops to 0 by a local free is retired
(`page_retire`): kept, with `retire_expire` 17 (small) or 5 (medium), if it is the only page of
its queue, else freed (CPython: `_PyMem_mi_page_maybe_free`, which may defer it with QSBR).
`heap_collect_retired` counts the expiry down each time a fresh page is needed.

Delayed free (§9.2-9.4 of the reference): a cross-thread free into a page whose state is
`MI_USE_DELAYED_FREE` (every page starts there, and the owner resets it each time it processes
a delayed block) goes to the owning heap's `thread_delayed_free` list instead, so that the owner
notices frees into pages it never searches (full pages). The owner drains that list on every
generic allocation (`heap_delayed_free_partial`).

CPython's changes are calls into `mi.hooks` (`_PyMem_mi_page_clear_qsbr`, `..._maybe_free`,
`..._reclaimed`, `..._heap_collect_qsbr`); the default hooks are those of a heap without QSBR.

Checks (`page_is_valid_init`, `page_is_valid`; mimalloc's debug-level-2 `mi_assert_internal`s):
the lists stay inside the page, on block boundaries, without cycles; `used + |free| +
|local_free| == capacity <= reserved`; the page is in its heap's queue for its block size, or
the full queue exactly when `in_full`; its `xheap` word equals its heap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ftlab.runtime.mimalloc import segment as _seg
from ftlab.runtime.mimalloc.atomic import atomic_yield, spin_until
from ftlab.runtime.mimalloc.bins import bin_index, os_good_alloc_size
from ftlab.runtime.mimalloc.page_queue import (
    HAS_ALIGNED,
    IN_FULL,
    heap_page_queue_of,
    heap_queue_first_update,
    page_queue_contains,
    page_queue_enqueue_from,
    page_queue_is_huge,
    page_queue_is_special,
    page_queue_of,
    page_queue_push,
    page_queue_remove,
)
from ftlab.runtime.mimalloc.types import (
    MI_BIN_FULL,
    MI_HUGE_BLOCK_SIZE,
    MI_MAX_EXTEND_SIZE,
    MI_MAX_RETIRE_SIZE,
    MI_MEDIUM_OBJ_SIZE_MAX,
    MI_MIN_EXTEND,
    MI_RETIRE_CYCLES,
    MI_SEGMENT_MASK,
    MI_SEGMENT_SLICE_SHIFT,
    MI_SMALL_OBJ_SIZE_MAX,
    PTRDIFF_MAX,
    Heap,
    MiDelayed,
    Page,
    PageQueue,
    Tld,
)
from ftlab.sim.atomics import ACQ_REL, ACQUIRE, RELAXED, RELEASE
from ftlab.sim.memory import Tag
from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.runtime.mimalloc.init import MiRuntime

MI_USE_DELAYED_FREE = MiDelayed.MI_USE_DELAYED_FREE
MI_DELAYED_FREEING = MiDelayed.MI_DELAYED_FREEING
MI_NO_DELAYED_FREE = MiDelayed.MI_NO_DELAYED_FREE
MI_NEVER_DELAYED_FREE = MiDelayed.MI_NEVER_DELAYED_FREE
_M64 = (1 << 64) - 1


# ---------------------------------------------------------------------------------------------
# Page helpers

def page_block_size(page: Page) -> int:
    """`mi_page_block_size` (the huge sentinel means: the page area)."""
    b = page.xblock_size
    if b < MI_HUGE_BLOCK_SIZE:
        return b
    return _seg.segment_page_start(page.segment, page)[1]


def page_usable_block_size(page: Page) -> int:
    """`mi_page_usable_block_size`: the block size without the padding."""
    return page_block_size(page) - page.segment.mi.build.padding_size


def page_start(page: Page) -> int:
    """`_mi_page_start`: the address of block 0."""
    return _seg.segment_page_start(page.segment, page)[0]


async def page_set_heap(page: Page, heap: Heap | None) -> None:
    """`mi_page_set_heap`: a release store of `xheap` (read by cross-thread frees with acquire,
    `free_block_mt`), and its mirror."""
    await page.segment.mi.mem.store(page.xheap_addr, 0 if heap is None else heap.addr,
                                    order=RELEASE)
    page.heap = heap


def is_in_same_page(page: Page, q: int) -> bool:
    """`mi_is_in_same_page(block, q)` for a block of `page`."""
    segment = page.segment
    if (q - 1) & ~MI_SEGMENT_MASK != segment.base:
        return False
    s = segment.slices[(q - segment.base) >> MI_SEGMENT_SLICE_SHIFT]
    if s is None:
        return False
    return _seg.slice_first(segment, s) is page


# Encoded free lists (MI_ENCODE_FREELIST, on in MI_DEBUG builds): a link is stored as
# rotl(p ^ k1, k0) + k0, with NULL stored as the encoding of `null` (the page or heap address).

def ptr_encode(null: int, p: int, k0: int, k1: int) -> int:
    """`mi_ptr_encode`."""
    x = (p if p else null) ^ k1
    s = k0 & 63
    return ((((x << s) | (x >> (64 - s))) & _M64 if s else x) + k0) & _M64


def ptr_decode(null: int, x: int, k0: int, k1: int) -> int:
    """`mi_ptr_decode`."""
    x = (x - k0) & _M64
    s = k0 & 63
    p = (((x >> s) | (x << (64 - s))) & _M64 if s else x) ^ k1
    return 0 if p == null else p


# Free-list links. CPython made `mi_block_t.next` an `_Atomic` accessed with relaxed loads and
# stores (for TSAN). The model does the same without a scheduling point: a link is written only
# by the thread that owns the block or is about to publish it with a CAS, so the value a link
# access sees cannot depend on the interleaving. The accesses are reported to the race detector
# as atomic ones, so a plain (user) access to a free block's first word races with them.

def link_load(mi: "MiRuntime", addr: int) -> int:
    """A relaxed atomic load of a free-list link."""
    race = mi.race
    if race is not None:
        race.access(addr, 8, False, True)
    return mi.mem.raw_load(addr, 8)


def link_store(mi: "MiRuntime", addr: int, value: int) -> None:
    """A relaxed atomic store of a free-list link (the word is tagged FREE_LINK)."""
    race = mi.race
    if race is not None:
        race.access(addr, 8, True, True)
    mi.mem.raw_store(addr, 8, value, Tag.FREE_LINK)


def block_next(page: Page, block: int) -> int:
    """`mi_block_next`: the link in the first word of a free block of `page`."""
    mi = page.segment.mi
    v = link_load(mi, block)
    if not mi.build.encode_freelist:
        return v
    nxt = ptr_decode(page.addr, v, page.keys0, page.keys1)
    if nxt and not is_in_same_page(page, nxt):
        raise ViolationError(
            "heap-integrity",
            f"mimalloc: corrupted free list entry of size {page_block_size(page)}b at "
            f"{block:#x}: value {nxt:#x}")
    return nxt


def block_set_next(page: Page, block: int, nxt: int) -> None:
    """`mi_block_set_next`."""
    mi = page.segment.mi
    if mi.build.encode_freelist:
        nxt = ptr_encode(page.addr, nxt, page.keys0, page.keys1)
    link_store(mi, block, nxt)


def block_nextx_heap(heap: Heap, block: int) -> int:
    """`mi_block_nextx(heap, block, heap->keys)`: a link of the heap's delayed-free list."""
    v = link_load(heap.mi, block)
    if heap.mi.build.encode_freelist:
        return ptr_decode(heap.addr, v, heap.keys0, heap.keys1)
    return v


def block_set_nextx_heap(heap: Heap, block: int, nxt: int) -> None:
    """`mi_block_set_nextx(heap, block, next, heap->keys)`."""
    if heap.mi.build.encode_freelist:
        nxt = ptr_encode(heap.addr, nxt, heap.keys0, heap.keys1)
    link_store(heap.mi, block, nxt)


def touched(page: Page) -> None:
    """Tell the heap-integrity oracle this page changed outside the fast paths (a no-op unless
    it is tracking)."""
    seg = page.segment
    if seg is not None and seg.mi.track_touched:
        seg.mi.touch(page)


# ---------------------------------------------------------------------------------------------
# Delayed-free state

async def page_try_use_delayed_free(page: Page, delay: int, override_never: bool) -> bool:
    """`_mi_page_try_use_delayed_free`: set the delayed-free state; gives up (False) after
    4 yields while another thread is in MI_DELAYED_FREEING; leaves MI_NEVER_DELAYED_FREE alone
    unless `override_never`."""
    mi = page.segment.mi
    mem = mi.mem
    addr = page.tf_addr
    yield_count = 0
    while True:
        # must acquire: the loop can break or repeat without a CAS
        tfree = await mem.load(addr, 8, ACQUIRE)
        tfreex = (tfree & ~3) | delay
        old_delay = tfree & 3
        if old_delay == MI_DELAYED_FREEING:
            if yield_count >= 4:
                return False
            yield_count += 1
            await atomic_yield(mi)
            continue
        if delay == old_delay:
            break       # avoid the atomic operation if already equal
        if not override_never and old_delay == MI_NEVER_DELAYED_FREE:
            break       # leave the never-delayed flag set
        ok, _ = await mem.cas(addr, tfree, tfreex, order=RELEASE)
        if ok:
            break
    return True


async def page_use_delayed_free(page: Page, delay: int, override_never: bool) -> None:
    """`_mi_page_use_delayed_free`: retry until the state is set (the unbounded wait for a
    cross-thread free to leave MI_DELAYED_FREEING parks, see `atomic.spin_until`)."""
    mi = page.segment.mi
    while not await page_try_use_delayed_free(page, delay, override_never):
        await spin_until(mi, page.tf_addr, lambda tf: tf & 3 != MI_DELAYED_FREEING,
                         "a cross-thread free in MI_DELAYED_FREEING")


# ---------------------------------------------------------------------------------------------
# Page collect the `local_free` and `thread_free` lists

async def page_thread_free_collect(page: Page) -> None:
    """`_mi_page_thread_free_collect`: take the thread-free list with one CAS (keeping the
    state bits) and put it in front of `local_free`."""
    mem = page.segment.mi.mem
    addr = page.tf_addr
    tfree = await mem.load(addr, 8, RELAXED)
    if page.segment.mi.rt.mutated("mi-thread-free-collect-store"):
        # mutation: load then store, not one atomic exchange: a block another thread pushes
        # between the two (its CAS pairs with our load) is lost with its `used` count
        head = tfree & ~3
        await mem.store(addr, tfree & 3, 8, RELEASE)
    else:
        while True:
            head = tfree & ~3
            ok, tfree = await mem.cas(addr, tfree, tfree & 3, order=ACQ_REL)
            if ok:
                break
    if head == 0:
        return
    max_count = page.capacity   # cannot collect more than capacity
    count = 1
    tail = head
    while True:
        nxt = block_next(page, tail)
        if nxt == 0 or count > max_count:
            break
        count += 1
        tail = nxt
    if count > max_count:
        raise ViolationError("heap-integrity", f"mimalloc: corrupted thread-free list of {page!r} "
                                               f"(more than capacity {max_count} blocks)")
    block_set_next(page, tail, page.local_free)
    page.local_free = head
    page.used -= count
    page.segment.mi.counters["thread_free_collected"] += count


async def page_free_collect(page: Page, force: bool) -> None:
    """`_mi_page_free_collect`: collect the thread-free list (if forced or non-empty) and move
    `local_free` to `free` when `free` is empty (or append it, when forced)."""
    if force or (await page.segment.mi.mem.load(page.tf_addr, 8, RELAXED)) & ~3:
        await page_thread_free_collect(page)
    if page.local_free:
        page.segment.mi.hooks.page_clear_qsbr(page)   # CPython: the page is being reused
        if page.free == 0:
            page.free = page.local_free
            page.local_free = 0
            page.free_is_zero = False
        elif force:
            tail = page.local_free
            count = 1
            while True:
                nxt = block_next(page, tail)
                if nxt == 0:
                    break
                tail = nxt
                count += 1
                if count > page.capacity:
                    # C would loop forever on a cycle; the model reports it
                    raise ViolationError("heap-integrity", f"mimalloc: corrupted local free list "
                                         f"of {page!r} (more than capacity {page.capacity} "
                                         "blocks: a cycle)")
            block_set_next(page, tail, page.free)
            page.free = page.local_free
            page.local_free = 0
            page.free_is_zero = False
    touched(page)


async def page_has_any_available(page: Page) -> bool:
    """`mi_page_has_any_available`."""
    if page.used < page.reserved:
        return True
    return bool((await page.segment.mi.mem.load(page.tf_addr, 8, RELAXED)) & ~3)


# ---------------------------------------------------------------------------------------------
# Page fresh and retire

def page_reclaim(heap: Heap, page: Page) -> None:
    """`_mi_page_reclaim`: push a reclaimed page (abandoned by another thread) on its queue."""
    pq = heap.pages[bin_index(page_block_size(page))]
    page_queue_push(heap, pq, page)
    heap.mi.counters["pages_reclaimed"] += 1
    heap.mi.hooks.page_reclaimed(page)
    touched(page)


async def page_fresh_alloc(heap: Heap, pq: PageQueue, block_size: int) -> Page | None:
    """`mi_page_fresh_alloc`: a fresh page from the segments, initialised and pushed."""
    page = await _seg.segment_page_alloc(heap, block_size, heap.tld.segments)
    if page is None:
        return None     # an abandoned page with free blocks was reclaimed into our queue
    full_block_size = page_block_size(page) if page_queue_is_huge(pq) else block_size
    await page_init(heap, page, full_block_size, heap.tld)
    heap.mi.counters["pages_fresh"] += 1
    page_queue_push(heap, pq, page)
    return page


async def page_fresh(heap: Heap, pq: PageQueue) -> Page | None:
    """`mi_page_fresh`."""
    return await page_fresh_alloc(heap, pq, pq.block_size)


# ---------------------------------------------------------------------------------------------
# Do any delayed frees (put there by other threads)

async def heap_delayed_free_all(heap: Heap) -> None:
    """`_mi_heap_delayed_free_all`: until every delayed block is processed (waiting out the
    cross-thread frees still in MI_DELAYED_FREEING)."""
    while True:
        busy = await _delayed_free_partial(heap)
        if busy is None:
            return
        await spin_until(heap.mi, busy.tf_addr, lambda tf: tf & 3 != MI_DELAYED_FREEING,
                         "a cross-thread free in MI_DELAYED_FREEING")


async def heap_delayed_free_partial(heap: Heap) -> bool:
    """`_mi_heap_delayed_free_partial`: True if all delayed frees were processed."""
    return await _delayed_free_partial(heap) is None


async def _delayed_free_partial(heap: Heap) -> Page | None:
    """The body of `_mi_heap_delayed_free_partial`; returns a page that blocked a block (still
    in MI_DELAYED_FREEING), or None when everything was processed."""
    mem = heap.mi.mem
    addr = heap.tdf_addr
    # take over the list (no atomic exchange since it is often NULL)
    block = await mem.load(addr, 8, RELAXED)
    while block:
        ok, observed = await mem.cas(addr, block, 0, order=ACQ_REL)
        if ok:
            break
        block = observed
    if not block:
        return None
    from ftlab.runtime.mimalloc.free import free_delayed_block
    busy = None
    while block:
        nxt = block_nextx_heap(heap, block)
        if not await free_delayed_block(heap.mi, block):
            # another thread is still in MI_DELAYED_FREEING on this block's page: reinsert it
            busy = _seg.segment_page_of(heap.mi.segments[(block - 1) & ~MI_SEGMENT_MASK], block)
            dfree = await mem.load(addr, 8, RELAXED)
            while True:
                block_set_nextx_heap(heap, block, dfree)
                ok, dfree = await mem.cas(addr, dfree, block, order=RELEASE)
                if ok:
                    break
        block = nxt
    return busy


async def page_queue_append(heap: Heap, pq: PageQueue, append: PageQueue) -> int:
    """`_mi_page_queue_append` (page-queue.c; only `mi_heap_absorb` uses it): move all pages of
    `append` to the end of `pq`, pointing them at `heap` and waiting out any
    MI_DELAYED_FREEING, so that afterwards only `heap` gets delayed frees."""
    if append.first is None:
        return 0
    count = 0
    page = append.first
    while page is not None:
        await page.segment.mi.mem.store(page.xheap_addr, heap.addr, order=RELEASE)
        page.heap = heap
        await page_use_delayed_free(page, MI_USE_DELAYED_FREE, False)
        count += 1
        page = page.next
    if pq.last is None:
        pq.first = append.first
        pq.last = append.last
        heap_queue_first_update(heap, pq)
    else:
        pq.last.next = append.first
        append.first.prev = pq.last
        pq.last = append.last
    return count


# ---------------------------------------------------------------------------------------------
# Unfull, abandon, free and retire

def page_set_qsbr_goal(page: Page, goal: int) -> None:
    """Set `page->qsbr_goal = goal` (CPython FT): a plain store to the page record, which owner-only
    code reads back through the mirror `page.qsbr_goal`; the reads another thread can make
    (a reclaim of an abandoned page) load the word (`page_qsbr_goal`)."""
    page.qsbr_goal = goal
    page.segment.mi.mem.store_u64(page.qsbr_node_addr + 16, goal, Tag.META)


def page_qsbr_goal(page: Page) -> int:
    """A plain load of `page->qsbr_goal`."""
    return page.segment.mi.mem.load_u64(page.qsbr_node_addr + 16)


def page_unfull(page: Page) -> None:
    """`_mi_page_unfull`: move a page from the full queue back to the tail of its bin."""
    if not page.flags & IN_FULL:
        return
    heap = page.heap
    pqfull = heap.pages[MI_BIN_FULL]
    page.flags &= ~IN_FULL      # to get the right queue
    pq = heap_page_queue_of(heap, page)
    page.flags |= IN_FULL
    page_queue_enqueue_from(pq, pqfull, page)
    page.segment.mi.counters["pages_unfull"] += 1
    touched(page)


async def page_to_full(page: Page, pq: PageQueue) -> None:
    """`mi_page_to_full`: append to the full queue, then collect once more in case another
    thread freed just before MI_USE_DELAYED_FREE was set."""
    if page.flags & IN_FULL:
        return
    page_queue_enqueue_from(page.heap.pages[MI_BIN_FULL], pq, page)
    page.segment.mi.counters["pages_to_full"] += 1
    touched(page)
    await page_free_collect(page, False)


async def page_abandon(page: Page, pq: PageQueue) -> None:
    """`_mi_page_abandon`: at thread exit, a page with live blocks leaves its heap (its state is
    already MI_NEVER_DELAYED_FREE, so no delayed-free reference into it remains). CPython
    unlinks it from the thread's QSBR list but keeps its goal."""
    pheap = page.heap
    segments_tld = pheap.tld.segments
    pheap.mi.hooks.page_unlink_qsbr(page)
    page_queue_remove(pq, page)
    await page_set_heap(page, None)
    touched(page)
    await _seg.segment_page_abandon(page, segments_tld)


async def page_free(page: Page, pq: PageQueue, force: bool) -> None:
    """`_mi_page_free`: a page with no used blocks goes back to its segment."""
    page.flags &= ~HAS_ALIGNED
    heap = page.heap
    segments_tld = heap.tld.segments
    page_queue_remove(pq, page)
    await page_set_heap(page, None)
    heap.mi.counters["pages_freed"] += 1
    touched(page)
    await _seg.segment_page_free(page, force, segments_tld)


def page_retire_keep(page: Page) -> PageQueue | None:
    """The decision of `_mi_page_retire`: keep the page (None) if it is small or medium and the
    only page of its queue, setting `retire_expire`; otherwise return its queue (to free it)."""
    mi = page.segment.mi
    mi.hooks.page_clear_qsbr(page)   # CPython: clear any QSBR state first
    page.flags &= ~HAS_ALIGNED
    pq = page_queue_of(page)
    if page.xblock_size <= MI_MAX_RETIRE_SIZE and not page_queue_is_special(pq):
        if pq.last is page and pq.first is page:   # the only page in the queue?
            page.retire_expire = 1 + (MI_RETIRE_CYCLES if page.xblock_size <= MI_SMALL_OBJ_SIZE_MAX
                                      else MI_RETIRE_CYCLES // 4)
            heap = page.heap
            index = pq.bin
            if index < heap.page_retired_min:
                heap.page_retired_min = index
            if index > heap.page_retired_max:
                heap.page_retired_max = index
            mi.counters["pages_retired"] += 1
            touched(page)
            return None
    return pq


async def page_retire(page: Page) -> None:
    """`_mi_page_retire`: a page whose `used` dropped to 0 by a local free."""
    pq = page_retire_keep(page)
    if pq is not None:
        await page.segment.mi.hooks.page_maybe_free(page, pq, False)


async def heap_collect_retired(heap: Heap, force: bool) -> None:
    """`_mi_heap_collect_retired`: count down the retired pages (only the first page of each
    queue in `page_retired_min..max` can be one) and free those that expire."""
    mn = MI_BIN_FULL
    mx = 0
    hooks = heap.mi.hooks
    for b in range(heap.page_retired_min, heap.page_retired_max + 1):
        pq = heap.pages[b]
        page = pq.first
        if page is not None and page.retire_expire != 0:
            if page.used == 0:
                page.retire_expire -= 1
                if force or page.retire_expire == 0:
                    await hooks.page_maybe_free(pq.first, pq, force)
                else:
                    if b < mn:
                        mn = b
                    if b > mx:
                        mx = b
            else:
                page.retire_expire = 0
    heap.page_retired_min = mn
    heap.page_retired_max = mx


# ---------------------------------------------------------------------------------------------
# Initialize the initial free list in a page (sequential: MI_SECURE is 0 in CPython)

def page_free_list_extend(page: Page, bsize: int, extend: int) -> None:
    """`mi_page_free_list_extend`: thread blocks `capacity .. capacity+extend-1` in ascending
    order and prepend them to `free`."""
    mi = page.segment.mi
    start_addr = page_start(page)
    start = start_addr + page.capacity * bsize
    last = start_addr + (page.capacity + extend - 1) * bsize
    if mi.build.encode_freelist:
        block = start
        while block <= last:
            block_set_next(page, block, block + bsize)
            block += bsize
        block_set_next(page, last, page.free)
    elif mi.race is not None and mi.race.locations:
        block = start        # through `link_store`: a race report names it as the access
        while block < last:
            link_store(mi, block, block + bsize)
            block += bsize
        link_store(mi, last, page.free)
    elif mi.race is not None:
        # `link_store` written out (issue 13: a fresh page links up to a hundred blocks here,
        # a fifth of a mimalloc-heavy run): the same race-detector access, then the same store
        access = mi.race.access
        store = mi.mem.raw_store
        link = Tag.FREE_LINK
        block = start
        while block < last:
            access(block, 8, True, True)
            nxt = block + bsize
            store(block, 8, nxt, link)
            block = nxt
        access(last, 8, True, True)
        store(last, 8, page.free, link)
    else:
        store = mi.mem.raw_store
        link = Tag.FREE_LINK
        block = start
        while block < last:
            nxt = block + bsize
            store(block, 8, nxt, link)
            block = nxt
        store(last, 8, page.free, link)
    page.free = start


def page_extend_free(heap: Heap, page: Page, tld: Tld) -> None:
    """`mi_page_extend_free`: add up to one OS page worth of blocks (at least 4)."""
    if page.free:
        return
    if page.capacity >= page.reserved:
        return
    _start, page_size = _seg.segment_page_start(page.segment, page)
    bsize = page.xblock_size if page.xblock_size < MI_HUGE_BLOCK_SIZE else page_size
    extend = page.reserved - page.capacity
    max_extend = MI_MIN_EXTEND if bsize >= MI_MAX_EXTEND_SIZE else MI_MAX_EXTEND_SIZE // bsize
    if max_extend < MI_MIN_EXTEND:
        max_extend = MI_MIN_EXTEND
    if extend > max_extend:
        extend = max_extend
    page_free_list_extend(page, bsize, extend)
    page.capacity += extend
    touched(page)


async def page_init(heap: Heap, page: Page, block_size: int, tld: Tld) -> None:
    """`mi_page_init`: a fresh page of `block_size` for `heap` (CPython also copies the heap's
    tag, use_qsbr and debug_offset), with a first extension."""
    await page_set_heap(page, heap)
    page.xblock_size = block_size if block_size < MI_HUGE_BLOCK_SIZE else MI_HUGE_BLOCK_SIZE
    _start, page_size = _seg.segment_page_start(page.segment, page)
    page.reserved = page_size // block_size
    mi = heap.mi
    if mi.build.encode_freelist or mi.build.padding:
        page.keys0 = heap_random_next(heap)
        page.keys1 = heap_random_next(heap)
    page.free_is_zero = page.is_zero_init
    page.tag = heap.tag
    page.use_qsbr = heap.page_use_qsbr
    page.debug_offset = heap.debug_offset
    page_extend_free(heap, page, tld)
    mi.observer.mi_page_event(page, "init")


def heap_random_next(heap: Heap) -> int:
    """`_mi_heap_random_next`: the model draws from a deterministic generator per heap."""
    return heap.random.getrandbits(64) | 1


# ---------------------------------------------------------------------------------------------
# Find pages with free blocks

async def page_queue_find_free_ex(heap: Heap, pq: PageQueue, first_try: bool) -> Page | None:
    """`mi_page_queue_find_free_ex`: next-fit search of a queue; full pages move to the full
    queue on the way; a fresh page when none has room."""
    page = pq.first
    while page is not None:
        nxt = page.next     # remember next
        await page_free_collect(page, False)    # collect freed blocks by us and other threads
        if page.free:
            break           # the page contains free blocks
        if page.capacity < page.reserved:
            page_extend_free(heap, page, heap.tld)
            break
        await page_to_full(page, pq)
        page = nxt
    if page is None:
        await heap.mi.hooks.heap_collect_qsbr(heap)  # CPython: when a fresh page is needed
        await heap_collect_retired(heap, False)      # perhaps make a page available
        page = await page_fresh(heap, pq)
        if page is None and first_try:
            # an abandoned page with free blocks was reclaimed into our queue: search again
            page = await page_queue_find_free_ex(heap, pq, False)
    else:
        page.retire_expire = 0
        heap.mi.hooks.page_clear_qsbr(page)
    return page


async def find_free_page(heap: Heap, size: int) -> Page | None:
    """`mi_find_free_page`: the first page of the size's queue if it has free blocks after a
    collect, else the queue search."""
    pq = heap.pages[bin_index(size)]
    page = pq.first
    if page is not None:
        await page_free_collect(page, False)
        if page.free:
            page.retire_expire = 0
            heap.mi.hooks.page_clear_qsbr(page)
            return page     # fast path
    return await page_queue_find_free_ex(heap, pq, True)


def deferred_free(heap: Heap, force: bool) -> None:
    """`_mi_deferred_free`: the heartbeat (CPython registers no deferred-free callback)."""
    heap.tld.heartbeat += 1


async def large_huge_page_alloc(heap: Heap, size: int) -> Page | None:
    """`mi_large_huge_page_alloc`: always a fresh page on the huge queue; its one block is the
    whole page."""
    block_size = os_good_alloc_size(size)
    pq = heap.pages[bin_index(block_size)]  # MI_BIN_HUGE for large and huge sizes alike
    return await page_fresh_alloc(heap, pq, block_size)


async def find_page(heap: Heap, size: int) -> Page | None:
    """`mi_find_page`: `size` includes the padding."""
    padding = heap.mi.build.padding_size
    req_size = size - padding
    if req_size > MI_MEDIUM_OBJ_SIZE_MAX - padding:
        if req_size > PTRDIFF_MAX:
            return None
        await heap.mi.hooks.heap_collect_qsbr(heap)  # CPython: before a large or huge page
        return await large_huge_page_alloc(heap, size)
    return await find_free_page(heap, size)


# ---------------------------------------------------------------------------------------------
# Invariant checking (the oracle runs these; `mi_page_is_valid_init` / `_mi_page_is_valid`)

def _raw_list(page: Page, head: int, what: str, start: int, end: int, bsize: int) -> list[int]:
    """Walk a block list without touching the race detector; check every entry (in a page,
    on a block boundary, below capacity, no more than capacity entries)."""
    mi = page.segment.mi
    raw = mi.mem.raw_load
    enc = mi.build.encode_freelist
    k0, k1, null = page.keys0, page.keys1, page.addr
    limit = page.capacity
    top = start + limit * bsize
    out: list[int] = []
    append = out.append     # issue 13: the oracle walks every list of every page it checks
    n = 0
    p = head
    try:
        while p:
            d = p - start
            if d < 0 or p >= top or d % bsize:
                where = ("outside the page" if not start <= p < end else
                         "beyond capacity" if p >= top else "not on a block boundary")
                raise _seg.HeapIntegrityError(f"{page!r}: {what} list entry {p:#x} is {where}")
            append(p)
            n += 1
            if n > limit:
                raise _seg.HeapIntegrityError(f"{page!r}: {what} list has more than capacity "
                                              f"entries (a cycle?)")
            p = ptr_decode(null, raw(p, 8), k0, k1) if enc else raw(p, 8)
    except ViolationError as e:
        raise _seg.HeapIntegrityError(f"{page!r}: {what} list entry {p:#x} unreadable: "
                                      f"{e.message}")
    return out


def page_lists(page: Page) -> tuple[list[int], list[int], list[int]]:
    """The blocks on the free, local_free and thread-free lists (checked while walking)."""
    start, psize = _seg.segment_page_start(page.segment, page)
    bsize = page_block_size(page)
    end = start + psize
    tf = page.segment.mi.mem.raw_load(page.tf_addr, 8) & ~3
    return (_raw_list(page, page.free, "free", start, end, bsize),
            _raw_list(page, page.local_free, "local_free", start, end, bsize),
            _raw_list(page, tf, "thread-free", start, end, bsize))


def page_is_valid_init(page: Page) -> tuple[list[int], list[int], list[int]]:
    """`mi_page_is_valid_init`: counters and lists."""
    from ftlab.runtime.mimalloc.segment import check

    check(page.xblock_size > 0, lambda: f"{page!r} is not in use")
    check(page.used <= page.capacity, lambda: f"{page!r}: used > capacity")
    check(page.capacity <= page.reserved, lambda: f"{page!r}: capacity > reserved")
    free, local, thread = page_lists(page)
    seen = set(free)
    check(len(seen) == len(free), lambda: f"{page!r}: a block is twice on the free list")
    for b in local:     # the message closures are made only for a block that fails
        if b in seen:
            check(False, lambda: f"{page!r}: block {b:#x} is on two lists")
        seen.add(b)
    for b in thread:
        if b in seen:
            check(False, lambda: f"{page!r}: block {b:#x} is on the thread-free list and another")
        seen.add(b)
    check(page.used + len(free) + len(local) == page.capacity,
          lambda: f"{page!r}: used {page.used} + free {len(free)} + local_free {len(local)} != "
          f"capacity {page.capacity}")
    return free, local, thread


def page_is_valid(page: Page) -> tuple[list[int], list[int], list[int]]:
    """`_mi_page_is_valid`: also the heap, queue and `xheap` consistency of a page in use."""
    from ftlab.runtime.mimalloc.segment import check

    lists = page_is_valid_init(page)
    mem = page.segment.mi.mem
    xheap = mem.raw_load(page.xheap_addr, 8)
    heap = page.heap
    check(xheap == (heap.addr if heap is not None else 0),
          lambda: f"{page!r}: xheap {xheap:#x} does not match its heap {heap!r}")
    if heap is not None:
        seg = page.segment
        check(seg.thread_id == 0 or seg.thread_id == heap.thread_id,
              lambda: f"{page!r}: segment thread {seg.thread_id} but heap thread {heap.thread_id}")
        pq = page_queue_of(page)
        check(page_queue_contains(pq, page), lambda: f"{page!r} is not in {pq!r} of {heap!r}")
        check(pq.block_size == page_block_size(page)
              or page_block_size(page) > MI_MEDIUM_OBJ_SIZE_MAX or page.flags & IN_FULL,
              lambda: f"{page!r} is in {pq!r} of another block size")
        check(page.tag == heap.tag, lambda: f"{page!r} has tag {page.tag} in a heap of tag {heap.tag}")
    else:
        check(page.next is None and page.prev is None, lambda: f"{page!r} has no heap but queue links")
    return lists

