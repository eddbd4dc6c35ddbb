"""Heap visiting (`mi_heap_visit_blocks` in `src/heap.c`, as CPython refactored it, and CPython's
`_mi_abandoned_pool_visit_blocks` in `segment.c`).

`heap_visit_blocks(heap, visit_blocks, visitor)` first processes the heap's delayed frees
(`_mi_heap_delayed_free_partial`, CPython), then, for every page of every queue, builds the page
area (`heap_area_init`: CPython always force-collects the page first, so `area.used` is exact;
this *mutates* the page: thread-free and local-free blocks move to `free`) and calls
`visitor(heap, area, None, block_size)`; with `visit_blocks` it then calls
`visitor(heap, area, block, block_size)` for every used block below `capacity`, in ascending
address order (a bitmap of the `free` list marks the others). The visitor returns False to stop.

`abandoned_pool_visit_blocks(mi, tag, visit_blocks, visitor)` does the same for the used pages
with heap tag `tag` of every segment on the interpreter's abandoned and visited lists (heap
None). It walks the lists without taking them, so it is only safe while no other thread is
abandoning or reclaiming: CPython calls it with the world stopped (the GC, block counting).

Both are awaitable (collection reaches atomics). No allocation or free may happen inside a
visitor (CPython's rule: collect into a list first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ftlab.runtime.mimalloc import heap as _heap
from ftlab.runtime.mimalloc import page as _page
from ftlab.runtime.mimalloc import segment as _seg
from ftlab.runtime.mimalloc.types import (
    MI_SEGMENT_OFFSET_ABANDONED_NEXT,
    MI_TAGGED_MASK,
    Heap,
    Page,
)
from ftlab.sim.atomics import SEQ_CST
from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.runtime.mimalloc.init import MiRuntime


@dataclass
class HeapArea:
    """`mi_heap_area_t` (plus the page, as `mi_heap_area_ex_t` has it)."""

    blocks: int             # start of the page's blocks
    reserved: int           # bytes reserved for blocks
    committed: int          # bytes of blocks initialised (capacity * block size)
    used: int               # blocks in use
    block_size: int         # usable size of a block (without padding)
    full_block_size: int    # block size with padding
    page: Page | None = None


Visitor = Callable[[Heap | None, HeapArea, int | None, int], bool]


async def heap_area_init(page: Page, collect: bool = True) -> HeapArea:
    """CPython's `_mi_heap_area_init`: force-collect, then describe the page. `collect=False`
    is the code before gh-115184, which read `used` with the cross-thread frees still on
    `xthread_free` (block counting's `blockcount-no-collect`)."""
    if collect:
        await _page.page_free_collect(page, True)
    bsize = _page.page_block_size(page)
    ubsize = bsize - page.segment.mi.build.padding_size
    start, _ = _seg.segment_page_start(page.segment, page)
    return HeapArea(blocks=start, reserved=page.reserved * bsize, committed=page.capacity * bsize,
                    used=page.used, block_size=ubsize, full_block_size=bsize, page=page)


def heap_area_visit_blocks(area: HeapArea, page: Page, visitor: Visitor) -> bool:
    """CPython's `_mi_heap_area_visit_blocks`: every used block, ascending (the page was
    force-collected by `heap_area_init`, so every free block is on `free`)."""
    if page.used == 0:
        return True
    bsize = area.full_block_size
    ubsize = area.block_size
    pstart = area.blocks
    heap = page.heap
    if page.capacity == 1:
        return visitor(heap, area, pstart, ubsize)
    if page.used == page.capacity:      # a full page: every block, in order
        for i in range(page.capacity):
            if not visitor(heap, area, pstart + i * bsize, ubsize):
                return False
        return True
    free_map = 0
    b = page.free
    count = 0
    while b:
        free_map |= 1 << ((b - pstart) // bsize)
        b = _page.block_next(page, b)
        count += 1
        if count > page.capacity:
            raise ViolationError("heap-integrity", f"mimalloc: corrupted free list of {page!r} "
                                 f"(more than capacity {page.capacity} blocks: a cycle)")
    for i in range(page.capacity):
        if not (free_map >> i) & 1:
            if not visitor(heap, area, pstart + i * bsize, ubsize):
                return False
    return True


async def heap_visit_blocks(heap: Heap, visit_blocks: bool, visitor: Visitor,
                            collect: bool = True) -> bool:
    """`mi_heap_visit_blocks` (module docstring; `collect` as in `heap_area_init`)."""
    await _page.heap_delayed_free_partial(heap)

    async def visit_area(heap: Heap, pq, page) -> bool:  # mi_heap_visit_areas_page
        area = await heap_area_init(page, collect)
        if not visitor(heap, area, None, area.block_size):
            return False
        return not visit_blocks or heap_area_visit_blocks(area, page, visitor)

    return await _heap.heap_visit_pages(heap, visit_area)


async def abandoned_pool_visit_blocks(mi: "MiRuntime", tag: int, visit_blocks: bool,
                                      visitor: Visitor, collect: bool = True) -> bool:
    """CPython's `_mi_abandoned_pool_visit_blocks` (module docstring; `collect` as in
    `heap_area_init`)."""
    mem = mi.mem
    pool = mi.pool
    for head_addr, tagged in ((pool.abandoned, True), (pool.abandoned_visited, False)):
        # C reads `pool->abandoned`, `pool->abandoned_visited` and `segment->abandoned_next`
        # as plain expressions of `_Atomic` fields: seq_cst loads. They pair with the release
        # stores and CASes of `abandoned_push`/`abandoned_visited_push` (the callers stop the
        # world, so no push runs concurrently in CPython; the order is C's all the same)
        seg_base = await mem.load(head_addr, 8, SEQ_CST)
        if tagged:
            seg_base &= ~MI_TAGGED_MASK
        while seg_base:
            segment = mi.segments[seg_base]
            i = _seg.slices_start_iterate(segment)
            while i < segment.slice_entries:
                s = _seg.slice_at(segment, i)
                if _seg.slice_is_used(s) and s.tag == tag:
                    area = await heap_area_init(s, collect)
                    if not visitor(None, area, None, area.block_size):
                        return False
                    if visit_blocks and not heap_area_visit_blocks(area, s, visitor):
                        return False
                i += s.slice_count
            seg_base = await mem.load(seg_base + MI_SEGMENT_OFFSET_ABANDONED_NEXT, 8, SEQ_CST)
    return True


async def heap_visit(heap: Heap, visit_blocks: bool, visitor: Visitor) -> bool:
    """`heap.visit_blocks(visit_blocks, visitor)`."""
    return await heap_visit_blocks(heap, visit_blocks, visitor)


