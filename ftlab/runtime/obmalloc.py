"""Delayed freeing and delayed page reuse: the free-threaded parts of `Objects/obmalloc.c`
(section "Delayed freeing support for Py_GIL_DISABLED" and the `_PyMem_mi_*` hooks that
CPython's copy of mimalloc calls).

Both mechanisms keep memory that a thread may still read without a lock (a list's old item
array, a dict's old keys, the header of a freed object) from being reused until QSBR says every
thread attached at the unlink has passed a quiescent state (`ftlab.runtime.qsbr`).

Delayed frees (`free_delayed`, C's `_PyMem_FreeDelayed`)
-------------------------------------------------------
- A writer that has unlinked a block calls `free_delayed(t, ptr, size)`. The block is put, with
  a QSBR goal, at the tail of the thread's queue `t.mem_free_queue`: a list of 4096-byte chunks
  (`PyMem_Calloc`ed from the MEM heap, in simulated memory) of WORK_ITEMS_PER_CHUNK (254)
  items `(ptr, qsbr_goal)`; writes go to the last chunk, reads come from the first.
- `process_queue` frees items in FIFO order and stops at the first whose goal `poll` does not
  report reached (no skipping: later goals are never smaller). It advances `rd_idx` before
  freeing an item, because the free may re-enter. A drained chunk is freed, except that the
  thread queue keeps its last chunk (indices reset to 0) to avoid re-allocation churn.
- `process_delayed` (`_PyMem_ProcessDelayed`): the thread's own queue, then the interpreter
  queue if its `has_work` flag is set and a non-blocking try-lock of its mutex succeeds.
  Triggers: the chunk that just became full; 3.14: `_Py_HandlePending` when the thread's
  `qsbr.should_process` is set (registered with `Runtime.add_pending`; it has no eval-breaker
  bit of its own, so it waits for some event: reference §2.6, unverified in CPython); the GC
  with the world stopped (`gc.process_delayed_frees`: 3.14 `process_delayed_no_dealloc`,
  3.13.0 `process_delayed` of each thread).
- Thread exit (`abandon_delayed`, `_PyMem_AbandonDelayed`, from `ThreadState.exit`): an empty
  queue or a single drained chunk is simply freed; otherwise the queue is appended to the
  interpreter queue under its mutex and `has_work` is set. 3.14 (gh-130794) also processes the
  interpreter queue right there, with the exiting thread's QSBR state, so that many short-lived
  threads cannot make it grow without bound.
- Immediate free when the interpreter is finalizing or the world is stopped (no thread but the
  caller is attached, so nobody can hold the pointer); `fini_delayed` (`_PyMem_FiniDelayed`)
  frees whatever is left at interpreter finalization.
- Goals: 3.13.0 `deferred_advance` (a real advance on every 10th call). 3.14 (gh-133136):
  `should_advance_qsbr_for_free` advances for a block over 1 MiB, or once more than 127 items
  or 1 MiB are deferred since the last advance, and then sets `should_process`; otherwise the
  goal is `shared_next` (`wr_seq + 2`, not written).

Invariants: an item is freed only after `poll(goal)` said yes (or immediately, in the cases
above); each queue is FIFO; at most one empty chunk is kept, and only on a thread queue; the
interpreter queue is only processed by the holder of its mutex.

Delayed page reuse (`QsbrPageHooks`, C's `_PyMem_mi_page_*` / `_PyMem_mi_heap_collect_qsbr`)
-------------------------------------------------------------------------------------------
An empty mimalloc page of a heap with `page_use_qsbr` (OBJECT, GC, GC_PRE; not MEM) is not given
back to its segment at once: `page_maybe_free` gives it a goal and appends it to the current
thread's page list; it stays in its size-class queue, so the heap can still allocate from it,
which cancels the pending free (`page_clear_qsbr`, called by mimalloc wherever it picks a page to
allocate from or finds its `local_free` non-empty). `heap_collect_qsbr` walks the list in FIFO
order when mimalloc needs a fresh page, before a large or huge allocation and at heap
collection: a page that is no longer all free is dropped from the list, an all-free page whose
goal `poll` reports reached is freed, and the walk stops at the first all-free page whose goal
is not reached. At thread exit a waiting page is abandoned with its goal (`page_unlink_qsbr`);
a thread that reclaims the segment frees such a page only once `goal_reached`
(`page_is_safe_to_free`) and otherwise puts it on its own list with the old goal
(`page_reclaimed`). Goals: 3.13.0 `deferred_advance`; 3.14 advances when the page's
`capacity * block_size` exceeds QSBR_PAGE_MEM_LIMIT (81,920 bytes) or the pages deferred since
the last advance add up to more than that, else `shared_next`.

Invariants (reference §1.3): a QSBR page reaches `page_free` only all free with its goal reached
(I2); `qsbr_linked` implies a goal and exactly one list, goal 0 implies unlinked, except
abandoned pages, which are unlinked and keep their goal (I3); allocating from a page clears its
goal (I4). The `premature-reuse` oracle (`ftlab.check.reuse`) checks the consequence on memory.

Where the model differs from C: the chunk list is a Python list (C's intrusive `llist_node`s),
while the chunks' indices and items are in simulated memory (plain accesses, seen by the race
detector). The page lists are as in C: each page's `qsbr_node` is in its page record and each
thread's sentinel `mimalloc.page_list` in its thread state, linked and walked with the plain
accesses of `pycore_llist.h` (`ftlab.runtime.llist`), so a thread that touches a list it does
not own without the stop-the-world is a data race; `QsbrPageHooks.page_list(t)` reads one raw. C 3.13.0 passes no size to
`_PyMem_FreeDelayed`; the model takes one anyway, for the statistics. A chunk allocation never
fails, so the stop-the-world fallback of `free_delayed` is not modelled; nor is
`_PyMem_ProcessDelayedNoDealloc` (the GC's variant).

CPython main (version "main", gh-145615, PR #145626): a page can be emptied by a thread that
does not own it, with the world stopped: the GC's heap visit processes another heap's delayed
frees (`_mi_heap_delayed_free_partial`), whose last block retires the page through
`_PyMem_mi_page_maybe_free`. Main links the page on its owner's list (the tstate of the page's
heap's tld), since only the owner walks its list and may free the page; 3.13 and 3.14 before
the fix link it on the current thread's (mutation `qsbr-page-list-current-thread`). A page
retired from the full queue is moved back to its size-class queue (`_mi_page_unfull`) before it
waits, since allocation never searches the full queue; before the fix it stayed there, stranded
until its goal freed it (`qsbr-page-stranded`). The third part of PR #145626 (the goal cleared
in `_mi_page_thread_free_collect` only when `used == 0`) is not modelled: the fixed source
could not be read, and the reference's one-line summary does not say where a page that is
reused while listed (allocated from again, `used > 0`) loses its goal. Taken literally it
would keep a stale goal on such a page, so its next `_PyMem_mi_page_maybe_free` could free
it at that old goal while a lock-free reader still holds a block freed since; modelling it
needs the fixed `page.c`/`obmalloc.c`. The `page-list`
oracle (`ftlab.check.pagelist`) walks the lists in memory.

Block counting (`get_num_global_allocated_blocks`, `sys.getallocatedblocks()`, gh-115184)
-----------------------------------------------------------------------------------------
The live blocks of the interpreter, for regrtest's `-R` leak hunts: with the world stopped and
HEAD_LOCK held, the sum of `used` over every page of every heap of every thread state and of
every page of the abandoned pool, each page force-collected first (`_mi_heap_area_init`) so
that frees by other threads waiting on its `xthread_free` are not counted as live. Blocks
waiting in a delayed-free queue or on a QSBR page list are still allocated. Invariant (oracle
`block-count`): the count equals the number of blocks handed out and not freed at that moment.

Mutations: `no-free-delayed` (`free_delayed` frees at once), `no-page-delay` (`page_maybe_free`
frees at once), `free-delayed-stale-goal` (an item's goal is the write sequence read before the
advance), `reclaim-ignores-goal` (`page_is_safe_to_free` frees an abandoned all-free page
without looking at its goal); block counting: `blockcount-skips-abandoned` (the abandoned pool is not
visited: dead threads' blocks vanish until a thread reclaims them), `blockcount-no-stw` (the
pages are walked, and collected, while their owners run), `blockcount-no-collect` (`used` is
read before the cross-thread frees are collected).

Statistics (`rt.stats`): `delayed_items`, `delayed_bytes` (what the queues hold now) and their
`_peak`s, `delayed_queued`, `delayed_freed`; `qsbr_pages`, `qsbr_page_bytes` (pages waiting on
some thread's list) and their `_peak`s, `qsbr_pages_deferred`, `qsbr_pages_freed`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ftlab.runtime import qsbr as _qsbr
from ftlab.runtime.llist import (
    LLIST_NEXT, llist_empty, llist_insert_tail, llist_nodes_raw, llist_remove)
from ftlab.runtime.mimalloc.init import MiHooks
from ftlab.runtime.mimalloc.segment import HeapIntegrityError
from ftlab.runtime.mimalloc.page import (
    page_block_size, page_free, page_qsbr_goal, page_set_qsbr_goal, page_unfull)
from ftlab.runtime.mimalloc.page_queue import IN_FULL, page_queue_of
from ftlab.runtime.mimalloc.types import HEAP_TAG_COUNT, MI_SEGMENT_ALIGN, MI_SEGMENT_OFFSET_SLICES
from ftlab.runtime.mimalloc.visit import abandoned_pool_visit_blocks, heap_visit_blocks
from ftlab.sim.atomics import RELAXED
from ftlab.sim.memory import Tag

if TYPE_CHECKING:
    from typing import Callable

    from ftlab.runtime.mimalloc.types import Heap, Page, PageQueue
    from ftlab.runtime.pystate import Runtime, ThreadState


# ---------------------------------------------------------------------------------------------
# Constants (Objects/obmalloc.c)

WORK_ITEMS_PER_CHUNK = 254              # so that a chunk is 4096 bytes on 64-bit platforms
WORK_ITEM_SIZE = 16                     # struct _mem_work_item: uintptr_t ptr, uint64_t qsbr_goal
CHUNK_NODE = 0                          # struct llist_node (2 pointers; the links are Python)
CHUNK_RD_IDX = 16
CHUNK_WR_IDX = 24
CHUNK_ARRAY = 32
SIZEOF_MEM_WORK_CHUNK = CHUNK_ARRAY + WORK_ITEMS_PER_CHUNK * WORK_ITEM_SIZE
_CHUNK_LAYOUT = ((CHUNK_NODE, "node", 0, {}), (CHUNK_RD_IDX, "rd_idx", 0, {}),   # block_layout
                 (CHUNK_WR_IDX, "wr_idx", 0, {}),
                 (CHUNK_ARRAY, "array", WORK_ITEM_SIZE, {0: "ptr", 8: "qsbr_goal"}))
assert SIZEOF_MEM_WORK_CHUNK == 4096, "struct _mem_work_chunk is one 4 KiB page"

OBJECT_ITEM_BIT = 0x01                  # low bit of `ptr`: an object item (see free_work_item)

# gh-133136 (3.14): when to advance instead of deferring
QSBR_DEFERRED_LIMIT = 127               # items deferred since the last advance
QSBR_FREE_MEM_LIMIT = 1024 * 1024       # bytes deferred since the last advance, or one block
QSBR_PAGE_MEM_LIMIT = 4096 * 20         # bytes of pages deferred since the last advance

INTERP_QUEUE_HAS_WORK = 0               # int has_work, the only field kept in simulated memory
SIZEOF_INTERP_QUEUE = 16


def _gh145615(rt: "Runtime") -> bool:
    """CPython main's QSBR page lists (gh-145615, PR #145626): a deferred page goes on its
    owner's list and leaves the full queue."""
    return rt.config.version == "main"


