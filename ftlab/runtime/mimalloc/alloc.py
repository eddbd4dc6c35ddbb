"""Allocation (`src/alloc.c`): `mi_heap_malloc`, the fast path first, the generic path beside it.

Fast path (`mi_heap_malloc_small_zero` + `_mi_page_malloc`): a request of at most 1 KiB looks
up `heap.pages_free_direct[ceil((n + padding) / 8)]` and pops the head of that page's `free`
list: one index, one link load, `used += 1`. It is a plain function: no scheduling point. A
bigger request, or an empty `free` list, goes to `malloc_generic` (`_mi_malloc_generic`), which
is where everything else happens, in this order: the heartbeat, draining this heap's
`thread_delayed_free` list, then `find_page` (collect the first page of the size class, search
the queue, move full pages to the full queue, collect retired pages, take a fresh page from the
segments, reclaim abandoned segments). It reaches atomics, so it is `async`.

In `MI_DEBUG` builds (CPython's Py_DEBUG) every block carries an 8-byte `mi_padding_t` after its
usable part (a canary derived from the block address and the page keys, and `delta`, the unused
bytes), the first `min(delta, 16)` bytes after the request are filled with 0xFD, and the block
is filled with 0xCD from the page's `debug_offset` on (CPython keeps the first bytes of an
object, its refcount fields, intact). `ptr_usable_size` then returns exactly the request.

Observer events: `block_allocated(t, ptr, size, heap)` when the call returns (the oracles'
ghost state of live blocks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ftlab.runtime.mimalloc import page as _page
from ftlab.runtime.mimalloc import segment as _seg
from ftlab.runtime.mimalloc.page import page_usable_block_size, ptr_encode
from ftlab.runtime.mimalloc.types import (
    MI_DEBUG_PADDING,
    MI_DEBUG_UNINIT,
    MI_INTPTR_SIZE,
    MI_MAX_ALIGN_SIZE,
    MI_SEGMENT_MASK,
    MI_SMALL_SIZE_MAX,
    Heap,
    MiSegmentKind,
    Page,
)
from ftlab.sim.memory import Tag

if TYPE_CHECKING:
    from ftlab.runtime.mimalloc.init import MiRuntime


# ---------------------------------------------------------------------------------------------
# Fast path

async def heap_malloc(heap: Heap, size: int) -> int:
    """`mi_heap_malloc(heap, size)`: a block of at least `size` bytes (0 if out of memory).

    Awaitable because the generic path can reach scheduling points; the fast path cannot.
    """
    mi = heap.mi
    if size <= MI_SMALL_SIZE_MAX:
        if mi.plain_build:
            page = heap.pages_free_direct[(size + 7) >> 3]
            block = page.free
            if block:
                # _mi_page_malloc: pop (the link is a relaxed atomic, see page.link_load)
                race = mi.race
                if race is not None:
                    race.access(block, 8, False, True)
                page.free = mi.mem.raw_load(block, 8)
                page.used += 1
                mi.rt.observer.block_allocated(heap.tld.tstate, block, size, heap)
                return block
            block = await malloc_generic(heap, size)
        else:
            if size == 0:
                size = MI_INTPTR_SIZE   # room for the padding's delta
            psize = size + mi.build.padding_size
            page = heap.pages_free_direct[(psize + 7) >> 3]
            if page.free:
                block = page_malloc(heap, page, psize)
            else:
                block = await malloc_generic(heap, psize)
    else:
        block = await malloc_generic(heap, size + mi.build.padding_size)
    if block:
        mi.rt.observer.block_allocated(heap.tld.tstate, block, size, heap)
    return block


def page_malloc(heap: Heap, page: Page, size: int) -> int:
    """`_mi_page_malloc`: pop a block of a page whose `free` list is not empty; `size`
    includes the padding. Debug fill and padding in MI_DEBUG builds."""
    block = page.free
    mi = heap.mi
    page.used += 1
    page.free = _page.block_next(page, block)
    if mi.build.debug:
        ubsize = page_usable_block_size(page)
        huge = page.segment.kind == MiSegmentKind.MI_SEGMENT_HUGE
        if not huge:
            debug_fill(mi, page, block, MI_DEBUG_UNINIT, ubsize)
        if mi.build.padding:
            padding = block + ubsize
            delta = padding - block - (size - mi.build.padding_size)
            canary = ptr_encode(page.addr, block, page.keys0, page.keys1) & 0xFFFF_FFFF
            mem = mi.mem
            mem.store_u32(padding, canary, Tag.DEBUG_PAD)
            mem.store_u32(padding + 4, delta, Tag.DEBUG_PAD)
            if not huge:
                maxpad = MI_MAX_ALIGN_SIZE if delta > MI_MAX_ALIGN_SIZE else delta
                if maxpad:
                    mem.fill(padding - delta, maxpad, MI_DEBUG_PADDING, Tag.DEBUG_PAD)
    return block


def debug_fill(mi: "MiRuntime", page: Page, block: int, byte: int, size: int) -> None:
    """CPython's `mi_debug_fill`: fill `size` bytes of a block with `byte`, from the page's
    `debug_offset` on."""
    offset = page.debug_offset
    if offset < size:
        mi.mem.fill(block + offset, size - offset, byte, Tag.DEBUG_FILL)


# ---------------------------------------------------------------------------------------------
# Generic path

async def malloc_generic(heap: Heap, size: int) -> int:
    """`_mi_malloc_generic`: `size` includes the padding. Every heap of the model is
    initialised (tstate heaps are bound before the thread's first step)."""
    _page.deferred_free(heap, False)
    # free delayed frees from other threads (but skip contended ones)
    await _page.heap_delayed_free_partial(heap)
    page = await _page.find_page(heap, size)
    if page is None:
        # first time out of memory: collect and retry once (or an oversized request)
        from ftlab.runtime.mimalloc.heap import heap_collect
        await heap_collect(heap, True)
        page = await _page.find_page(heap, size)
    if page is None:
        return 0
    return page_malloc(heap, page, size)


# ---------------------------------------------------------------------------------------------
# Usable size

def ptr_usable_size(mi: "MiRuntime", p: int) -> int:
    """`mi_usable_size(p)`: the block's usable size; with padding, exactly the request."""
    if p == 0:
        return 0
    segment = mi.segments.get((p - 1) & ~MI_SEGMENT_MASK)
    if segment is None:
        raise ValueError(f"{p:#x} is not in a mimalloc segment")
    page = _seg.segment_page_of(segment, p)
    ubsize = page_usable_block_size(page)
    if not mi.build.padding:
        return ubsize
    ok, delta = decode_padding(mi, page, p)
    return ubsize - delta if ok else 0


def decode_padding(mi: "MiRuntime", page: Page, block: int) -> tuple[bool, int]:
    """`mi_page_decode_padding`: (canary ok and delta sane, delta)."""
    bsize = page_usable_block_size(page)
    padding = block + bsize
    mem = mi.mem
    canary = mem.load_u32(padding)
    delta = mem.load_u32(padding + 4)
    ok = (ptr_encode(page.addr, block, page.keys0, page.keys1) & 0xFFFF_FFFF) == canary and delta <= bsize
    return ok, delta



# The public methods of a heap (issue 3: a heap whose malloc and free drive the allocator).
Heap.malloc = heap_malloc  # type: ignore[attr-defined]
