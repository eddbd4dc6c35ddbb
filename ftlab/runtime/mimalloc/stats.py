"""Statistics (`src/stats.c`, and CPython's block counting in `Objects/obmalloc.c`).

mimalloc's own `mi_stats_t` is only partly maintained in release builds (reference §14: the
"macro" counters are compiled out, so `pages` and `page_committed` drift negative). The model
does not copy that; it computes its statistics from the allocator's state:

* `snapshot(mi)`: a `MiStats` read off the metadata, with no memory access and no scheduling
  point: segments (owned, abandoned), pages by state (in a queue, full, retired, abandoned),
  blocks in use per heap and in total including abandoned segments, free spans, and committed
  and reserved bytes (the segments' commit masks, the arenas, and the address space's own
  count). A page's `used` counts blocks still on its thread-free list or in a heap's delayed
  list (they are freed but not yet collected), so "blocks in use" is an upper bound until the
  owner collects. `blocks_live` subtracts them (it walks the thread-free and delayed-free
  lists without collecting); `allocated_blocks` counts the way CPython does.
* `allocated_blocks(rt)`: CPython's `get_mimalloc_allocated_blocks`: the sum of `area.used`
  over every heap of every thread state and, per tag, the interpreter's abandoned pool, by heap
  visiting (so pages are force-collected first). Awaitable; CPython runs it with the world
  stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ftlab.runtime.mimalloc.page_queue import IN_FULL
from ftlab.runtime.mimalloc.segment import commit_mask_committed_size, segment_size, slice_at
from ftlab.runtime.mimalloc.types import HEAP_TAG_COUNT, MI_ARENA_BLOCK_SIZE, MiSegmentKind
from ftlab.runtime.mimalloc.visit import abandoned_pool_visit_blocks, heap_visit_blocks

if TYPE_CHECKING:
    from ftlab.runtime.mimalloc.init import MiRuntime


@dataclass
class MiStats:
    segments: int = 0
    segments_abandoned: int = 0
    segments_huge: int = 0
    pages: int = 0                  # pages in use (not counting segment headers)
    pages_full: int = 0             # in a heap's full queue
    pages_retired: int = 0          # all free, kept with retire_expire > 0
    pages_abandoned: int = 0
    free_spans: int = 0
    blocks_in_use: int = 0          # sum of `used` (an upper bound, see the module docstring)
    blocks_live: int = 0            # `used` minus the blocks freed but not yet collected
    blocks_in_use_abandoned: int = 0
    blocks_by_heap: dict[str, int] = field(default_factory=dict)
    committed_bytes: int = 0        # by the segments' commit masks
    segment_bytes: int = 0
    arena_reserved_bytes: int = 0
    mem_committed_bytes: int = 0    # the whole simulated address space
    mem_reserved_bytes: int = 0


def snapshot(mi: "MiRuntime") -> MiStats:
    """The allocator's statistics from its metadata (module docstring)."""
    st = MiStats()
    for seg in mi.segments.values():
        st.segments += 1
        abandoned = seg.thread_id == 0
        st.segments_abandoned += abandoned
        st.segments_huge += seg.kind == MiSegmentKind.MI_SEGMENT_HUGE
        size = segment_size(seg)
        st.segment_bytes += size
        st.committed_bytes += commit_mask_committed_size(seg.commit_mask, size)
        i = seg.segment_info_slices
        while i < seg.slice_entries:
            s = slice_at(seg, i)
            if s.xblock_size > 1:
                st.pages += 1
                st.blocks_in_use += s.used
                st.blocks_live += s.used - _list_length(mi, mi.mem.raw_load(s.tf_addr, 8) & ~3,
                                                        s.keys0, s.keys1, s.addr)
                if s.heap is None:
                    st.pages_abandoned += 1
                    st.blocks_in_use_abandoned += s.used
                else:
                    key = f"{s.heap.tld.tstate.vt.label}/tag{s.heap.tag}"
                    st.blocks_by_heap[key] = st.blocks_by_heap.get(key, 0) + s.used
                    if s.flags & IN_FULL:
                        st.pages_full += 1
                    if s.used == 0 and s.retire_expire:
                        st.pages_retired += 1
            elif s.xblock_size == 0:
                st.free_spans += 1
            i += s.slice_count
    for heap in mi.heaps_by_addr.values():
        st.blocks_live -= _list_length(mi, mi.mem.raw_load(heap.tdf_addr, 8), heap.keys0,
                                       heap.keys1, heap.addr)
    st.arena_reserved_bytes = sum(a.block_count * MI_ARENA_BLOCK_SIZE for a in mi.arenas)
    st.mem_committed_bytes = mi.mem.committed_bytes
    st.mem_reserved_bytes = mi.mem.reserved_bytes
    return st


def _list_length(mi: "MiRuntime", head: int, k0: int, k1: int, null: int) -> int:
    """Blocks on a free list (read without accesses; links decoded in debug builds)."""
    from ftlab.runtime.mimalloc.page import ptr_decode

    n = 0
    p = head
    raw = mi.mem.raw_load
    enc = mi.build.encode_freelist
    while p:
        n += 1
        v = raw(p, 8)
        p = ptr_decode(null, v, k0, k1) if enc else v
    return n


async def allocated_blocks(rt: Any) -> int:
    """CPython's `get_mimalloc_allocated_blocks` (module docstring)."""
    mi = rt.mimalloc
    total = 0

    def count(heap: Any, area: Any, block: Any, block_size: int) -> bool:
        nonlocal total
        if block is None:
            total += area.used
        return True

    for t in rt.tstates:
        mts = getattr(t, "mimalloc", None)
        if mts is None or not mts.initialized:
            continue
        for heap in mts.heaps:
            await heap_visit_blocks(heap, False, count)
    for tag in range(HEAP_TAG_COUNT):
        await abandoned_pool_visit_blocks(mi, tag, False, count)
    return total