def _revised(rt: "Runtime") -> bool:
    """The gh-133136 policy (3.14) rather than 3.13.0's deferred advance."""
    return rt.config.version != "3.13.0"


# ---------------------------------------------------------------------------------------------
# Data structures

class WorkChunk:
    """`struct _mem_work_chunk` at `addr` (4096 bytes of the MEM heap): `rd_idx`, `wr_idx` and
    the items are in simulated memory; `sizes` is the model's record of each item's size (for
    the statistics; not in C)."""

    __slots__ = ("addr", "sizes")

    def __init__(self, addr: int) -> None:
        self.addr = addr
        self.sizes = [0] * WORK_ITEMS_PER_CHUNK

    def __repr__(self) -> str:
        return f"<work chunk {self.addr:#x}>"


def _rd_idx(t: "ThreadState", buf: WorkChunk) -> int:
    return t.mem.load_u64(buf.addr + CHUNK_RD_IDX)


def _wr_idx(t: "ThreadState", buf: WorkChunk) -> int:
    return t.mem.load_u64(buf.addr + CHUNK_WR_IDX)


def _set_rd_idx(t: "ThreadState", buf: WorkChunk, i: int) -> None:
    t.mem.store_u64(buf.addr + CHUNK_RD_IDX, i, Tag.META)


