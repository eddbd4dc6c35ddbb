"""Segments (`src/segment.c`): 32 MiB regions of 64 KiB slices, carved into pages and spans.

A segment is `MI_SEGMENT_SIZE`-aligned, so the segment of any pointer is the pointer rounded
down (`_mi_ptr_segment`). Its first slice holds the header (`mi_segment_t`, including the
`slices[]` array of page records). Every run of slices after it is either a page in use or a
free span:

* first slice of a run: `slice_count` = run length, `slice_offset` = 0; `xblock_size` > 0 for a
  page (1 while it is being set up or torn down), 0 for a free span;
* page in use: the next min(count-1, 255) entries and the last entry point back to the first
  (`slice_offset`, `slice_count` = 0, `xblock_size` = 1), so interior pointers find their page
  and coalescing finds the start of the previous run;
* free span: only the last entry points back (`xblock_size` = 0).

Free spans of all segments a thread owns sit in that thread's 36 span queues, chosen by
`slice_bin`. `span_free` pushes at the front; `segments_page_find_and_allocate` scans the bins
upward from the request's, takes the first span that is big enough and splits off the rest
(pushed back at the front of its bin). Freeing a page (`segment_page_clear`) zeroes its record
from `capacity` on and coalesces it with free neighbours. A segment whose `used` drops to 0 is
freed; one whose every used page is abandoned (`used == abandoned`) is abandoned.

Abandonment (CPython: per interpreter, `mi_abandoned_pool_t`): the abandoned list is a
lock-free LIFO whose head is a tagged pointer (the segment address, 32 MiB-aligned, OR an ABA
counter in the low 25 bits); a second list holds segments visited but not taken;
`abandoned_readers` counts threads inside a pop, and freeing a segment waits until it is 0.
Other threads reclaim abandoned segments when their own spans are exhausted
(`segment_try_reclaim`, at most 8 per attempt) and at every heap collect
(`abandoned_collect`). A reclaimed page goes to the reclaiming thread's heap *with the same
tag* (CPython's `_mi_heap_by_tag`), so a GC page only ever goes to a GC heap.

Commit: segments come from arenas that are committed up front (see `arena`), so `commit_mask`
starts full. Freeing a span schedules a purge of its whole 64 KiB chunks after `purge_delay`
(10 virtual ms); `segment_try_purge` decommits them when the delay has passed (or when forced:
before a segment goes to the visited list) and `segment_ensure_committed` commits a span again
when it is allocated. Purging never changes where blocks go.

Invariants (checked by `segment_is_valid`, the model's `mi_segment_is_valid`): the runs tile
`[0, slice_entries)`; back offsets are as described; `used` counts the pages in use (not the
header); `abandoned <= used`; every free span of an owned normal segment is in the right span
queue of its owner; an abandoned segment (`thread_id` 0) has no span in any queue.

C functions modelled keep their names without `mi_`/`_mi_`. Functions that reach an atomic are
`async`; the span and commit bookkeeping is plain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ftlab.runtime.mimalloc import page as _page
from ftlab.runtime.mimalloc.arena import arena_alloc_aligned, arena_free
from ftlab.runtime.mimalloc.atomic import notify, spin_until
from ftlab.runtime.mimalloc.types import (
    MI_COMMIT_SIZE,
    MI_HUGE_BLOCK_SIZE,
    MI_LARGE_OBJ_SIZE_MAX,
    MI_MAX_SLICE_OFFSET,
    MI_MEDIUM_OBJ_SIZE_MAX,
    MI_MEDIUM_PAGE_SIZE,
    MI_MINIMAL_COMMIT_SIZE,
    MI_OPTION_ABANDONED_PAGE_PURGE,
    MI_OPTION_MAX_SEGMENT_RECLAIM,
    MI_OPTION_PURGE_DELAY,
    MI_OPTION_PURGE_EXTEND_DELAY,
    MI_OS_PAGE_SIZE,
    MI_SEGMENT_BIN_MAX,
    MI_SEGMENT_MASK,
    MI_SEGMENT_OFFSET_ABANDONED_NEXT,
    MI_SEGMENT_OFFSET_COOKIE,
    MI_SEGMENT_OFFSET_SLICES,
    MI_SEGMENT_OFFSET_THREAD_ID,
    MI_SEGMENT_SIZE,
    MI_SEGMENT_SLICE_SHIFT,
    MI_SEGMENT_SLICE_SIZE,
    MI_SLICES_PER_SEGMENT,
    MI_SMALL_OBJ_SIZE_MAX,
    MI_TAGGED_MASK,
    MiDelayed,
    MiSegmentKind,
    Page,
    Segment,
    SegmentsTld,
    SpanQueue,
)
from ftlab.sim.atomics import ACQ_REL, ACQUIRE, RELAXED, RELEASE
from ftlab.sim.memory import Tag
from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.runtime.mimalloc.init import MiRuntime
    from ftlab.runtime.mimalloc.types import AbandonedPool, Heap

MI_SEGMENT_NORMAL = MiSegmentKind.MI_SEGMENT_NORMAL
MI_SEGMENT_HUGE = MiSegmentKind.MI_SEGMENT_HUGE
MI_COMMIT_MASK_FULL = (1 << (MI_SEGMENT_SIZE // MI_COMMIT_SIZE)) - 1


class HeapIntegrityError(ViolationError):
    """A failed internal check (`mi_assert_internal`): a `heap-integrity` violation, whether
    the oracle's check or the model's own code finds it mid-step."""

    def __init__(self, message: str) -> None:
        super().__init__("heap-integrity", message)


def check(cond: bool, message: Callable[[], str]) -> None:
    """`mi_assert_internal(cond && message)` for the named checks the oracle runs (the
    message is made only when the check fails)."""
    if not cond:
        raise HeapIntegrityError(message())


# ---------------------------------------------------------------------------------------------
# Slices

def ptr_segment_base(p: int) -> int:
    """`_mi_ptr_segment`: the base of the segment holding `p` (p-1 rounded down to 32 MiB)."""
    return (p - 1) & ~MI_SEGMENT_MASK


def slice_at(segment: Segment, i: int) -> Page:
    """`&segment->slices[i]`, creating the record on first use (it reads as zeros before)."""
    s = segment.slices[i]
    if s is None:
        mi = segment.mi
        s = segment.slices[i] = Page(segment, i,
                                     segment.base + MI_SEGMENT_OFFSET_SLICES + i * mi.sizeof_page,
                                     mi.build)
    return s


def slice_first(segment: Segment, s: Page) -> Page:
    """`mi_slice_first`: the first slice of the run `s` belongs to."""
    if s.slice_offset:
        return slice_at(segment, s.index - s.slice_offset)
    return s


def segment_page_of(segment: Segment, p: int) -> Page:
    """`_mi_segment_page_of`: the page record of the page holding `p`."""
    return slice_first(segment, slice_at(segment, (p - segment.base) >> MI_SEGMENT_SLICE_SHIFT))


def segment_slices_end(segment: Segment) -> int:
    """`mi_segment_slices_end`, as an index."""
    return segment.slice_entries


def slice_bin(slice_count: int) -> int:
    """`mi_slice_bin`: the span-queue bin of a run of `slice_count` slices."""
    if slice_count <= 1:
        return slice_count
    slice_count -= 1
    s = slice_count.bit_length() - 1
    if s <= 2:
        return slice_count + 1
    return ((s << 2) | ((slice_count >> (s - 2)) & 0x03)) - 4


# ---------------------------------------------------------------------------------------------
# Slice span queues

def span_queue_for(slice_count: int, tld: SegmentsTld) -> SpanQueue:
    """`mi_span_queue_for`."""
    return tld.spans[slice_bin(slice_count)]


def span_queue_push(sq: SpanQueue, s: Page) -> None:
    """`mi_span_queue_push`: at the front; marks the span free."""
    s.prev = None
    s.next = sq.first
    sq.first = s
    if s.next is not None:
        s.next.prev = s
    else:
        sq.last = s
    s.xblock_size = 0


def span_queue_delete(sq: SpanQueue, s: Page) -> None:
    """`mi_span_queue_delete` (works if the queue does not hold `s`, as during reclaim)."""
    if s.prev is not None:
        s.prev.next = s.next
    if s is sq.first:
        sq.first = s.next
    if s.next is not None:
        s.next.prev = s.prev
    if s is sq.last:
        sq.last = s.prev
    s.prev = None
    s.next = None
    s.xblock_size = 1   # no more free


def slice_is_used(s: Page) -> bool:
    """`mi_slice_is_used`."""
    return s.xblock_size > 0


# ---------------------------------------------------------------------------------------------
# Segment size calculations

def segment_info_size(segment: Segment) -> int:
    """`mi_segment_info_size`."""
    return segment.segment_info_slices * MI_SEGMENT_SLICE_SIZE


def segment_size(segment: Segment) -> int:
    """`mi_segment_size`."""
    return segment.segment_slices * MI_SEGMENT_SLICE_SIZE


def segment_page_start_from_slice(segment: Segment, s: Page, xblock_size: int) -> tuple[int, int]:
    """`_mi_segment_page_start_from_slice`: (start, usable size) of the page at slice `s`.

    Pages of small blocks start 3 blocks (<= 64 B) or 1 block (<= 512 B) in, so that pages do
    not all begin on the same cache sets; the offset is a multiple of the block size.
    """
    psize = s.slice_count * MI_SEGMENT_SLICE_SIZE
    start_offset = 0
    if xblock_size >= 8:
        if xblock_size <= 64:
            start_offset = 3 * xblock_size
        elif xblock_size <= 512:
            start_offset = xblock_size
    return segment.base + s.index * MI_SEGMENT_SLICE_SIZE + start_offset, psize - start_offset


def segment_page_start(segment: Segment, page: Page) -> tuple[int, int]:
    """`_mi_segment_page_start` / `_mi_page_start`."""
    return segment_page_start_from_slice(segment, page, page.xblock_size)


def segment_calculate_slices(mi: "MiRuntime", required: int) -> tuple[int, int, int]:
    """`mi_segment_calculate_slices`: (segment slices, header size, info slices); no guard
    pages (MI_SECURE = 0)."""
    isize = (mi.sizeof_segment + MI_OS_PAGE_SIZE - 1) & -MI_OS_PAGE_SIZE
    pre_size = isize
    isize = (isize + MI_SEGMENT_SLICE_SIZE - 1) & -MI_SEGMENT_SLICE_SIZE
    info_slices = isize // MI_SEGMENT_SLICE_SIZE
    if required == 0:
        seg_size = MI_SEGMENT_SIZE
    else:
        seg_size = (required + isize + MI_SEGMENT_SLICE_SIZE - 1) & -MI_SEGMENT_SLICE_SIZE
    return seg_size // MI_SEGMENT_SLICE_SIZE, pre_size, info_slices


def segments_track_size(segment_size: int, tld: SegmentsTld) -> None:
    """`mi_segments_track_size`."""
    tld.count += 1 if segment_size >= 0 else -1
    if tld.count > tld.peak_count:
        tld.peak_count = tld.count
    tld.current_size += segment_size
    if tld.current_size > tld.peak_size:
        tld.peak_size = tld.current_size


async def segment_os_free(segment: Segment, tld: SegmentsTld) -> None:
    """`mi_segment_os_free`: forget the segment and give its memory back to the arena."""
    mi = segment.mi
    await set_thread_id(segment, 0)
    del mi.segments[segment.base]   # _mi_segment_map_freed_at
    segments_track_size(-segment_size(segment), tld)
    size = segment_size(segment)
    csize = commit_mask_committed_size(segment.commit_mask, size)
    await abandoned_await_readers(tld.abandoned, mi)   # wait until safe to free
    mi.counters["segments_freed"] += 1
    mi.observer.mi_segment_event(segment, "freed")
    arena_free(mi, segment.base, size, csize, segment.memid)


async def set_thread_id(segment: Segment, tid: int) -> None:
    """`segment->thread_id = tid`: a seq_cst store to the `_Atomic` field."""
    await segment.mi.mem.store(segment.base + MI_SEGMENT_OFFSET_THREAD_ID, tid)
    segment.thread_id = tid


# ---------------------------------------------------------------------------------------------
# Commit / decommit ranges (commit masks are ints, one bit per 64 KiB)

def commit_mask_committed_size(mask: int, total: int) -> int:
    """`_mi_commit_mask_committed_size`."""
    return (total // (MI_SEGMENT_SIZE // MI_COMMIT_SIZE)) * bin(mask).count("1")


def segment_commit_mask(segment: Segment, conservative: bool, p: int, size: int) -> tuple[int, int, int]:
    """`mi_segment_commit_mask`: (start address, size, mask); commits are liberal (rounded
    outward), purges conservative (inward)."""
    if size == 0 or size > MI_SEGMENT_SIZE or segment.kind == MI_SEGMENT_HUGE:
        return 0, 0, 0
    segstart = segment_info_size(segment)
    segsize = segment_size(segment)
    if p >= segment.base + segsize:
        return 0, 0, 0
    pstart = p - segment.base
    if conservative:
        start = (pstart + MI_COMMIT_SIZE - 1) & -MI_COMMIT_SIZE
        end = (pstart + size) & -MI_COMMIT_SIZE
    else:
        start = pstart & -MI_MINIMAL_COMMIT_SIZE
        end = (pstart + size + MI_MINIMAL_COMMIT_SIZE - 1) & -MI_MINIMAL_COMMIT_SIZE
    if pstart >= segstart and start < segstart:
        start = segstart
    if end > segsize:
        end = segsize
    full = end - start if end > start else 0
    if full == 0:
        return segment.base + start, 0, 0
    bitidx = start // MI_COMMIT_SIZE
    bitcount = full // MI_COMMIT_SIZE
    return segment.base + start, full, ((1 << bitcount) - 1) << bitidx


def segment_commit(segment: Segment, p: int, size: int) -> bool:
    """`mi_segment_commit`."""
    start, full, mask = segment_commit_mask(segment, False, p, size)
    if mask == 0 or full == 0:
        return True
    if segment.commit_mask & mask != mask:
        segment.mi.mem.commit(start, full)
        segment.commit_mask |= mask
    if segment.purge_mask & mask:
        segment.purge_expire = segment.mi.clock_now() + MI_OPTION_PURGE_DELAY
    segment.purge_mask &= ~mask
    return True


def segment_ensure_committed(segment: Segment, p: int, size: int) -> bool:
    """`mi_segment_ensure_committed`."""
    if segment.commit_mask == MI_COMMIT_MASK_FULL and segment.purge_mask == 0:
        return True
    return segment_commit(segment, p, size)


def segment_purge(segment: Segment, p: int, size: int) -> bool:
    """`mi_segment_purge`: decommit (Linux `purge_decommits`) the whole chunks of a range."""
    if not segment.allow_purge:
        return True
    start, full, mask = segment_commit_mask(segment, True, p, size)
    if mask == 0 or full == 0:
        return True
    if segment.commit_mask & mask:
        segment.mi.mem.decommit(start, full)
        segment.mi.observer.mi_decommitted(start, full)
        segment.commit_mask &= ~mask
    segment.purge_mask &= ~mask
    return True


def segment_schedule_purge(segment: Segment, p: int, size: int) -> None:
    """`mi_segment_schedule_purge`: mark for a purge after `purge_delay`."""
    if not segment.allow_purge:
        return
    start, full, mask = segment_commit_mask(segment, True, p, size)
    if mask == 0 or full == 0:
        return
    segment.purge_mask |= segment.commit_mask & mask
    now = segment.mi.clock_now()
    if segment.purge_expire == 0:
        segment.purge_expire = now + MI_OPTION_PURGE_DELAY
    elif segment.purge_expire <= now:
        if segment.purge_expire + MI_OPTION_PURGE_EXTEND_DELAY <= now:
            segment_try_purge(segment, True)
        else:
            segment.purge_expire = now + MI_OPTION_PURGE_EXTEND_DELAY
    else:
        segment.purge_expire += MI_OPTION_PURGE_EXTEND_DELAY


def segment_try_purge(segment: Segment, force: bool) -> None:
    """`mi_segment_try_purge`: decommit the scheduled chunks once expired (or forced)."""
    if not segment.allow_purge or segment.purge_mask == 0:
        return
    now = segment.mi.clock_now()
    if not force and now < segment.purge_expire:
        return
    mask = segment.purge_mask
    segment.purge_expire = 0
    segment.purge_mask = 0
    idx = 0
    while mask:
        if mask & 1:
            count = 0
            while mask & 1:
                count += 1
                mask >>= 1
            segment_purge(segment, segment.base + idx * MI_COMMIT_SIZE, count * MI_COMMIT_SIZE)
            idx += count
        else:
            mask >>= 1
            idx += 1


# ---------------------------------------------------------------------------------------------
# Span free

def segment_is_abandoned(segment: Segment) -> bool:
    """`mi_segment_is_abandoned`."""
    return segment.thread_id == 0


def segment_span_free(segment: Segment, slice_index: int, slice_count: int, allow_purge: bool,
                      tld: SegmentsTld) -> None:
    """`mi_segment_span_free` (also on abandoned segments, whose spans are not queued)."""
    sq = (None if segment.kind == MI_SEGMENT_HUGE or segment_is_abandoned(segment)
          else span_queue_for(slice_count, tld))
    if slice_count == 0:
        slice_count = 1
    s = slice_at(segment, slice_index)
    s.slice_count = slice_count
    s.slice_offset = 0
    if slice_count > 1:
        last = slice_at(segment, slice_index + slice_count - 1)
        last.slice_count = 0
        last.slice_offset = slice_count - 1
        last.xblock_size = 0
    if allow_purge:
        segment_schedule_purge(segment, segment.base + slice_index * MI_SEGMENT_SLICE_SIZE,
                               slice_count * MI_SEGMENT_SLICE_SIZE)
    if sq is not None:
        span_queue_push(sq, s)
    else:
        s.xblock_size = 0   # mark huge page as free anyways


def segment_span_remove_from_queue(s: Page, tld: SegmentsTld) -> None:
    """`mi_segment_span_remove_from_queue`."""
    span_queue_delete(span_queue_for(s.slice_count, tld), s)


def segment_span_free_coalesce(s: Page, tld: SegmentsTld) -> Page:
    """`mi_segment_span_free_coalesce`: merge with free neighbours, then `span_free`."""
    segment = s.segment
    is_abandoned = segment_is_abandoned(segment)
    if segment.kind == MI_SEGMENT_HUGE:
        s.xblock_size = 0
        return s
    slice_count = s.slice_count
    nxt = s.index + s.slice_count
    if nxt < segment.slice_entries:
        n = slice_at(segment, nxt)
        if n.xblock_size == 0:
            slice_count += n.slice_count
            if not is_abandoned:
                segment_span_remove_from_queue(n, tld)
    if s.index > 0:
        prev = slice_first(segment, slice_at(segment, s.index - 1))
        if prev.xblock_size == 0:
            slice_count += prev.slice_count
            if not is_abandoned:
                segment_span_remove_from_queue(prev, tld)
            s = prev
    segment_span_free(segment, s.index, slice_count, True, tld)
    return s


# ---------------------------------------------------------------------------------------------
# Page allocation (from spans)

def segment_span_allocate(segment: Segment, slice_index: int, slice_count: int,
                          tld: SegmentsTld) -> Page:
    """`mi_segment_span_allocate`: turn a span into a page (xblock_size = the span's bytes
    until `page_init` sets the block size)."""
    s = slice_at(segment, slice_index)
    segment_ensure_committed(segment, segment.base + slice_index * MI_SEGMENT_SLICE_SIZE,
                             slice_count * MI_SEGMENT_SLICE_SIZE)
    s.slice_offset = 0
    s.slice_count = slice_count
    bsize = slice_count * MI_SEGMENT_SLICE_SIZE
    s.xblock_size = MI_HUGE_BLOCK_SIZE if bsize >= MI_HUGE_BLOCK_SIZE else bsize
    extra = slice_count - 1
    if extra > MI_MAX_SLICE_OFFSET:
        extra = MI_MAX_SLICE_OFFSET
    if slice_index + extra >= segment.slice_entries:
        extra = segment.slice_entries - slice_index - 1
    for i in range(1, extra + 1):
        n = slice_at(segment, slice_index + i)
        n.slice_offset = i
        n.slice_count = 0
        n.xblock_size = 1
    last_index = slice_index + slice_count - 1
    if last_index > segment.slice_entries:
        last_index = segment.slice_entries
    if last_index > slice_index:
        last = slice_at(segment, last_index)
        last.slice_offset = last_index - slice_index
        last.slice_count = 0
        last.xblock_size = 1
    s.is_committed = True
    segment.used += 1
    return s


def segment_slice_split(segment: Segment, s: Page, slice_count: int, tld: SegmentsTld) -> None:
    """`mi_segment_slice_split`: free the tail beyond `slice_count` (no purge)."""
    if s.slice_count <= slice_count:
        return
    segment_span_free(segment, s.index + slice_count, s.slice_count - slice_count, False, tld)
    s.slice_count = slice_count


def segments_page_find_and_allocate(slice_count: int, tld: SegmentsTld) -> Page | None:
    """`mi_segments_page_find_and_allocate`: first fit, from the request's bin upward."""
    b = slice_bin(slice_count)
    if slice_count == 0:
        slice_count = 1
    spans = tld.spans
    while b <= MI_SEGMENT_BIN_MAX:
        sq = spans[b]
        s = sq.first
        while s is not None:
            if s.slice_count >= slice_count:
                segment = s.segment
                span_queue_delete(sq, s)
                if s.slice_count > slice_count:
                    segment_slice_split(segment, s, slice_count, tld)
                return segment_span_allocate(segment, s.index, s.slice_count, tld)
            s = s.next
        b += 1
    return None


