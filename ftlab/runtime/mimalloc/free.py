"""Free (`mi_free` and friends in `src/alloc.c`): local frees, cross-thread frees, delayed frees.

`mi_free(p)` (the one function that keeps its `mi_` prefix: `free` is this module's name)
finds the segment by rounding `p` down to 32 MiB and the page through
`slices[(p - segment) >> 16]`. Ownership is decided by the *segment*: the free is local when
the segment's `thread_id` is the calling thread (so a page of any of the thread's four tagged
heaps is freed locally).

Local fast path (page not in the full queue, no aligned blocks): push on `local_free`,
`used -= 1`, and retire the page when `used` reaches 0. Otherwise `free_generic` →
`free_block`: a local free of a full page also moves it back to its size-class queue
(`page_unfull`); a remote free is `free_block_mt`.

Cross-thread free (`_mi_free_block_mt`, reference §9.2-9.4), with every CAS a scheduling point:
1. CAS loop on the page's `xthread_free`. If its state is `MI_USE_DELAYED_FREE`, the new value
   keeps the list and sets `MI_DELAYED_FREEING` (the block is not linked into the page);
   otherwise the block is linked in front of the list, keeping the state bits.
2. In the delayed case: load `xheap` (acquire; safe because `MI_DELAYED_FREEING` holds off
   heap teardown, which waits for it), CAS-push the block on the heap's `thread_delayed_free`,
   then CAS the state from `MI_DELAYED_FREEING` to `MI_NO_DELAYED_FREE`.
The owner drains the heap list on its next generic allocation (`free_delayed_block`): it resets
the page's state to `MI_USE_DELAYED_FREE` (giving up, and pushing the block back, while another
thread is still in `MI_DELAYED_FREEING`), collects the page and frees the block locally.
So for *any* page the first remote free after page creation, or after the owner last drained
its delayed list, goes to the heap list, and later ones to the page's list (verified on the real
build, reference §9.3).

Weak CASes (`mi_atomic_cas_weak`) are modelled as strong ones: a spurious failure only repeats
the loop. MI_DEBUG builds add mimalloc's own checks: an unaligned or foreign pointer is refused,
a double free is detected by walking the page's lists (and ignored), padding canaries are
checked (a buffer overflow aborts, EFAULT), and freed blocks are filled with 0xDD from
`debug_offset`.

Observer events: `block_freeing(t, ptr)` before the free runs (the double-free and
invalid-free oracles raise there), `block_freed(t, ptr)` after.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ftlab.runtime.mimalloc import page as _page
from ftlab.runtime.mimalloc import segment as _seg
from ftlab.runtime.mimalloc.alloc import debug_fill, decode_padding
from ftlab.runtime.mimalloc.page import (
    block_next,
    block_set_next,
    block_set_nextx_heap,
    is_in_same_page,
    page_block_size,
    page_retire_keep,
    page_unfull,
    page_usable_block_size,
    ptr_decode,
)
from ftlab.runtime.mimalloc.page_queue import HAS_ALIGNED, IN_FULL
from ftlab.runtime.mimalloc.types import (
    MI_DEBUG_FREED,
    MI_DEBUG_PADDING,
    MI_INTPTR_SIZE,
    MI_MAX_ALIGN_SIZE,
    MI_SEGMENT_MASK,
    MI_SEGMENT_OFFSET_THREAD_ID,
    MI_SEGMENT_SLICE_SHIFT,
    Heap,
    MiDelayed,
    MiSegmentKind,
    Page,
    Segment,
)
from ftlab.sim.atomics import ACQUIRE, RELAXED, RELEASE
from ftlab.sim.memory import Tag
from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.runtime.mimalloc.init import MiRuntime

MI_USE_DELAYED_FREE = MiDelayed.MI_USE_DELAYED_FREE
MI_DELAYED_FREEING = MiDelayed.MI_DELAYED_FREEING
MI_NO_DELAYED_FREE = MiDelayed.MI_NO_DELAYED_FREE


# ---------------------------------------------------------------------------------------------
# mi_free: the fast path first

async def heap_free(heap: Heap, p: int) -> None:
    """`heap.free(p)`: `mi_free(p)` (a free does not depend on the heap it is called on)."""
    await mi_free(heap.mi, p)


async def mi_free(mi: "MiRuntime", p: int) -> None:
    """`mi_free(p)`. Awaitable: a local free can retire a page and free or abandon its segment;
    a remote free is a CAS loop. The local fast path itself has no scheduling point."""
    if p == 0:
        return
    tld = mi.tlds[mi.machine.current.index]
    observer = mi.rt.observer
    observer.block_freeing(tld.tstate, p)
    segment = mi.segments.get((p - 1) & ~MI_SEGMENT_MASK)
    if segment is None or not mi.plain_build:
        segment = checked_ptr_segment(mi, p)
        if segment is None:
            return      # refused (debug builds report and ignore)
    page = segment.slices[(p - segment.base) >> MI_SEGMENT_SLICE_SHIFT]
    if page is None:
        raise _invalid(mi, p, "inside a segment but not in any page")
    if page.slice_offset:
        page = segment.slices[page.index - page.slice_offset]
    if segment.thread_id == tld.thread_id:        # thread-local free?
        if page.flags == 0:                        # not full, no aligned blocks
            if mi.plain_build:
                race = mi.race
                if race is not None:
                    race.access(p, 8, True, True)
                mi.mem.raw_store(p, 8, page.local_free, Tag.FREE_LINK)
            else:
                if check_is_double_free(mi, page, p):
                    return
                check_padding(mi, page, p)
                if page.segment.kind != MiSegmentKind.MI_SEGMENT_HUGE:
                    debug_fill(mi, page, p, MI_DEBUG_FREED, page_block_size(page))
                block_set_next(page, p, page.local_free)
            page.local_free = p
            page.used -= 1
            if page.used == 0:
                pq = page_retire_keep(page)
                if pq is not None:
                    await mi.hooks.page_maybe_free(page, pq, False)
        else:
            await free_generic(segment, page, True, p)
    else:
        await free_generic(segment, page, False, p)
    observer.block_freed(tld.tstate, p)


def _invalid(mi: "MiRuntime", p: int, why: str) -> ViolationError:
    return ViolationError("invalid-free", f"mi_free({p:#x}): {why}; mimalloc would corrupt "
                                          f"its metadata")


def checked_ptr_segment(mi: "MiRuntime", p: int) -> Segment | None:
    """`mi_checked_ptr_segment`: the segment of `p`. Debug builds refuse unaligned pointers and
    pointers whose segment cookie is wrong; in a release build a pointer outside every segment
    makes mimalloc read a segment header from whatever is there: a fault if that is unmapped
    (the machine reports it), memory corruption otherwise (reported as invalid-free)."""
    debug = mi.build.debug > 0
    if debug and p & (MI_INTPTR_SIZE - 1):
        mi.error(f"mi_free: invalid (unaligned) pointer: {p:#x}")
        return None
    base = (p - 1) & ~MI_SEGMENT_MASK
    segment = mi.segments.get(base)
    if segment is None:
        mi.mem.raw_load(base + MI_SEGMENT_OFFSET_THREAD_ID, 8)   # faults if unmapped
        if debug:
            mi.error(f"mi_free: pointer does not point to a valid heap space: {p:#x}")
            return None
        raise _invalid(mi, p, "not in any mimalloc segment")
    return segment


async def free_generic(segment: Segment, page: Page, is_local: bool, p: int) -> None:
    """`_mi_free_generic` (CPython never allocates aligned blocks, so no unaligning)."""
    block = p
    if page.flags & HAS_ALIGNED:
        start = _page.page_start(page)
        block = p - (p - start) % page_block_size(page)
    await free_block(page, is_local, block)


async def free_block(page: Page, local: bool, block: int) -> None:
    """`_mi_free_block`."""
    if local:
        mi = page.segment.mi
        if not mi.plain_build:
            if check_is_double_free(mi, page, block):
                return
            check_padding(mi, page, block)
            if page.segment.kind != MiSegmentKind.MI_SEGMENT_HUGE:
                debug_fill(mi, page, block, MI_DEBUG_FREED, page_block_size(page))
        block_set_next(page, block, page.local_free)
        page.local_free = block
        page.used -= 1
        if page.used == 0:
            await _page.page_retire(page)
        elif page.flags & IN_FULL:
            page_unfull(page)
    else:
        await free_block_mt(page, block)


# ---------------------------------------------------------------------------------------------
# Multi-threaded free

async def free_block_mt(page: Page, block: int) -> None:
    """`_mi_free_block_mt`: push on the page's `xthread_free`, or (state MI_USE_DELAYED_FREE) on
    the owning heap's `thread_delayed_free` (module docstring)."""
    segment = page.segment
    mi = segment.mi
    mem = mi.mem
    if not mi.plain_build:
        check_padding(mi, page, block)
        padding_shrink(mi, page, block, MI_INTPTR_SIZE)
    if segment.kind == MiSegmentKind.MI_SEGMENT_HUGE:
        _seg.segment_huge_page_reset(segment, page, block, page_usable_block_size(page))
    elif mi.build.debug:
        from ftlab.runtime.mimalloc.alloc import ptr_usable_size
        debug_fill(mi, page, block, MI_DEBUG_FREED, ptr_usable_size(mi, block))

    mi.counters["frees_remote"] += 1
    addr = page.tf_addr
    tfree = await mem.load(addr, 8, RELAXED)
    while True:
        use_delayed = (tfree & 3) == MI_USE_DELAYED_FREE
        if use_delayed:
            # this only happens on the first concurrent free in a page (after a drain)
            tfreex = (tfree & ~3) | MI_DELAYED_FREEING
        else:
            block_set_next(page, block, tfree & ~3)
            tfreex = block | (tfree & 3)
        if mi.rt.mutated("mi-free-mt-plain-store") and not use_delayed:
            # mutation: the push is a plain store of the head read above, not a CAS against it:
            # a concurrent push, or the owner's collect (its exchange), is overwritten
            await mem.store(addr, tfreex, 8, RELEASE)
            break
        ok, tfree = await mem.cas(addr, tfree, tfreex, order=RELEASE)
        if ok:
            break

    if use_delayed:
        mi.counters["frees_delayed"] += 1
        # racy read of the heap, but ok because MI_DELAYED_FREEING is set (heap teardown waits)
        heap_addr = await mem.load(page.xheap_addr, 8, ACQUIRE)
        if heap_addr:
            heap = mi.heaps_by_addr[heap_addr]
            tdf = heap.tdf_addr
            dfree = await mem.load(tdf, 8, RELAXED)
            while True:
                block_set_nextx_heap(heap, block, dfree)
                ok, dfree = await mem.cas(tdf, dfree, block, order=RELEASE)
                if ok:
                    break
        # and reset the MI_DELAYED_FREEING flag
        tfree = await mem.load(addr, 8, RELAXED)
        while True:
            tfreex = (tfree & ~3) | MI_NO_DELAYED_FREE
            ok, tfree = await mem.cas(addr, tfree, tfreex, order=RELEASE)
            if ok:
                break
        _page_notify(mi, addr)