def _set_wr_idx(t: "ThreadState", buf: WorkChunk, i: int) -> None:
    t.mem.store_u64(buf.addr + CHUNK_WR_IDX, i, Tag.META)


def _item(t: "ThreadState", buf: WorkChunk, i: int) -> tuple[int, int]:
    a = buf.addr + CHUNK_ARRAY + i * WORK_ITEM_SIZE
    return t.mem.load_u64(a), t.mem.load_u64(a + 8)


class InterpFreeQueue:
    """`struct _Py_mem_interp_free_queue` (`interp->mem_free_queue`): `has_work` is a relaxed
    atomic int in simulated memory; `head` (the chunks) is protected by `mutex`."""

    __slots__ = ("addr", "mutex", "head")

    def __init__(self, rt: "Runtime") -> None:
        self.addr = rt.raw_calloc(SIZEOF_INTERP_QUEUE)
        rt.name_struct(self.addr, SIZEOF_INTERP_QUEUE, "mem_free_queue",
                       {INTERP_QUEUE_HAS_WORK: "has_work"})
        self.mutex = rt.mutex("mem_free_queue.mutex")
        self.head: list[WorkChunk] = []

    @property
    def has_work_addr(self) -> int:
        return self.addr + INTERP_QUEUE_HAS_WORK