# ---------------------------------------------------------------------------------------------
# Segment allocation

async def segment_os_alloc(mi: "MiRuntime", required: int, segment_slices: int, commit: bool,
                           tld: SegmentsTld) -> Segment:
    """`mi_segment_os_alloc`: claim arena memory and set up the commit bookkeeping."""
    seg_size = segment_slices * MI_SEGMENT_SLICE_SIZE
    base, memid = arena_alloc_aligned(mi, seg_size, commit)
    segment = Segment(mi, base)
    if memid.initially_committed:
        commit_mask = MI_COMMIT_MASK_FULL
    else:
        info = segment_calculate_slices(mi, required)[2] * MI_SEGMENT_SLICE_SIZE
        needed = (info + MI_COMMIT_SIZE - 1) // MI_COMMIT_SIZE
        mi.mem.commit(base, needed * MI_COMMIT_SIZE)
        commit_mask = (1 << needed) - 1
    segment.memid = memid
    segment.allow_decommit = not memid.is_pinned
    segment.allow_purge = segment.allow_decommit and MI_OPTION_PURGE_DELAY >= 0
    segment.segment_size = seg_size
    segment.commit_mask = commit_mask
    segment.purge_expire = 0
    segment.purge_mask = 0
    await mi.mem.store(base + MI_SEGMENT_OFFSET_ABANDONED_NEXT, 0, order=RELEASE)
    segments_track_size(seg_size, tld)
    mi.segments[base] = segment   # _mi_segment_map_allocated_at
    return segment


