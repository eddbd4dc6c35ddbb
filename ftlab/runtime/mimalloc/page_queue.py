"""Page queues (`src/page-queue.c`): each heap's 75 doubly linked lists of pages.

`heap.pages[b]` holds the pages of size class `b` that have, or may have, free blocks;
`pages[MI_BIN_HUGE]` (73) the large and huge pages; `pages[MI_BIN_FULL]` (74) the pages found
full. `push` (a fresh or reclaimed page) inserts at the front; `enqueue_from` (to or from the
full queue) appends at the tail; `in_full` is set exactly while a page is in the full queue;
`heap.page_count` counts the pages in all queues.

`heap.pages_free_direct[w]` (w = 0 .. 128, or 129 with padding) caches the first page of the
queue that serves requests of `w` words, or the static empty page (`free` = 0) when that queue
is empty: `heap_queue_first_update` rewrites the whole word range of a small queue whenever its
first page changes. This is what lets `malloc` of <= 1 KiB find its page with one index.

Invariants (checked by `page_queue_is_valid`): links are consistent both ways, `last` is the
tail, every page's heap is the queue's heap and its block size is the queue's (any size above
128 KiB in the huge queue, anything in the full queue), `in_full` matches the full queue, the
direct entries equal the first pages, and `page_count` is the total.
"""

from __future__ import annotations

from ftlab.runtime.mimalloc.bins import (
    MI_FULL_QUEUE_BLOCK_SIZE,
    MI_HUGE_QUEUE_BLOCK_SIZE,
    bin_index,
)
from ftlab.runtime.mimalloc.types import (
    MI_BIN_FULL,
    MI_BIN_HUGE,
    MI_MEDIUM_OBJ_SIZE_MAX,
    MI_SMALL_SIZE_MAX,
    Heap,
    Page,
    PageQueue,
)

IN_FULL = 1
HAS_ALIGNED = 2


def page_queue_is_huge(pq: PageQueue) -> bool:
    """`mi_page_queue_is_huge`."""
    return pq.block_size == MI_HUGE_QUEUE_BLOCK_SIZE


def page_queue_is_full(pq: PageQueue) -> bool:
    """`mi_page_queue_is_full`."""
    return pq.block_size == MI_FULL_QUEUE_BLOCK_SIZE


def page_queue_is_special(pq: PageQueue) -> bool:
    """`mi_page_queue_is_special`: the huge or the full queue."""
    return pq.block_size > MI_MEDIUM_OBJ_SIZE_MAX


def page_queue_of(page: Page) -> PageQueue:
    """`mi_page_queue_of`: the queue of the page's heap that holds it."""
    b = MI_BIN_FULL if page.flags & IN_FULL else bin_index(page.xblock_size)
    return page.heap.pages[b]


def heap_page_queue_of(heap: Heap, page: Page) -> PageQueue:
    """`mi_heap_page_queue_of`."""
    b = MI_BIN_FULL if page.flags & IN_FULL else bin_index(page.xblock_size)
    return heap.pages[b]


def heap_queue_first_update(heap: Heap, pq: PageQueue) -> None:
    """`mi_heap_queue_first_update`: point the direct entries of a small queue's word sizes
    at its (new) first page."""
    size = pq.block_size
    if size > MI_SMALL_SIZE_MAX:
        return
    page = pq.first
    if page is None:
        page = heap.mi.page_empty
    idx = (size + 7) >> 3
    pages_free = heap.pages_free_direct
    if pages_free[idx] is page:
        return
    if idx <= 1:
        start = 0
    else:
        # find the previous size; up to 3 previous bins may have to be skipped
        b = bin_index(size)
        prev = pq.bin - 1
        pages = heap.pages
        while b == bin_index(pages[prev].block_size) and prev > 0:
            prev -= 1
        start = 1 + ((pages[prev].block_size + 7) >> 3)
        if start > idx:
            start = idx
    for sz in range(start, idx + 1):
        pages_free[sz] = page


def _unlink(heap: Heap, queue: PageQueue, page: Page) -> None:
    """Take `page` out of `queue`'s list (the first half of remove and of enqueue_from)."""
    if page.prev is not None:
        page.prev.next = page.next
    if page.next is not None:
        page.next.prev = page.prev
    if page is queue.last:
        queue.last = page.prev
    if page is queue.first:
        queue.first = page.next
        heap_queue_first_update(heap, queue)