class ObmallocState:
    """The interpreter's obmalloc state of one run (`Runtime.obmalloc`): the interpreter free
    queue and the page hooks, which it installs into the runtime's mimalloc; 3.14's processing
    on `should_process` is registered as pending work of `_Py_HandlePending`."""

    __slots__ = ("rt", "interp_queue", "hooks", "held_items", "held_bytes", "page_bytes")

    def __init__(self, rt: "Runtime") -> None:
        self.rt = rt
        self.interp_queue = InterpFreeQueue(rt)
        self.hooks = QsbrPageHooks(self)
        rt.mimalloc.hooks = self.hooks
        self.held_items = 0
        self.held_bytes = 0
        self.page_bytes = 0
        for key in ("delayed_items", "delayed_items_peak", "delayed_bytes", "delayed_bytes_peak",
                    "delayed_queued", "delayed_freed", "qsbr_pages", "qsbr_pages_peak",
                    "qsbr_page_bytes", "qsbr_page_bytes_peak", "qsbr_pages_deferred",
                    "qsbr_pages_freed"):
            rt.stats[key] = 0
        if _revised(rt):
            rt.add_pending("process_delayed", process_delayed, when=_should_process)

    # -- statistics --

    def _held(self, items: int, nbytes: int) -> None:
        stats = self.rt.stats
        self.held_items += items
        self.held_bytes += nbytes
        stats["delayed_items"] = self.held_items
        stats["delayed_bytes"] = self.held_bytes
        if self.held_items > stats["delayed_items_peak"]:
            stats["delayed_items_peak"] = self.held_items
        if self.held_bytes > stats["delayed_bytes_peak"]:
            stats["delayed_bytes_peak"] = self.held_bytes

    def _pages(self, pages: int, nbytes: int) -> None:
        stats = self.rt.stats
        self.page_bytes += nbytes
        stats["qsbr_pages"] += pages
        stats["qsbr_page_bytes"] = self.page_bytes
        if stats["qsbr_pages"] > stats["qsbr_pages_peak"]:
            stats["qsbr_pages_peak"] = stats["qsbr_pages"]
        if self.page_bytes > stats["qsbr_page_bytes_peak"]:
            stats["qsbr_page_bytes_peak"] = self.page_bytes


def _should_process(t: "ThreadState") -> bool:
    """`_Py_qsbr_should_process` (3.14), as `_Py_HandlePending` asks it."""
    return t.qsbr is not None and t.qsbr.should_process


# ---------------------------------------------------------------------------------------------
# Freeing an item

async def free_work_item(t: "ThreadState", ptr: int,
                         cb: "Callable[[int], None] | None" = None) -> None:
    """`free_work_item`: `PyMem_Free` a plain pointer. An object item (low bit set) is
    `PyObject_Free`d in 3.13.0 (`_PyObject_FreeDelayed`) and `Py_DECREF`ed in 3.14
    (`_PyObject_XDecRefDelayed`); with the GC's callback `cb` (world stopped, no destructor
    may run) the decref is an explicit merge and an object left at 0 is handed to `cb`."""
    if ptr & OBJECT_ITEM_BIT:
        op = ptr - OBJECT_ITEM_BIT
        if _revised(t.rt):
            if cb is not None:
                from ftlab.runtime.object import explicit_merge_refcount
                assert t.rt.world_stopped, "the no-dealloc variant runs with the world stopped"
                if await explicit_merge_refcount(t, op, -1) == 0:
                    cb(op)
                return
            assert not t.rt.world_stopped, "an object item is decref'd with the world stopped"
            await t.decref(op)
        else:
            await t.object_free(op)
    else:
        await t.free(ptr)


# ---------------------------------------------------------------------------------------------
# Goals

def should_advance_qsbr_for_free(q: "_qsbr.QsbrThreadState", size: int) -> bool:
    """`should_advance_qsbr_for_free` (3.14): advance (and ask for processing) for a block
    over 1 MiB, or when more than 127 items or 1 MiB are deferred since the last advance."""
    if size > QSBR_FREE_MEM_LIMIT:
        q.deferred_count = 0
        q.deferred_memory = 0
        q.should_process = True
        return True
    q.deferred_count += 1
    q.deferred_memory += size
    if q.deferred_count > QSBR_DEFERRED_LIMIT or q.deferred_memory > QSBR_FREE_MEM_LIMIT:
        q.deferred_count = 0
        q.deferred_memory = 0
        q.should_process = True
        return True
    return False


def should_advance_qsbr_for_page(q: "_qsbr.QsbrThreadState", page: "Page") -> bool:
    """`should_advance_qsbr_for_page` (3.14): advance for a page over 81,920 bytes
    (`capacity * block_size`), or when the pages deferred since the last advance add up to
    more than that."""
    page_size = page.capacity * page_block_size(page)
    if page_size > QSBR_PAGE_MEM_LIMIT:
        q.deferred_page_memory = 0
        return True
    q.deferred_page_memory += page_size
    if q.deferred_page_memory > QSBR_PAGE_MEM_LIMIT:
        q.deferred_page_memory = 0
        return True
    return False


async def _free_goal(t: "ThreadState", size: int) -> int:
    q = t.qsbr
    if t.rt.mutated("free-delayed-stale-goal"):
        # The write sequence before any advance: a goal already reached by every thread that
        # has quiesced since the last advance, even one that loaded the pointer afterwards.
        stale = await _qsbr.shared_current(q.shared)
        await _free_goal_faithful(t, q, size)
        return stale
    return await _free_goal_faithful(t, q, size)


async def _free_goal_faithful(t: "ThreadState", q: "_qsbr.QsbrThreadState", size: int) -> int:
    if not _revised(t.rt):
        return await _qsbr.deferred_advance(q)
    if should_advance_qsbr_for_free(q, size):
        return await _qsbr.advance(q)
    return await _qsbr.shared_next(q)