async def segment_alloc(mi: "MiRuntime", required: int, tld: SegmentsTld) -> tuple[Segment, Page | None]:
    """`mi_segment_alloc`: a normal segment (required = 0) with one free span after the
    header, or a huge segment whose remaining slices are one page right away."""
    segment_slices, _pre_size, info_slices = segment_calculate_slices(mi, required)
    # eager_commit_delay: the first segment of a thread in a multi-threaded process is committed
    # lazily (moot for arena memory, which is committed as a whole).
    eager_delay = mi.thread_count() > 1 and tld.count < 1
    commit = (not eager_delay) or required > 0
    segment = await segment_os_alloc(mi, required, segment_slices, commit, tld)
    if not segment.memid.initially_zero:
        # zero the header from `next` on, slices[] included (it held an older segment)
        ofs = MI_SEGMENT_OFFSET_ABANDONED_NEXT + 8
        mi.mem.fill(segment.base + ofs, MI_SEGMENT_OFFSET_SLICES - ofs
                    + mi.sizeof_page * (segment_slices + 1 if segment_slices < MI_SLICES_PER_SEGMENT
                                        else MI_SLICES_PER_SEGMENT + 1), 0, Tag.META)
    segment.slice_entries = min(segment_slices, MI_SLICES_PER_SEGMENT)
    segment.segment_slices = segment_slices
    segment.segment_info_slices = info_slices
    await set_thread_id(segment, mi.thread_id())
    segment.cookie = segment.base ^ mi.cookie
    mi.mem.store_u64(segment.base + MI_SEGMENT_OFFSET_COOKIE, segment.cookie, Tag.META)
    segment.kind = MI_SEGMENT_NORMAL if required == 0 else MI_SEGMENT_HUGE
    segment_span_allocate(segment, 0, info_slices, tld)   # the header pseudo-page
    segment.used = 0
    huge_page = None
    if segment.kind == MI_SEGMENT_NORMAL:
        segment_span_free(segment, info_slices, segment.slice_entries - info_slices, False, tld)
    else:
        huge_page = segment_span_allocate(segment, info_slices, segment_slices - info_slices, tld)
    mi.counters["segments_allocated"] += 1
    mi.observer.mi_segment_event(segment, "allocated")
    return segment, huge_page


