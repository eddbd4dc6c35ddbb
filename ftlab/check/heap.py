"""The `heap-integrity`, `double-free` and `invalid-free` oracles (DESIGN §5.5, §5.6).

Ghost state: every block the allocator handed out and has not taken back (`live`), and the
history of the blocks freed last at each address (`freed`): who allocated and freed them, at
which step. It is kept from the runtime's events (`block_allocated`, `block_freeing`,
`block_freed`), never from the allocator's own data.

* `invalid-free`: a pointer that is not the start of a live block: outside every segment, in a
  segment's header or a free span, inside a block but not at its start, or never handed out.
* `double-free`: a pointer whose block was freed and not handed out again; reported with its
  history.
* `heap-integrity`: mimalloc's debug-level-2 internal checks (the model's named assertion
  functions, `page_is_valid`, `heap_queues_are_valid`, `segment_is_valid`,
  `span_queues_are_valid`), plus the ghost: no block is both on a free list and live, and a
  block is not handed out while live.

When they run. A thread's allocator structures are consistent between its operations, not
inside them: an operation can be preempted halfway at any atomic, and a thread can finish one
operation and start the next within one step. So the checks run at the moment an operation
completes (a malloc or free returns, a collect or heap delete finishes; the events
`block_allocated`, `block_freed`, `mi_op_done`), where mimalloc's own asserts hold, and only
on what that operation touched and the thread still owns: the page of the block (O(1) checks:
counters, list heads, the block's own position), and in full the pages and segments the
operation changed on its slow paths (the model reports them: `MiRuntime.track_touched`). Other
threads are then suspended at atomics, possibly halfway through their own operations, which is
why a page or segment that has meanwhile passed to another thread (abandoned and reclaimed) is
left to that thread's next completion. At the end of a run (`run_finished`), everything is
checked in full: every heap of every thread, every segment (owned or abandoned) and its spans,
the span queues, the abandoned pool's lists, and every live block against the free lists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ftlab.runtime.mimalloc.page import page_block_size, page_is_valid, page_lists
from ftlab.runtime.mimalloc.stats import snapshot
from ftlab.runtime.mimalloc.page_queue import (
    heap_queues_are_valid,
    page_queue_is_valid,
    page_queue_of,
)
from ftlab.runtime.mimalloc.segment import (
    HeapIntegrityError,
    segment_is_valid,
    segment_page_start,
    slice_at,
    slice_first,
    span_queues_are_valid,
)
from ftlab.runtime.mimalloc.types import (
    MI_POOL_OFFSET_ABANDONED,
    MI_SEGMENT_MASK,
    MI_SEGMENT_OFFSET_ABANDONED_NEXT,
    MI_SEGMENT_SLICE_SHIFT,
    MI_TAGGED_MASK,
)
from ftlab.runtime.observer import Observer
from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.runtime.pystate import Runtime


class BlockRecord:
    """The ghost of one block: where it came from and where it went."""

    __slots__ = ("ptr", "size", "tag", "alloc_thread", "alloc_step", "free_thread", "free_step")

    def __init__(self, ptr: int, size: int, tag: int, thread: str, step: int) -> None:
        self.ptr = ptr
        self.size = size
        self.tag = tag
        self.alloc_thread = thread
        self.alloc_step = step
        self.free_thread: str | None = None
        self.free_step = -1

    def history(self) -> tuple[str, ...]:
        out = [f"allocated ({self.size} bytes, heap tag {self.tag}) by {self.alloc_thread} "
               f"at step {self.alloc_step}"]
        if self.free_thread is not None:
            out.append(f"freed by {self.free_thread} at step {self.free_step}")
        return tuple(out)


class HeapChecker(Observer):
    """The three oracles (module docstring). One per runtime; `install` adds it."""

    def __init__(self, rt: "Runtime") -> None:
        self.rt = rt
        self.mi = rt.mimalloc
        self.machine = rt.machine
        self.live: dict[int, BlockRecord] = {}
        self.freed: dict[int, BlockRecord] = {}
        self.due: list[Any] = []            # pages touched by completed operations
        self.due_segments: list[Any] = []
        self.pending_segments: dict[int, list[Any]] = {}
        self.full_checks = 0
        self.delayed: set[int] = set()      # blocks handed to _PyMem_FreeDelayed, not yet freed
        self.mi.track_touched = True

    @classmethod
    def find(cls, rt: "Runtime") -> "HeapChecker | None":
        return rt.find_observer(cls)

    # -----------------------------------------------------------------------------------------
    # Events

    def _who(self, t: Any) -> str:
        return t.vt.label if t is not None else "set-up"

    def block_allocated(self, t: Any, ptr: int, size: int, heap: Any) -> None:
        old = self.live.get(ptr)
        if old is not None:
            raise ViolationError(
                "heap-integrity",
                f"mimalloc handed out block {ptr:#x} to {self._who(t)} while it is still live",
                old.history())
        self.live[ptr] = BlockRecord(ptr, size, heap.tag, self._who(t), self.machine.steps)
        self.freed.pop(ptr, None)
        self.check_block_page(ptr)
        self._op_done(t)

    def mem_free_delayed(self, t: Any, ptr: int, size: int) -> None:
        self.delayed.add(ptr)

    def block_freeing(self, t: Any, ptr: int) -> None:
        self.delayed.discard(ptr)
        rec = self.live.pop(ptr, None)
        if rec is not None:
            rec.free_thread = self._who(t)
            rec.free_step = self.machine.steps
            self.freed[ptr] = rec
            self.check_block_page(ptr)      # before mimalloc acts on a corrupt page
            return
        old = self.freed.get(ptr)
        if old is not None:
            raise ViolationError(
                "double-free",
                f"{self._who(t)} frees block {ptr:#x}, which is already free",
                old.history() + (f"freed again by {self._who(t)} at step {self.machine.steps}",))
        raise ViolationError("invalid-free", f"{self._who(t)} frees {ptr:#x}, which "
                                             f"{self.explain(ptr)}")

    def block_freed(self, t: Any, ptr: int) -> None:
        self.check_block_page(ptr)
        self._op_done(t)

    def mi_op_done(self, t: Any) -> None:
        self._op_done(t)

    def mi_segment_event(self, segment: Any, what: str) -> None:
        cur = self.machine.current
        self.pending_segments.setdefault(cur.index if cur else -1, []).append(segment)

    def _op_done(self, t: Any) -> None:
        index = t.vt.index if t is not None else -1
        pages = self.mi.pending.pop(index, None)
        segs = self.pending_segments.pop(index, None)
        queues = self.mi.pending_queues.pop(index, None)
        if queues:
            self.check_queues(queues)
        if pages or segs:
            tld = self.mi.tlds[index] if 0 <= index < len(self.mi.tlds) else None
            tid = tld.thread_id if tld is not None else -1
            if pages:
                self.due.extend((tid, p) for p in pages)
            if segs:
                self.due_segments.extend((tid, s) for s in segs)
            self.check_due()

    def run_finished(self, rt: Any) -> None:
        """DESIGN §5.7 at the block level: once every thread has exited, the blocks still live
        are exactly the baseline (those set-up allocated), and mimalloc's own count of blocks in
        use agrees with the ghost's."""
        self.full_check()
        # Blocks still waiting in delayed-free queues are freed by _PyMem_FiniDelayed at
        # interpreter finalization, not leaked.
        leaked = [r for r in self.live.values()
                  if r.alloc_thread != "set-up" and r.ptr not in self.delayed]
        if leaked:
            first = leaked[0]
            raise ViolationError(
                "leak", f"{len(leaked)} block(s) allocated by threads are still live after every "
                        f"thread exited; the first is {first.ptr:#x}", first.history())
        counted = snapshot(self.mi).blocks_live
        if counted != len(self.live):
            raise ViolationError(
                "leak", f"mimalloc counts {counted} block(s) in use at the end of the run, the "
                        f"ghost record {len(self.live)}")

    # -----------------------------------------------------------------------------------------
    # Explaining a bad pointer

    def explain(self, ptr: int) -> str:
        """Why `ptr` is not a live block, in words."""
        mi = self.mi
        seg = mi.segments.get((ptr - 1) & ~MI_SEGMENT_MASK)
        if seg is None:
            return "is not in any mimalloc segment"
        idx = (ptr - seg.base) >> MI_SEGMENT_SLICE_SHIFT
        if idx < seg.segment_info_slices:
            return f"is in the header of segment {seg.base:#x}"
        s = seg.slices[idx]
        if s is None:
            return f"is in a free span of segment {seg.base:#x}"
        page = slice_first(seg, s)
        if page.xblock_size <= 1:
            return f"is in a free span of segment {seg.base:#x}"
        start, _ = segment_page_start(seg, page)
        bsize = page_block_size(page)
        if ptr < start:
            return f"is before the first block of {page!r}"
        index, off = divmod(ptr - start, bsize)
        if off:
            return (f"is {off} bytes into block {index} ({start + index * bsize:#x}) of "
                    f"{page!r}")
        if index >= page.capacity:
            return f"is block {index} of {page!r}, beyond its capacity: never handed out"
        return f"is block {index} of {page!r}, which was never handed out"

    # -----------------------------------------------------------------------------------------
    # The checks

    def _fail(self, e: HeapIntegrityError | ViolationError, what: str) -> None:
        msg = e.message if isinstance(e, ViolationError) else str(e)
        raise ViolationError("heap-integrity", f"{msg} ({what})")

    def check_due(self) -> None:
        """Check what a completed operation touched (module docstring)."""
        # Only what still belongs to the thread whose operation completed: a segment it gave
        # up (abandoned, or freed and reused) may be in the middle of another thread's
        # operation now; it is checked when that one completes, and at the end of the run.
        if self.due:
            due, self.due = self.due, []
            seen = set()
            for tid, page in due:
                seg = page.segment
                if id(page) not in seen and seg is not None and seg.thread_id == tid:
                    seen.add(id(page))
                    self.check_page(page)
        if self.due_segments:
            segs, self.due_segments = self.due_segments, []
            seen = set()
            for tid, seg in segs:
                if (id(seg) not in seen and seg.thread_id == tid
                        and self.mi.segments.get(seg.base) is seg):
                    seen.add(id(seg))
                    self.check_segment(seg)

    def check_queues(self, queues: list) -> None:
        """The page queues an operation changed (links, tail, block sizes, `in_full`, the
        direct pages); `page_count` and the rest in the full check."""
        seen = set()
        try:
            for heap, pq in queues:
                if id(pq) not in seen and not heap.deleted and heap.pages[pq.bin] is pq:
                    seen.add(id(pq))
                    page_queue_is_valid(heap, pq)
        except HeapIntegrityError as e:
            self._fail(e, "after a completed operation")

    def check_block_page(self, ptr: int) -> None:
        """O(1) checks of the page of a block just allocated or freed."""
        mi = self.mi
        seg = mi.segments.get((ptr - 1) & ~MI_SEGMENT_MASK)
        if seg is None:
            return      # the segment was freed with the block's page
        s = seg.slices[(ptr - seg.base) >> MI_SEGMENT_SLICE_SHIFT]
        if s is None:
            return
        page = slice_first(seg, s)
        if page.xblock_size <= 1:
            return      # the page went back to its segment
        try:
            start, psize = segment_page_start(seg, page)
            bsize = page_block_size(page)
            if not (0 <= page.used <= page.capacity <= page.reserved):
                raise HeapIntegrityError(f"{page!r}: counters out of order")
            if (ptr - start) % bsize or not (start <= ptr < start + page.capacity * bsize):
                raise HeapIntegrityError(f"{page!r}: block {ptr:#x} is not a handed-out block")
            for name, head in (("free", page.free), ("local_free", page.local_free)):
                if head:
                    if not (start <= head < start + page.capacity * bsize) or (head - start) % bsize:
                        raise HeapIntegrityError(f"{page!r}: {name} list head {head:#x} is not "
                                                 f"a block of the page")
                    if head in self.live:
                        raise HeapIntegrityError(f"{page!r}: {name} list head {head:#x} is a "
                                                 f"live block")
            heap = page.heap
            if heap is not None and seg.thread_id == mi.thread_id():
                # the owner's view, O(1): the page's links agree with its queue and xheap
                xheap = mi.mem.raw_load(page.xheap_addr, 8)
                if xheap != heap.addr:
                    raise HeapIntegrityError(f"{page!r}: xheap {xheap:#x} is not its heap "
                                             f"{heap!r}")
                pq = page_queue_of(page)
                if (page.prev is None) != (pq.first is page) or \
                        (page.next is None) != (pq.last is page) or \
                        (page.prev is not None and page.prev.next is not page) or \
                        (page.next is not None and page.next.prev is not page):
                    raise HeapIntegrityError(f"{page!r} is not linked into {pq!r} of {heap!r} "
                                             f"(in_full={bool(page.flags & 1)})")
        except HeapIntegrityError as e:
            self._fail(e, f"after the operation on {ptr:#x}")

    def check_page(self, page: Any) -> None:
        """mimalloc's `_mi_page_is_valid` on a page in use, with the ghost cross-check; a page
        that went back to its segment gets its segment checked instead."""
        seg = page.segment
        if seg is None or self.mi.segments.get(seg.base) is not seg:
            return
        if page.xblock_size <= 1 or page.index < seg.segment_info_slices:
            self.check_segment(seg)
            return
        try:
            free, local, thread = page_is_valid(page)
        except HeapIntegrityError as e:
            self._fail(e, "after a completed operation")
        live = self.live
        if live.keys().isdisjoint(free) and live.keys().isdisjoint(local) \
                and live.keys().isdisjoint(thread):
            return      # the usual case, decided in C; else find the first in list order
        for lst in (free, local, thread):
            for b in lst:
                if b in live:
                    r = live[b]
                    raise ViolationError("heap-integrity",
                                         f"block {b:#x} is on a free list of {page!r} but live",
                                         r.history())

    def check_segment(self, seg: Any) -> None:
        tld = self._owner_tld(seg)
        try:
            segment_is_valid(seg, tld.segments if tld is not None else None)
        except HeapIntegrityError as e:
            self._fail(e, "after a completed operation")

    def _owner_tld(self, seg: Any) -> Any:
        for tld in self.mi.tlds:
            if tld is not None and tld.thread_id == seg.thread_id:
                return tld
        return None

    # -----------------------------------------------------------------------------------------
    # The full check (end of run, or on demand)

    def full_check(self) -> None:
        """Every structure of the allocator, and every live block."""
        self.full_checks += 1
        mi = self.mi
        try:
            for tld in mi.tlds:
                if tld is None:
                    continue
                h = tld.heaps
                while h is not None:
                    if not h.deleted:
                        heap_queues_are_valid(h)
                    h = h.next
                if tld.heap_backing is not None:
                    span_queues_are_valid(tld.segments)
            in_lists: set[int] = set()
            for seg in list(mi.segments.values()):
                tld = self._owner_tld(seg) if seg.thread_id else None
                segment_is_valid(seg, tld.segments if tld is not None else None)
                i = seg.segment_info_slices
                while i < seg.slice_entries:
                    s = slice_at(seg, i)
                    if s.xblock_size > 1:
                        for lst in page_is_valid(s):
                            in_lists.update(lst)
                    i += s.slice_count
            self.check_pool()
        except HeapIntegrityError as e:
            self._fail(e, "full check")
        for b, r in self.live.items():
            if b in in_lists:
                raise ViolationError("heap-integrity", f"live block {b:#x} is on a free list",
                                     r.history())
            seg = mi.segments.get((b - 1) & ~MI_SEGMENT_MASK)
            if seg is None:
                raise ViolationError("heap-integrity",
                                     f"live block {b:#x} is in no segment (the segment was freed)",
                                     r.history())
            page = slice_first(seg, slice_at(seg, (b - seg.base) >> MI_SEGMENT_SLICE_SHIFT))
            if page.xblock_size <= 1:
                raise ViolationError("heap-integrity",
                                     f"live block {b:#x} is in a page that was freed", r.history())

    def check_pool(self) -> None:
        """The abandoned and visited lists hold abandoned segments, each once; every segment
        with `thread_id` 0 is on one of them."""
        mi = self.mi
        raw = mi.mem.raw_load
        seen: set[int] = set()
        pool = mi.pool
        for head in (raw(pool.addr + MI_POOL_OFFSET_ABANDONED, 8) & ~MI_TAGGED_MASK,
                     raw(pool.abandoned_visited, 8)):
            p = head
            while p:
                seg = mi.segments.get(p)
                if seg is None:
                    raise HeapIntegrityError(f"abandoned list holds {p:#x}, not a live segment")
                if p in seen:
                    raise HeapIntegrityError(f"segment {p:#x} is twice on the abandoned lists")
                seen.add(p)
                if seg.thread_id != 0:
                    raise HeapIntegrityError(f"{seg!r} is on the abandoned list but owned")
                if seg.abandoned != seg.used:
                    raise HeapIntegrityError(f"{seg!r} is on the abandoned list with pages "
                                             f"not abandoned")
                p = raw(p + MI_SEGMENT_OFFSET_ABANDONED_NEXT, 8)
        for seg in mi.segments.values():
            if seg.thread_id == 0 and seg.base not in seen:
                raise HeapIntegrityError(f"{seg!r} is abandoned but on no abandoned list")

    # -----------------------------------------------------------------------------------------
    # Convenience for tests

    def page_blocks(self, page: Any) -> tuple[list[int], list[int], list[int]]:
        return page_lists(page)


def install(rt: "Runtime") -> HeapChecker:
    """Add the heap oracles to `rt` (once)."""
    found = HeapChecker.find(rt)
    if found is not None:
        return found
    checker = HeapChecker(rt)
    rt.add_observer(checker)
    return checker