async def _page_goal(t: "ThreadState", page: "Page") -> int:
    q = t.qsbr
    if not _revised(t.rt):
        return await _qsbr.deferred_advance(q)
    if should_advance_qsbr_for_page(q, page):
        return await _qsbr.advance(q)
    return await _qsbr.shared_next(q)


# ---------------------------------------------------------------------------------------------
# _PyMem_FreeDelayed

async def free_delayed(t: "ThreadState", ptr: int, size: int = 0) -> None:
    """`_PyMem_FreeDelayed(ptr, size)`: free `ptr` (a `PyMem_Malloc` block the caller has just
    unlinked from a structure that other threads read without a lock) once every thread
    attached now has passed a quiescent state. NULL is ignored (3.14)."""
    if ptr == 0:
        return
    assert not ptr & OBJECT_ITEM_BIT, "a PyMem block is at least 2-byte aligned"
    await _free_delayed(t, ptr, size)


async def object_free_delayed(t: "ThreadState", op: int) -> None:
    """The object variant: 3.13.0's `_PyObject_FreeDelayed(op)` (`PyObject_Free` once safe)
    or 3.14's `_PyObject_XDecRefDelayed(op)` (`Py_DECREF` once safe; NULL ignored)."""
    if op == 0:
        return
    await _free_delayed(t, op | OBJECT_ITEM_BIT, 0)


async def _free_delayed(t: "ThreadState", ptr: int, size: int) -> None:
    """`free_delayed(ptr, size)` of obmalloc.c."""
    rt = t.rt
    if not (ptr & OBJECT_ITEM_BIT and _revised(rt)):
        # The memory is unlinked now: what the premature-reuse oracle protects. (3.14's object
        # items are deferred decrefs, not frees.)
        rt.observer.mem_free_delayed(t, ptr & ~OBJECT_ITEM_BIT, size)
    if rt.mutated("no-free-delayed"):
        await free_work_item(t, ptr)
        return
    if rt.finalizing or rt.world_stopped:
        # Free immediately during interpreter shutdown or if the world is stopped: no other
        # thread is attached, so none can hold the pointer.
        assert not (rt.world_stopped and ptr & OBJECT_ITEM_BIT), \
            "object items cannot be freed with the world stopped"
        await free_work_item(t, ptr)
        return

    queue = t.mem_free_queue
    buf = queue[-1] if queue else None      # try to re-use the last chunk
    if buf is not None and _wr_idx(t, buf) == WORK_ITEMS_PER_CHUNK:
        buf = None                          # already full
    if buf is None:
        addr = await t.malloc(SIZEOF_MEM_WORK_CHUNK)   # PyMem_Calloc(1, sizeof(*buf))
        t.rt.observer.block_layout(addr, t.block, "mem_free_queue", _CHUNK_LAYOUT)
        t.mem.fill(addr, SIZEOF_MEM_WORK_CHUNK, 0, Tag.META)
        buf = WorkChunk(addr)
        queue.append(buf)                   # llist_insert_tail

    wr = _wr_idx(t, buf)
    assert wr < WORK_ITEMS_PER_CHUNK, "the tail work chunk is full after a new one was appended"
    goal = await _free_goal(t, size)
    item = buf.addr + CHUNK_ARRAY + wr * WORK_ITEM_SIZE
    t.mem.store_u64(item, ptr, Tag.META)
    t.mem.store_u64(item + 8, goal, Tag.META)
    buf.sizes[wr] = size
    _set_wr_idx(t, buf, wr + 1)
    rt.stats["delayed_queued"] += 1
    rt.obmalloc._held(1, size)
    if t.rt.machine.trace is not None:
        t.rt.machine.record(t.vt, f"free_delayed {ptr:#x} ({size} bytes), goal {goal}")

    if wr + 1 == WORK_ITEMS_PER_CHUNK:
        # 3.13.0: the main trigger; 3.14: a safety valve (the eval breaker normally runs it).
        await process_delayed(t)


# ---------------------------------------------------------------------------------------------
# Processing

async def process_queue(t: "ThreadState", head: list[WorkChunk], keep_empty: bool,
                        cb: "Callable[[int], None] | None" = None) -> None:
    """`process_queue`: free the items of `head` whose goals `t`'s QSBR state reports reached,
    in FIFO order, stopping at the first that is not; free drained chunks, keeping the last one
    if `keep_empty` (the thread queue)."""
    state = t.rt.obmalloc
    while head:
        buf = head[0]
        rd = _rd_idx(t, buf)
        if rd < _wr_idx(t, buf):
            ptr, goal = _item(t, buf, rd)
            # `tstate->qsbr` read for every item, as C does: the previous item's free may have
            # run a destructor that blocked (detached) while another thread grew the QSBR
            # array, which moves this thread's slot.
            if not await _qsbr.poll(t.qsbr, goal):
                return
            size = buf.sizes[rd]
            state._held(-1, -size)
            t.rt.stats["delayed_freed"] += 1
            if t.rt.mutated("process-queue-rd-after-free"):
                await free_work_item(t, ptr, cb)
                _set_rd_idx(t, buf, rd + 1)
                continue
            # Before the free: the free may run a destructor whose Python code reaches an
            # eval-breaker check and processes this queue again (re-entrant process_queue).
            _set_rd_idx(t, buf, rd + 1)
            await free_work_item(t, ptr, cb)
            continue
        if keep_empty and len(head) == 1:
            # Keep the last chunk in the queue to reduce re-allocations.
            _set_rd_idx(t, buf, 0)
            _set_wr_idx(t, buf, 0)
            return
        head.pop(0)                         # llist_remove
        await t.free(buf.addr)