def page_queue_remove(queue: PageQueue, page: Page) -> None:
    """`mi_page_queue_remove`."""
    heap = page.heap
    _unlink(heap, queue, page)
    heap.page_count -= 1
    page.next = None
    page.prev = None
    page.flags &= ~IN_FULL
    if heap.mi.track_touched:
        heap.mi.touch_queue(heap, queue)


def page_queue_push(heap: Heap, queue: PageQueue, page: Page) -> None:
    """`mi_page_queue_push`: at the front."""
    if page_queue_is_full(queue):
        page.flags |= IN_FULL
    else:
        page.flags &= ~IN_FULL
    page.next = queue.first
    page.prev = None
    if queue.first is not None:
        queue.first.prev = page
        queue.first = page
    else:
        queue.first = queue.last = page
    heap_queue_first_update(heap, queue)
    heap.page_count += 1
    if heap.mi.track_touched:
        heap.mi.touch_queue(heap, queue)


def page_queue_enqueue_from(to: PageQueue, frm: PageQueue, page: Page) -> None:
    """`mi_page_queue_enqueue_from`: move to the tail of `to`."""
    heap = page.heap
    _unlink(heap, frm, page)
    page.prev = to.last
    page.next = None
    if to.last is not None:
        to.last.next = page
        to.last = page
    else:
        to.first = page
        to.last = page
        heap_queue_first_update(heap, to)
    if page_queue_is_full(to):
        page.flags |= IN_FULL
    else:
        page.flags &= ~IN_FULL
    if heap.mi.track_touched:
        heap.mi.touch_queue(heap, to)
        heap.mi.touch_queue(heap, frm)


def page_queue_contains(queue: PageQueue, page: Page) -> bool:
    """`mi_page_queue_contains`."""
    p = queue.first
    while p is not None:
        if p is page:
            return True
        p = p.next
    return False


# ---------------------------------------------------------------------------------------------
# Invariant checking

def page_queue_is_valid(heap: Heap, pq: PageQueue) -> int:
    """Check one queue (module docstring); returns its length."""
    from ftlab.runtime.mimalloc.segment import check

    prev = None
    p = pq.first
    n = 0
    full = page_queue_is_full(pq)
    huge = page_queue_is_huge(pq)
    while p is not None:
        n += 1
        check(n <= 1 << 20, lambda: f"{pq!r} of {heap!r} has a cycle")
        check(p.prev is prev, lambda: f"{pq!r}: broken prev link at {p!r}")
        check(p.heap is heap, lambda: f"{pq!r}: {p!r} belongs to {p.heap!r}, not {heap!r}")
        check(bool(p.flags & IN_FULL) == full,
              lambda: f"{pq!r}: {p!r} has in_full={bool(p.flags & IN_FULL)} in the "
              f"{'full' if full else 'non-full'} queue")
        if not full:
            check(p.xblock_size == pq.block_size or (huge and p.xblock_size > MI_MEDIUM_OBJ_SIZE_MAX),
                  lambda: f"{pq!r}: {p!r} has block size {p.xblock_size}")
        prev = p
        p = p.next
    check(pq.last is prev, lambda: f"{pq!r}: last is not the tail")
    if pq.block_size <= MI_SMALL_SIZE_MAX and bin_index(pq.block_size) == pq.bin:
        # (queues 3, 5, 7 are never used on 64-bit: their words belong to the next bin)
        want = pq.first if pq.first is not None else heap.mi.page_empty
        idx = (pq.block_size + 7) >> 3
        check(heap.pages_free_direct[idx] is want,
              lambda: f"{heap!r}: pages_free_direct[{idx}] is not the first page of {pq!r}")
    return n


def heap_queues_are_valid(heap: Heap) -> None:
    """All 75 queues of a heap, and `page_count`."""
    from ftlab.runtime.mimalloc.segment import check

    total = 0
    for pq in heap.pages:
        total += page_queue_is_valid(heap, pq)
    check(total == heap.page_count, lambda: f"{heap!r}: {total} pages in queues, page_count={heap.page_count}")
    check(heap.pages[MI_BIN_HUGE].block_size == MI_HUGE_QUEUE_BLOCK_SIZE, lambda: "huge queue size")