async def segment_free(segment: Segment, force: bool, tld: SegmentsTld) -> None:
    """`mi_segment_free`: unqueue the free spans and return the memory."""
    i = 0
    end = segment.slice_entries
    while i < end:
        s = slice_at(segment, i)
        if s.xblock_size == 0 and segment.kind != MI_SEGMENT_HUGE:
            segment_span_remove_from_queue(s, tld)
        i += s.slice_count
    await segment_os_free(segment, tld)


# ---------------------------------------------------------------------------------------------
# Page free

def segment_page_clear(page: Page, tld: SegmentsTld) -> Page:
    """`mi_segment_page_clear`: zero the page record from `capacity` on and coalesce it into a
    free span (also on abandoned segments)."""
    segment = page.segment
    mi = segment.mi
    mi.observer.mi_page_event(page, "cleared")
    page.is_zero_init = False
    page.capacity = 0
    page.reserved = 0
    page.flags = 0
    page.free_is_zero = False
    page.retire_expire = 0
    page.free = 0
    page.used = 0
    page.local_free = 0
    page.keys0 = page.keys1 = 0
    mem = mi.mem
    mem.store_u64(page.tf_addr, 0, Tag.META)     # the memset covers the atomics too
    mem.store_u64(page.xheap_addr, 0, Tag.META)
    page.heap = None
    page.next = None
    page.prev = None
    page.qsbr_goal = 0
    mem.store_u64(page.qsbr_node_addr, 0, Tag.META)       # qsbr_node.next
    mem.store_u64(page.qsbr_node_addr + 8, 0, Tag.META)   # qsbr_node.prev
    mem.store_u64(page.qsbr_node_addr + 16, 0, Tag.META)  # qsbr_goal
    page.xblock_size = 1
    s = segment_span_free_coalesce(page, tld)
    segment.used -= 1
    return s