def _page_notify(mi: "MiRuntime", addr: int) -> None:
    from ftlab.runtime.mimalloc.atomic import notify
    notify(mi, addr)


async def free_delayed_block(mi: "MiRuntime", block: int) -> bool:
    """`_mi_free_delayed_block`: free a block from the heap's delayed list; False if the page is
    still in MI_DELAYED_FREEING (the caller pushes the block back)."""
    segment = mi.segments[(block - 1) & ~MI_SEGMENT_MASK]
    page = _seg.segment_page_of(segment, block)
    # Clear the no-delayed flag so delayed freeing is used again for this page. This must be done
    # before collecting the free lists, or some blocks could end up in the thread-free list with
    # none in the heap's delayed list, and the page might never be freed.
    if not await _page.page_try_use_delayed_free(page, MI_USE_DELAYED_FREE, False):
        mi.counters["delayed_blocks_deferred"] += 1
        return False
    mi.counters["delayed_blocks_processed"] += 1
    await _page.page_free_collect(page, False)
    await free_block(page, True, block)
    return True


# ---------------------------------------------------------------------------------------------
# Debug checks (MI_DEBUG builds)

def check_is_double_free(mi: "MiRuntime", page: Page, block: int) -> bool:
    """`mi_check_is_double_free`: if the block's first word decodes to NULL or a pointer into
    the same page, walk the page's lists; a hit is reported and the free ignored."""
    n = ptr_decode(page.addr, _page.link_load(mi, block), page.keys0, page.keys1)
    if n & (MI_INTPTR_SIZE - 1) == 0 and (n == 0 or is_in_same_page(page, n)):
        tf = mi.mem.raw_load(page.tf_addr, 8) & ~3   # relaxed; advisory
        for head in (page.free, page.local_free, tf):
            b = head
            steps = 0
            while b and steps <= page.capacity:
                if b == block:
                    mi.error(f"double free detected of block {block:#x} with size "
                             f"{page_block_size(page)}", kind="double-free")
                    return True
                b = block_next(page, b)
                steps += 1
    return False