async def process_interp_queue(t: "ThreadState",
                               cb: "Callable[[int], None] | None" = None) -> None:
    """`process_interp_queue`: only if `has_work` is set and the mutex is free (a try-lock:
    processing is opportunistic and must not block the eval loop)."""
    queue = t.rt.obmalloc.interp_queue
    mem = t.mem
    if not await mem.load(queue.has_work_addr, 4, RELAXED):
        return
    if await queue.mutex.try_lock():        # _PyMutex_LockTimed(&mutex, 0, 0)
        await process_queue(t, queue.head, False, cb)
        await mem.store(queue.has_work_addr, 1 if queue.head else 0, 4, RELAXED)
        await queue.mutex.unlock()


async def process_delayed(t: "ThreadState") -> None:
    """`_PyMem_ProcessDelayed`: the thread's queue (keeping one empty chunk), then the
    interpreter's. 3.14 first clears `should_process`."""
    if _revised(t.rt):
        t.qsbr.should_process = False
    await process_queue(t, t.mem_free_queue, True)
    await process_interp_queue(t)


async def process_delayed_no_dealloc(t: "ThreadState", cb: "Callable[[int], None]") -> None:
    """`_PyMem_ProcessDelayedNoDealloc` (3.14, the GC with the world stopped): as
    `process_delayed`, but an object item whose count reaches 0 is handed to `cb` instead of
    being deallocated."""
    await process_queue(t, t.mem_free_queue, True, cb)
    await process_interp_queue(t, cb)


# ---------------------------------------------------------------------------------------------
# Thread exit and finalization

async def abandon_delayed(t: "ThreadState") -> None:
    """`_PyMem_AbandonDelayed` (from `PyThreadState_Clear`, the thread still attached): hand a
    non-empty queue to the interpreter; 3.14 (gh-130794) then processes the interpreter queue
    under its mutex with the exiting thread's QSBR state."""
    queue = t.mem_free_queue
    if not queue:
        return
    buf = queue[0]
    if _rd_idx(t, buf) == _wr_idx(t, buf):
        # One drained chunk (the one kept empty): just free it.
        queue.pop(0)
        assert not queue, "a drained first chunk is the only one"
        await t.free(buf.addr)
        return
    interp = t.rt.obmalloc.interp_queue
    await t.lock(interp.mutex)
    interp.head.extend(queue)               # llist_concat
    queue.clear()
    if _revised(t.rt):
        await process_queue(t, interp.head, False)
        has_work = 1 if interp.head else 0
    else:
        has_work = 1
    await t.mem.store(interp.has_work_addr, has_work, 4, RELAXED)
    await interp.mutex.unlock()


async def fini_delayed(t: "ThreadState") -> None:
    """`_PyMem_FiniDelayed`: at interpreter finalization (no other thread exists) free every
    item left on the interpreter queue, without waiting for goals."""
    queue = t.rt.obmalloc.interp_queue
    state = t.rt.obmalloc
    head = queue.head
    while head:
        buf = head[0]
        rd = _rd_idx(t, buf)
        if rd < _wr_idx(t, buf):
            ptr, _goal = _item(t, buf, rd)
            _set_rd_idx(t, buf, rd + 1)
            state._held(-1, -buf.sizes[rd])
            t.rt.stats["delayed_freed"] += 1
            await free_work_item(t, ptr)
            continue
        head.pop(0)
        await t.free(buf.addr)


# ---------------------------------------------------------------------------------------------
# Delayed page reuse: the hooks CPython's mimalloc calls

def page_of_qsbr_node(mi, node: int) -> "Page":
    """`llist_data(node, mi_page_t, qsbr_node)`: the page record whose `qsbr_node` is at
    `node` (its segment's `slices[]` entry)."""
    base = node & ~(MI_SEGMENT_ALIGN - 1)
    segment = mi.segments.get(base)
    i = (node - base - MI_SEGMENT_OFFSET_SLICES) // mi.sizeof_page
    page = segment.slices[i] if segment is not None and 0 <= i < len(segment.slices) else None
    if page is None or page.qsbr_node_addr != node:
        raise HeapIntegrityError(f"a QSBR page list links {node:#x}, which is not the "
                                 "qsbr_node of a page record")
    return page