async def segment_page_free(page: Page, force: bool, tld: SegmentsTld) -> None:
    """`_mi_segment_page_free`: free the page; free or abandon the segment if that was the
    last page in use (or the last one not abandoned)."""
    segment = page.segment
    segment_page_clear(page, tld)
    if segment.used == 0:
        await segment_free(segment, force, tld)
    elif segment.used == segment.abandoned:
        await segment_abandon(segment, tld)


# ---------------------------------------------------------------------------------------------
# Abandonment: the pool's lock-free lists

def tagged_segment_ptr(ts: int) -> int:
    """`mi_tagged_segment_ptr`."""
    return ts & ~MI_TAGGED_MASK


def tagged_segment(segment_base: int, ts: int) -> int:
    """`mi_tagged_segment`: the segment with the next ABA tag."""
    return segment_base | (((ts & MI_TAGGED_MASK) + 1) & MI_TAGGED_MASK)


async def abandoned_visited_push(pool: "AbandonedPool", segment: Segment) -> None:
    """`mi_abandoned_visited_push`."""
    mem = segment.mi.mem
    nxt_addr = segment.base + MI_SEGMENT_OFFSET_ABANDONED_NEXT
    anext = await mem.load(pool.abandoned_visited, 8, RELAXED)
    while True:
        await mem.store(nxt_addr, anext, order=RELEASE)
        ok, anext = await mem.cas(pool.abandoned_visited, anext, segment.base, order=RELEASE)
        if ok:
            break
    await mem.fetch_add(pool.abandoned_visited_count, 1, order=RELAXED)


async def abandoned_visited_revisit(pool: "AbandonedPool", mi: "MiRuntime") -> bool:
    """`mi_abandoned_visited_revisit`: move the visited list onto the abandoned list."""
    mem = mi.mem
    if await mem.load(pool.abandoned_visited, 8, RELAXED) == 0:
        return False
    first = await mem.exchange(pool.abandoned_visited, 0, order=ACQ_REL)
    if first == 0:
        return False
    ts = await mem.load(pool.abandoned, 8, RELAXED)
    if tagged_segment_ptr(ts) == 0:
        count = await mem.load(pool.abandoned_visited_count, 8, RELAXED)
        afirst = tagged_segment(first, ts)
        ok, _ = await mem.cas(pool.abandoned, ts, afirst, order=ACQ_REL)
        if ok:
            await mem.fetch_add(pool.abandoned_count, count, order=RELAXED)
            await mem.fetch_add(pool.abandoned_visited_count, -count, order=RELAXED)
            return True
    last = first
    while True:
        nxt = await mem.load(last + MI_SEGMENT_OFFSET_ABANDONED_NEXT, 8, RELAXED)
        if nxt == 0:
            break
        last = nxt
    anext = await mem.load(pool.abandoned, 8, RELAXED)
    while True:
        count = await mem.load(pool.abandoned_visited_count, 8, RELAXED)
        await mem.store(last + MI_SEGMENT_OFFSET_ABANDONED_NEXT, tagged_segment_ptr(anext),
                        order=RELEASE)
        afirst = tagged_segment(first, anext)
        ok, anext = await mem.cas(pool.abandoned, anext, afirst, order=RELEASE)
        if ok:
            break
    await mem.fetch_add(pool.abandoned_count, count, order=RELAXED)
    await mem.fetch_add(pool.abandoned_visited_count, -count, order=RELAXED)
    return True