def check_padding(mi: "MiRuntime", page: Page, block: int) -> None:
    """`mi_check_padding`: the canary and the 0xFD bytes after the request must be intact."""
    if not mi.build.padding:
        return
    ok, delta = decode_padding(mi, page, block)
    bsize = page_usable_block_size(page)
    wrong = bsize
    if ok and page.segment.kind != MiSegmentKind.MI_SEGMENT_HUGE:
        maxpad = MI_MAX_ALIGN_SIZE if delta > MI_MAX_ALIGN_SIZE else delta
        fill = mi.mem.read_bytes(block + bsize - delta, maxpad)
        for i, byte in enumerate(fill):
            if byte != MI_DEBUG_PADDING:
                wrong = bsize - delta + i
                ok = False
                break
    if not ok:
        size = bsize - delta if delta <= bsize else bsize
        mi.error(f"buffer overflow in heap block {block:#x} of size {size}: write after "
                 f"{wrong} bytes", kind="heap-integrity", fatal=True)


def padding_shrink(mi: "MiRuntime", page: Page, block: int, min_size: int) -> None:
    """`_mi_padding_shrink`: make room for the delayed-free link in tiny requests."""
    ok, delta = decode_padding(mi, page, block)
    bsize = page_usable_block_size(page)
    if not ok or bsize - delta >= min_size or bsize < min_size:
        return
    mi.mem.store_u32(block + bsize + 4, bsize - min_size, Tag.DEBUG_PAD)


Heap.free = heap_free  # type: ignore[attr-defined]