class QsbrPageHooks(MiHooks):
    """`_PyMem_mi_page_clear_qsbr`, `_PyMem_mi_page_is_safe_to_free`,
    `_PyMem_mi_page_maybe_free`, `_PyMem_mi_page_reclaimed`, `_PyMem_mi_heap_collect_qsbr`
    and `_mi_page_abandon`'s unlink (module docstring). Each acts for the *current* thread,
    as C does with `_PyThreadState_GET()`."""

    def __init__(self, state: ObmallocState) -> None:
        self.state = state
        self.rt = state.rt
        self.mem = state.rt.mem

    def _current(self) -> "ThreadState":
        return self.rt.mimalloc.tld_of_current().tstate

    def page_list(self, t: "ThreadState") -> list["Page"]:
        """Thread `t`'s waiting pages, oldest first, read raw from its list in memory (for
        oracles, tests and reports: not an access of the run)."""
        if t.mimalloc is None or not t.mimalloc.page_list:
            return []
        mi = self.rt.mimalloc
        return [page_of_qsbr_node(mi, n) for n in llist_nodes_raw(self.mem, t.mimalloc.page_list)]

    # -- list links (pycore_llist.h over the pages' `qsbr_node` and the thread's sentinel) --

    def _link(self, t: "ThreadState", page: "Page") -> None:
        """`llist_insert_tail(&tstate->mimalloc.page_list, &page->qsbr_node)`."""
        if page.qsbr_goal == 0 or self.mem.raw_load(page.qsbr_node_addr, 8) != 0:
            raise HeapIntegrityError(
                f"page {page!r} put on {t.name}'s QSBR page list while already linked or "
                f"without a goal (goal {page.qsbr_goal})")
        llist_insert_tail(self.mem, t.mimalloc.page_list, page.qsbr_node_addr)
        self.rt.observer.qsbr_page_linked(t, page)
        self.state._pages(1, page.capacity * page_block_size(page))

    def page_unlink_qsbr(self, page: "Page") -> None:
        """Unlink a listed page: `if (page->qsbr_node.next != NULL) llist_remove(...)`, in
        `_PyMem_mi_page_clear_qsbr` and in `_mi_page_abandon` (which keeps the goal). The
        docstring names no C function, so a timeline shows the caller's."""
        if self.mem.load_u64(page.qsbr_node_addr) != 0:
            llist_remove(self.mem, page.qsbr_node_addr)
            self.rt.observer.qsbr_page_unlinked(page)
            self.state._pages(-1, -(page.capacity * page_block_size(page)))

    def page_clear_qsbr(self, page: "Page") -> None:
        """`_PyMem_mi_page_clear_qsbr`: forget the goal and leave the list (the page is being
        reused, or freed)."""
        page_set_qsbr_goal(page, 0)
        self.page_unlink_qsbr(page)

    # -- the hooks --

    async def page_maybe_free(self, page: "Page", pq: "PageQueue", force: bool) -> bool:
        """`_PyMem_mi_page_maybe_free`: free an all-free page now (True), or give it a fresh goal
        and append it to the current thread's list, leaving it in its queue (False)."""
        assert page.used == 0, "maybe_free of a page with used blocks"
        rt = self.rt
        if not page.use_qsbr or rt.mutated("no-page-delay"):
            await page_free(page, pq, force)
            return True
        t = self._current()
        goal = page_qsbr_goal(page)
        if goal != 0 and await _qsbr.goal_reached(t.qsbr, goal):
            self.page_clear_qsbr(page)
            await page_free(page, pq, force)
            rt.stats["qsbr_pages_freed"] += 1
            return True
        self.page_clear_qsbr(page)
        page.retire_expire = 0
        page_set_qsbr_goal(page, await _page_goal(t, page))
        owner = t
        if _gh145615(rt):
            # The page may be another thread's: with the world stopped the GC processes
            # other heaps' delayed frees (heap visiting), which can empty their pages. Only
            # the owner walks and frees its list (`_PyMem_mi_heap_collect_qsbr`).
            if not rt.mutated("qsbr-page-list-current-thread"):
                owner = page.heap.tld.tstate
            # An emptied full page is retired from the full queue, which allocation never
            # searches: leave it, so the page can serve allocations while it waits.
            if page.flags & IN_FULL and not rt.mutated("qsbr-page-stranded"):
                page_unfull(page)
        self._link(owner, page)
        rt.stats["qsbr_pages_deferred"] += 1
        if rt.machine.trace is not None:
            rt.machine.record(t.vt, f"page {page!r} waits for QSBR goal {page.qsbr_goal}")
        return False

    async def heap_collect_qsbr(self, heap: "Heap") -> None:
        """`_PyMem_mi_heap_collect_qsbr`: walk the current thread's list oldest first: drop the
        pages that were reused, free the all-free ones whose goal is reached, stop at the first
        all-free one whose goal is not."""
        if not heap.page_use_qsbr:
            return
        t = self._current()
        mem = self.mem
        head = t.mimalloc.page_list
        if llist_empty(mem, head):
            return
        rt = self.rt
        mi = rt.mimalloc
        # llist_for_each_safe: the next node is read before the current one is unlinked
        node = mem.load_u64(head + LLIST_NEXT)
        nxt = mem.load_u64(node + LLIST_NEXT)
        while node != head:
            page = page_of_qsbr_node(mi, node)
            if page.used != 0:
                # allocated from at some point after the delayed free
                self.page_clear_qsbr(page)
                rt.stats["qsbr_pages_dropped_reused"] += 1
            else:
                if not await _qsbr.poll(t.qsbr, page_qsbr_goal(page)):
                    break
                self.page_clear_qsbr(page)
                await page_free(page, page_queue_of(page), False)
                rt.stats["qsbr_pages_freed"] += 1
            node = nxt
            nxt = mem.load_u64(node + LLIST_NEXT)
        rt.observer.qsbr_page_list_walked(t)

    async def page_is_safe_to_free(self, page: "Page") -> bool:
        """`_PyMem_mi_page_is_safe_to_free` (reclaim of an abandoned all-free page): only once
        its goal is reached (the cached `rd_seq`, no scan)."""
        assert page.used == 0 and not page.qsbr_linked, (
            "a reclaimed page asked about is not all free, or is still on a QSBR page list")
        goal = page_qsbr_goal(page) if page.use_qsbr else 0
        if goal != 0 and not self.rt.mutated("reclaim-ignores-goal"):
            t = self._current()
            if t is None or t.qsbr is None:
                return False
            return await _qsbr.goal_reached(t.qsbr, goal)
        if page.use_qsbr and self.rt.config.abandoned_page_goal:
            # The proposed fix: goal 0 here means the page was emptied by cross-thread frees,
            # which have no QSBR hook, so no grace period has started. A reader may hold a
            # pointer it loaded before the last free: start one now (the frees happen-before
            # this collect) and keep the page until it ends.
            t = self._current()
            if t is not None and t.qsbr is not None:
                page_set_qsbr_goal(page, await _page_goal(t, page))
                self.rt.stats["qsbr_abandoned_pages_given_goal"] += 1
                if self.rt.machine.trace is not None:
                    self.rt.machine.record(
                        t.vt, f"abandoned page {page!r} emptied remotely waits for QSBR goal"
                        f" {page.qsbr_goal}")
                return False
        return True

    def page_reclaimed(self, page: "Page") -> None:
        """`_PyMem_mi_page_reclaimed`: a page reclaimed with a goal keeps waiting, on the
        reclaiming thread's list, if it is all free; one with live blocks loses its goal."""
        if page_qsbr_goal(page) != 0:
            if page.used == 0:
                assert not page.qsbr_linked, "a reclaimed all-free page is still on a QSBR page list"
                page.retire_expire = 0
                self._link(self._current(), page)
            else:
                self.page_clear_qsbr(page)