async def abandoned_push(pool: "AbandonedPool", segment: Segment) -> None:
    """`mi_abandoned_push`: CAS the segment onto the tagged abandoned list."""
    mem = segment.mi.mem
    ts = await mem.load(pool.abandoned, 8, RELAXED)
    while True:
        await mem.store(segment.base + MI_SEGMENT_OFFSET_ABANDONED_NEXT, tagged_segment_ptr(ts),
                        order=RELEASE)
        nxt = tagged_segment(segment.base, ts)
        ok, ts = await mem.cas(pool.abandoned, ts, nxt, order=RELEASE)
        if ok:
            break
    await mem.fetch_add(pool.abandoned_count, 1, order=RELAXED)


async def abandoned_await_readers(pool: "AbandonedPool", mi: "MiRuntime") -> None:
    """`_mi_abandoned_await_readers`: wait until no thread is inside `abandoned_pop` (a pop
    reads `abandoned_next` of a segment that may be about to be freed)."""
    await spin_until(mi, pool.abandoned_readers, lambda n: n == 0, "abandoned readers")


async def abandoned_pop(pool: "AbandonedPool", mi: "MiRuntime") -> Segment | None:
    """`mi_abandoned_pop`: pop a segment (swapping in the visited list when empty)."""
    mem = mi.mem
    ts = await mem.load(pool.abandoned, 8, RELAXED)
    if tagged_segment_ptr(ts) == 0:
        if not await abandoned_visited_revisit(pool, mi):
            return None
    await mem.fetch_add(pool.abandoned_readers, 1, order=RELAXED)
    nxt = 0
    ts = await mem.load(pool.abandoned, 8, ACQUIRE)
    while True:
        seg = tagged_segment_ptr(ts)
        if seg == 0:
            break
        anext = await mem.load(seg + MI_SEGMENT_OFFSET_ABANDONED_NEXT, 8, RELAXED)
        nxt = tagged_segment(anext, ts)
        ok, ts = await mem.cas(pool.abandoned, ts, nxt, order=ACQ_REL)
        if ok:
            break
    await mem.fetch_add(pool.abandoned_readers, -1, order=RELAXED)
    notify(mi, pool.abandoned_readers)
    if seg == 0:
        return None
    await mem.store(seg + MI_SEGMENT_OFFSET_ABANDONED_NEXT, 0, order=RELEASE)
    await mem.fetch_add(pool.abandoned_count, -1, order=RELAXED)
    return mi.segments[seg]


# ---------------------------------------------------------------------------------------------
# Abandon segment / page

async def segment_abandon(segment: Segment, tld: SegmentsTld) -> None:
    """`mi_segment_abandon`: every used page is abandoned; unqueue the free spans (they stay
    free) and push the segment on the pool's abandoned list."""
    i = 0
    end = segment.slice_entries
    while i < end:
        s = slice_at(segment, i)
        if s.xblock_size == 0:
            segment_span_remove_from_queue(s, tld)
            s.xblock_size = 0   # but keep it free
        i += s.slice_count
    segment_try_purge(segment, MI_OPTION_ABANDONED_PAGE_PURGE)
    segments_track_size(-segment_size(segment), tld)
    await set_thread_id(segment, 0)
    await segment.mi.mem.store(segment.base + MI_SEGMENT_OFFSET_ABANDONED_NEXT, 0, order=RELEASE)
    segment.abandoned_visits = 1   # from 0 to 1 to signify it is abandoned
    segment.mi.counters["segments_abandoned"] += 1
    segment.mi.observer.mi_segment_event(segment, "abandoned")
    await abandoned_push(tld.abandoned, segment)


async def segment_page_abandon(page: Page, tld: SegmentsTld) -> None:
    """`_mi_segment_page_abandon`."""
    segment = page.segment
    segment.abandoned += 1
    segment.mi.counters["pages_abandoned"] += 1
    if segment.used == segment.abandoned:
        await segment_abandon(segment, tld)


# ---------------------------------------------------------------------------------------------
# Reclaim abandoned pages

def slices_start_iterate(segment: Segment) -> int:
    """`mi_slices_start_iterate`: the index after the header pseudo-page."""
    return slice_at(segment, 0).slice_count


async def segment_check_free(segment: Segment, slices_needed: int, block_size: int,
                             tld: SegmentsTld) -> bool:
    """`mi_segment_check_free`: collect every used page; clear the all-free ones that are safe
    to free (CPython: QSBR goal reached); report whether a big enough span or a page of
    `block_size` with room exists."""
    hooks = segment.mi.hooks
    has_page = False
    i = slices_start_iterate(segment)
    end = segment.slice_entries
    while i < end:
        s = slice_at(segment, i)
        if slice_is_used(s):
            page = s
            await _page.page_free_collect(page, False)
            # CPython: _PyMem_mi_page_is_safe_to_free (awaited: its goal check is an atomic load)
            if page.used == 0 and await hooks.page_is_safe_to_free(page):
                _page.page_set_qsbr_goal(page, 0)
                segment.abandoned -= 1
                s = segment_page_clear(page, tld)
                if s.slice_count >= slices_needed:
                    has_page = True
            elif page.xblock_size == block_size and await _page.page_has_any_available(page):
                has_page = True
        elif s.slice_count >= slices_needed:
            has_page = True
        i = s.index + s.slice_count
    return has_page


