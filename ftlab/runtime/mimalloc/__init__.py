"""An executable model of mimalloc v2.1.2 as vendored by CPython 3.13/3.14 (`Objects/mimalloc/`).

One module per mimalloc source file, each named after it:

* `types` (`include/mimalloc/types.h`): layout constants, enums, CPython's heap tags, the
  `MiBuild` flags of the release (`MI_DEBUG` 0) and `Py_DEBUG` (`MI_DEBUG` 2) builds, and the
  structs (`Page`, `Segment`, `Heap`, `Tld`, ...).
* `bins` (`src/page-queue.c`, `src/segment.c`, `src/alloc.c`): size classes, page kinds and
  geometry, and what a request really gets. Pure functions.
* `atomic` (`include/mimalloc/atomic.h`): yielding, and unbounded spins as parked waits.
* `arena` (`src/arena.c`, `src/os.c`): 32 MiB blocks of segment memory, commit and purge.
* `segment` (`src/segment.c`): slices and spans, segment allocation, page allocation and free,
  abandonment and reclaim through the interpreter's abandoned pool.
* `page_queue` (`src/page-queue.c`), `page` (`src/page.c`): page queues, page init and
  extension, free-list collection, retirement, the page search of the generic path.
* `alloc` (`src/alloc.c`): `mi_heap_malloc`, the fast path first and the generic path beside it.
* `free` (`mi_free` and friends in `src/alloc.c`): local, cross-thread and delayed frees.
* `heap` (`src/heap.c`): collection, `mi_heap_new`, delete, absorb.
* `init` (`src/init.c`, CPython's `pystate.c` binding): `MiRuntime`, thread binding and exit.
* `visit` (`mi_heap_visit_blocks`, CPython's abandoned-pool visiting), `stats` (statistics).

Public API (issue 3): `bin_index`, `good_size`, `usable_size`, `block_info(rt, ptr)`; a thread
state's `malloc`/`free`/`heap_new`; a `Heap`'s awaitable `malloc(n)`, `free(p)`,
`collect(force)`, `delete()`, `visit_blocks(...)`.

The reference is `reference/mimalloc.md`. Where it is not precise enough, the v2.1.2 source is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ftlab.runtime.mimalloc.bins import bin_index, bin_size, good_size, usable_size
from ftlab.runtime.mimalloc.types import HeapTag, MiBuild, MI_SEGMENT_MASK

__all__ = ["BlockInfo", "HeapTag", "MiBuild", "bin_index", "bin_size", "block_info",
           "good_size", "usable_size"]


@dataclass(frozen=True)
class BlockInfo:
    """Where a block is, and the counters of its page (`used`, `capacity`, `reserved`)."""

    segment_base: int
    slice_index: int
    slice_count: int
    block_size: int
    page_start: int
    block_index: int
    used: int
    capacity: int
    reserved: int
    tag: int = 0
    in_full: bool = False
    segment_kind: int = 0
    thread_id: int = 0

    @property
    def block_start(self) -> int:
        return self.page_start + self.block_index * self.block_size


def block_info(rt: Any, ptr: int) -> BlockInfo:
    """The page and block of `ptr` in runtime `rt` (no memory access, no scheduling point).

    Raises ValueError if `ptr` is not inside a page in use of a live segment.
    """
    from ftlab.runtime.mimalloc.page import page_block_size
    from ftlab.runtime.mimalloc.segment import segment_page_of, segment_page_start

    mi = rt.mimalloc
    segment = mi.segments.get((ptr - 1) & ~MI_SEGMENT_MASK)
    if segment is None:
        raise ValueError(f"{ptr:#x} is not in a mimalloc segment")
    page = segment_page_of(segment, ptr)
    if page.xblock_size <= 1 or page.index < segment.segment_info_slices:
        raise ValueError(f"{ptr:#x} is not in a page in use")
    start, _size = segment_page_start(segment, page)
    bsize = page_block_size(page)
    return BlockInfo(
        segment_base=segment.base, slice_index=page.index, slice_count=page.slice_count,
        block_size=bsize, page_start=start, block_index=(ptr - start) // bsize,
        used=page.used, capacity=page.capacity, reserved=page.reserved, tag=page.tag,
        in_full=bool(page.flags & 1), segment_kind=int(segment.kind),
        thread_id=segment.thread_id)