# ---------------------------------------------------------------------------------------------
# Block counting (`sys.getallocatedblocks()`, gh-115184)

async def get_mimalloc_allocated_blocks(t: "ThreadState") -> int:
    """`get_mimalloc_allocated_blocks` (caller holds HEAD_LOCK, the world stopped): the sum of
    `area.used` over every heap of every linked thread state, then over the abandoned pool for
    each heap tag. Visiting a page force-collects it first, so `used` includes the frees other
    threads pushed on its `xthread_free` (`blockcount-no-collect` reads it before)."""
    rt = t.rt
    collect = not rt.mutated("blockcount-no-collect")
    allocated_blocks = 0

    def count_blocks(heap, area, block, block_size) -> bool:
        nonlocal allocated_blocks
        allocated_blocks += area.used
        return True

    for p in tuple(rt.threads_head):
        if p.mimalloc is None:
            continue        # linked but not bound yet: C's zeroed heaps have no page
        for heap in p.mimalloc.heaps:
            await heap_visit_blocks(heap, False, count_blocks, collect)
    if not rt.mutated("blockcount-skips-abandoned"):
        for tag in range(HEAP_TAG_COUNT):
            await abandoned_pool_visit_blocks(rt.mimalloc, tag, False, count_blocks, collect)
    return allocated_blocks


async def get_num_global_allocated_blocks(t: "ThreadState") -> int:
    """`get_num_global_allocated_blocks` (`_Py_GetGlobalAllocatedBlocks`, behind
    `sys.getallocatedblocks()`): with the world stopped and HEAD_LOCK held, so no other thread
    allocates, frees, abandons or reclaims while the pages are walked (and collected: the walk
    writes other threads' pages). While the runtime is finalizing no stop is possible and no
    other thread runs, so the count is taken as is. One interpreter, no interpreter leaks:
    `interpreter_leaks` and `last_final_leaks` are 0 in the model. Reported to the oracles
    (`blocks_counted`) before the world restarts, where the count must be exact."""
    rt = t.rt
    if rt.finalizing:
        total = await get_mimalloc_allocated_blocks(t)
        rt.observer.blocks_counted(t, total)
        return total
    stop = not rt.mutated("blockcount-no-stw")
    if stop:
        await rt.stop_the_world(t)          # _PyEval_StopTheWorldAll
    await rt.head_lock.lock()
    total = await get_mimalloc_allocated_blocks(t)
    await rt.head_lock.unlock()
    rt.observer.blocks_counted(t, total)
    if stop:
        await rt.start_the_world(t)
    return total