def heap_by_tag(heap: "Heap", tag: int) -> "Heap | None":
    """`_mi_heap_by_tag` (CPython): the heap of the same thread with `tag`."""
    if heap.tag == tag:
        return heap
    curr = heap.tld.heaps
    while curr is not None:
        if curr.tag == tag:
            return curr
        curr = curr.next
    return None


async def segment_reclaim(segment: Segment, heap: "Heap", requested_block_size: int,
                          tld: SegmentsTld) -> tuple[Segment | None, bool]:
    """`mi_segment_reclaim`: take the segment over; its used pages go to this thread's heaps of
    their tags. Returns (segment or None if it was freed, right_page_reclaimed)."""
    mi = segment.mi
    hooks = mi.hooks
    right_page_reclaimed = False
    await set_thread_id(segment, mi.thread_id())
    segment.abandoned_visits = 0
    segments_track_size(segment_size(segment), tld)
    mi.counters["segments_reclaimed"] += 1
    mi.observer.mi_segment_event(segment, "reclaimed")
    i = slices_start_iterate(segment)
    end = segment.slice_entries
    while i < end:
        s = slice_at(segment, i)
        if slice_is_used(s):
            page = s
            segment.abandoned -= 1
            target = heap_by_tag(heap, page.tag)
            if target is None:
                raise HeapIntegrityError(f"no heap with tag {page.tag} to reclaim {page!r} into")
            await _page.page_set_heap(page, target)
            await _page.page_use_delayed_free(page, MiDelayed.MI_USE_DELAYED_FREE, True)
            await _page.page_free_collect(page, False)
            # CPython: _PyMem_mi_page_is_safe_to_free (awaited: its goal check is an atomic load)
            if page.used == 0 and await hooks.page_is_safe_to_free(page):
                _page.page_set_qsbr_goal(page, 0)
                s = segment_page_clear(page, tld)
            else:
                _page.page_reclaim(target, page)
                if (requested_block_size == page.xblock_size
                        and requested_block_size <= MI_MEDIUM_OBJ_SIZE_MAX
                        and target is heap
                        and await _page.page_has_any_available(page)):
                    right_page_reclaimed = True
                    mi.counters["right_pages_reclaimed"] += 1
        else:
            s = segment_span_free_coalesce(s, tld)
        i = s.index + s.slice_count
    if segment.used == 0:
        await segment_free(segment, False, tld)
        return None, False
    return segment, right_page_reclaimed


async def abandoned_reclaim_all(heap: "Heap", tld: SegmentsTld) -> None:
    """`_mi_abandoned_reclaim_all`: pop everything and reclaim it into `heap`."""
    while True:
        segment = await abandoned_pop(tld.abandoned, heap.mi)
        if segment is None:
            return
        await segment_reclaim(segment, heap, 0, tld)


async def segment_try_reclaim(heap: "Heap", needed_slices: int, block_size: int,
                              tld: SegmentsTld) -> tuple[Segment | None, bool]:
    """`mi_segment_try_reclaim`: look at up to 8 abandoned segments; reclaim one with room.
    Returns (segment, reclaimed-the-right-page)."""
    mi = heap.mi
    max_tries = MI_OPTION_MAX_SEGMENT_RECLAIM
    while max_tries > 0:
        max_tries -= 1
        segment = await abandoned_pop(tld.abandoned, mi)
        if segment is None:
            break
        segment.abandoned_visits += 1
        has_page = await segment_check_free(segment, needed_slices, block_size, tld)
        if segment.used == 0:
            await segment_reclaim(segment, heap, 0, tld)
        elif has_page:
            return await segment_reclaim(segment, heap, block_size, tld)
        elif segment.abandoned_visits > 3:
            await segment_reclaim(segment, heap, 0, tld)
        else:
            segment_try_purge(segment, True)
            await abandoned_visited_push(tld.abandoned, segment)
            mi.counters["segments_visited"] += 1
    return None, False


async def abandoned_collect(heap: "Heap", force: bool, tld: SegmentsTld) -> None:
    """`_mi_abandoned_collect`: free abandoned segments that became empty; purge the rest."""
    mi = heap.mi
    max_tries = 16 * 1024 if force else 1024
    if force:
        await abandoned_visited_revisit(tld.abandoned, mi)
    seen: set[int] = set()
    while max_tries > 0:
        max_tries -= 1
        segment = await abandoned_pop(tld.abandoned, mi)
        if segment is None:
            break
        await segment_check_free(segment, 0, 0, tld)
        if segment.used == 0:
            await segment_reclaim(segment, heap, 0, tld)
        else:
            segment_try_purge(segment, force)
            await abandoned_visited_push(tld.abandoned, segment)
            # Model bound (MiRuntime.abandoned_collect_exact): `pop` swaps the visited list back
            # in when the abandoned list runs empty, so C cycles through the same segments until
            # its 1024 (16 Ki) tries are used up: thousands of atomics at every thread exit.
            # The model stops after one full pass over the pool, as C with fewer tries would.
            if segment.base in seen and not mi.abandoned_collect_exact:
                break
            seen.add(segment.base)


# ---------------------------------------------------------------------------------------------
# Reclaim or allocate

async def segment_reclaim_or_alloc(heap: "Heap", needed_slices: int, block_size: int,
                                   tld: SegmentsTld) -> Segment | None:
    """`mi_segment_reclaim_or_alloc`: None means "a page of the right size was reclaimed into
    the heap" (the caller searches its queue again)."""
    segment, reclaimed = await segment_try_reclaim(heap, needed_slices, block_size, tld)
    if reclaimed:
        return None
    if segment is not None:
        return segment
    segment, _ = await segment_alloc(heap.mi, 0, tld)
    return segment


async def segments_page_alloc(heap: "Heap", required: int, block_size: int,
                              tld: SegmentsTld) -> Page | None:
    """`mi_segments_page_alloc`: a page of `required` bytes from the thread's spans, reclaiming
    or allocating a segment when they are exhausted."""
    while True:
        align = MI_MEDIUM_PAGE_SIZE if required > MI_MEDIUM_PAGE_SIZE else MI_SEGMENT_SLICE_SIZE
        page_size = (required + align - 1) & -align
        slices_needed = page_size // MI_SEGMENT_SLICE_SIZE
        page = segments_page_find_and_allocate(slices_needed, tld)
        if page is not None:
            segment_try_purge(page.segment, False)
            return page
        if await segment_reclaim_or_alloc(heap, slices_needed, block_size, tld) is None:
            return None     # reclaimed a good page into the heap
        # otherwise try again with the new (or reclaimed) segment's spans


# ---------------------------------------------------------------------------------------------
# Huge pages

async def segment_huge_page_alloc(heap: "Heap", size: int, tld: SegmentsTld) -> Page:
    """`mi_segment_huge_page_alloc`: a segment of its own, one page of all its slices."""
    segment, page = await segment_alloc(heap.mi, size, tld)
    assert page is not None, "a huge segment was allocated without its page"
    _start, psize = segment_page_start(segment, page)
    page.xblock_size = MI_HUGE_BLOCK_SIZE if psize > MI_HUGE_BLOCK_SIZE else psize
    return page


def segment_huge_page_reset(segment: Segment, page: Page, block: int, usable: int) -> None:
    """`_mi_segment_huge_page_reset`: a cross-thread free of a huge block resets (MADV_DONTNEED,
    which keeps the mapping) the block's memory after its first word; the model zeroes it."""
    if segment.allow_decommit and usable > 8:
        segment.mi.mem.fill(block + 8, usable - 8, 0, Tag.UNINIT)


async def segment_page_alloc(heap: "Heap", block_size: int, tld: SegmentsTld) -> Page | None:
    """`_mi_segment_page_alloc`: small (1 slice), medium (8 slices), large (the block rounded
    to slices) or huge (own segment) page; no aligned allocation in CPython."""
    if block_size <= MI_SMALL_OBJ_SIZE_MAX:
        return await segments_page_alloc(heap, block_size, block_size, tld)
    if block_size <= MI_MEDIUM_OBJ_SIZE_MAX:
        return await segments_page_alloc(heap, MI_MEDIUM_PAGE_SIZE, block_size, tld)
    if block_size <= MI_LARGE_OBJ_SIZE_MAX:
        return await segments_page_alloc(heap, block_size, block_size, tld)
    return await segment_huge_page_alloc(heap, block_size, tld)


# ---------------------------------------------------------------------------------------------
# Invariant checking (`mi_segment_is_valid`, debug level 3 in C; the oracle runs it)

def segment_is_valid(segment: Segment, tld: SegmentsTld | None) -> None:
    """Raise HeapIntegrityError unless the slice runs, back offsets, counts and span queues of
    `segment` are consistent (`tld`: the owner's, for the queue checks; None if abandoned)."""
    mi = segment.mi
    check(mi.segments.get(segment.base) is segment, lambda: f"{segment!r} is not in the segment map")
    tid = mi.mem.raw_load(segment.base + MI_SEGMENT_OFFSET_THREAD_ID, 8)
    check(tid == segment.thread_id,
          lambda: f"{segment!r}: thread_id mirror {segment.thread_id} != memory {tid}")
    i = 0
    end = segment.slice_entries
    used = 0
    first = True
    while i < end:
        s = slice_at(segment, i)
        check(s.slice_count > 0, lambda: f"{segment!r}: slice {i} starts a run of 0 slices")
        check(s.slice_offset == 0, lambda: f"{segment!r}: run start {i} has a back offset")
        maxindex = min(i + s.slice_count, end) - 1
        if slice_is_used(s):
            if not first:
                used += 1
            for k in range(1, min(MI_MAX_SLICE_OFFSET, maxindex - i) + 1):
                n = slice_at(segment, i + k)
                check(n.slice_offset == k and n.slice_count == 0 and n.xblock_size == 1,
                      lambda: f"{segment!r}: page at slice {i}: bad back offset in slice {i + k}")
            last = i + s.slice_count - 1
            if i < last < end:
                n = slice_at(segment, last)
                check(n.slice_offset == last - i and n.slice_count == 0,
                      lambda: f"{segment!r}: page at slice {i}: bad back offset in its last slice")
        else:
            check(not first, lambda: f"{segment!r}: the header span is free")
            last = slice_at(segment, maxindex)
            if segment.kind != MI_SEGMENT_HUGE:
                check(last.slice_offset == maxindex - i and last.xblock_size == 0,
                      lambda: f"{segment!r}: free span at slice {i}: bad last slice")
            if segment.kind != MI_SEGMENT_HUGE and segment.thread_id != 0 and tld is not None:
                sq = span_queue_for(s.slice_count, tld)
                q = sq.first
                while q is not None and q is not s:
                    q = q.next
                check(q is s, lambda: f"{segment!r}: free span at slice {i} x{s.slice_count} is not "
                              f"in span queue {slice_bin(s.slice_count)} of its thread")
        first = False
        i = maxindex + 1
    check(used == segment.used, lambda: f"{segment!r}: {used} pages in use but used={segment.used}")
    check(segment.abandoned <= segment.used,
          lambda: f"{segment!r}: abandoned {segment.abandoned} > used {segment.used}")


def span_queues_are_valid(tld: SegmentsTld) -> None:
    """Every span in a thread's queues is a free run of an owned segment, in the right bin,
    and the links are consistent."""
    for b, sq in enumerate(tld.spans):
        prev = None
        s = sq.first
        n = 0
        while s is not None:
            n += 1
            check(n <= MI_SLICES_PER_SEGMENT * 64, lambda: f"span queue {b} has a cycle")
            check(s.prev is prev, lambda: f"span queue {b}: broken prev link at {s!r}")
            check(s.xblock_size == 0, lambda: f"span queue {b}: {s!r} is not free")
            check(slice_bin(s.slice_count) == b, lambda: f"span queue {b}: {s!r} belongs in bin "
                                                 f"{slice_bin(s.slice_count)}")
            check(s.segment.thread_id == tld.tld.thread_id,
                  lambda: f"span queue {b}: {s!r} is in a segment the thread does not own")
            prev = s
            s = s.next
        check(sq.last is prev, lambda: f"span queue {b}: last is not the tail")
