"""The free-threaded cyclic garbage collector: `Python/gc_free_threading.c` (3.14/main, with
3.13.0's delayed-free processing where the versions differ).

Allocation counting
-------------------
Every GC object allocation (`gc_alloc`, behind `_PyObject_GC_New`/`NewVar`) calls
`record_allocation`, every `PyObject_GC_Del` calls `record_deallocation`. Each thread buffers
the count in `t.gc.alloc_count`, a plain per-thread int; at +LOCAL_ALLOC_COUNT_THRESHOLD (512)
or -512 it adds the buffer to the interpreter's `young.count` with one atomic add and resets
it. Only an allocation flush may schedule a collection: if `gc_should_collect` (count above the
threshold, and above a quarter of the objects the last collection found alive) and no
collection is running, `_Py_ScheduleGC` sets GC_SCHEDULED in the *allocating* thread's eval
breaker; its next periodic check runs `_Py_RunGC`. Invariant (oracle `gc-count`):
`young.count + sum(alloc_count of every thread) = allocations - deallocations` since the last
reset, counting each buffer from its value at the reset (a collection zeroes `young.count` but
not the buffers). So a collection starts up to 511 allocations per other thread late.

Collection (`gc_collect_main` -> `gc_collect_internal`)
-------------------------------------------------------
`collecting` is CAS'd 0 -> 1 (one collection at a time), then, with the world stopped
(`Runtime.stop_the_world`: no other thread is attached, so nothing touches a refcount, a heap
or a BRC queue):

1. `young.count = 0`; for each thread, `merge_queued_objects`: its BRC queue is emptied and each
   object merged with -1 (`merge_refcount`: plain stores, the world is stopped). A non-GC (or
   untracked) object that reaches 0 gets +1 and goes on `objs_to_decref`, deallocated once the
   world runs again; a GC object at 0 is found as garbage below.
2. `process_delayed_frees`: advance `wr_seq`, a quiescent state for the collector; every other
   thread is detached, so every goal is reached and every delayed free can be done now. 3.14:
   every thread's queue is concatenated onto the collector's and processed with
   `_PyMem_ProcessDelayedNoDealloc` (a deferred decref is an explicit merge; an object that
   reaches 0 goes on `objs_to_decref`: no destructor runs with the world stopped). 3.13.0:
   `_PyMem_ProcessDelayed` of each thread's queue.
3. `deduce_unreachable_heap`, each pass a `gc_visit_heaps` over every thread's GC and GC_PRE
   heaps and the abandoned pool (the object is `block + offset`: +16 with the debug allocator,
   +16 more in GC_PRE for the pre-header). A visitor never allocates or frees (mimalloc could
   reclaim the abandoned segment being walked); CPython disables mimalloc's assertion that a
   heap's delayed frees are processed by its owner, because visiting a heap does that for a
   suspended thread (the model's `free_delayed_block` has no such assertion).
   a. `update_refs`: `ob_tid` of each tracked object becomes gc_refs = its refcount minus the
      references from other tracked objects (`tp_traverse`); UNREACHABLE marks "not proven
      reachable yet". ob_tid is not a thread id until step c restores it.
   b. `mark_heap_visitor`: an object with gc_refs > 0 is referenced from outside: clear
      UNREACHABLE on it and on everything reachable from it.
   c. `scan_heap_visitor`: an unreachable object is merged with +1 (the worklist's reference)
      and pushed on `unreachable`, a worklist linked through `ob_tid` (thread ids are thread
      state addresses, never object addresses); a reachable one gets its `ob_tid` back from
      its segment's `thread_id` (`gc_restore_tid`: 0 for merged objects; an abandoned
      segment's 0 means the owner is gone, so the object is merged).
4. `long_lived_total` is recorded; start the world.
5. `objs_to_decref` are decref'd; `finalize_garbage` calls `tp_finalize` once per object
   (FINALIZED bit), with the world running: a finalizer may resurrect objects.
6. Stop the world again: `handle_resurrected_objects` recomputes the external references of
   the unreachable set in `ob_ref_local` (ob_tid holds the links); a resurrected object and
   everything reachable from it leave the set (their worklist reference dropped). Start.
7. `delete_garbage`: `tp_clear` on each unreachable object still tracked, then the worklist's
   reference is dropped, which frees the cycle.

Not modelled: generations (3.14's young/old counts are one count), the mark-alive pass from
known roots (an optimisation that marks fewer objects UNREACHABLE), deferred reference counts
and thread stacks, weak references, legacy `tp_del` finalizers, `gc_maybe_untrack` of tuples,
freelists, `gc.freeze`.

Mutations: `gc-no-merge` (step 1 skipped: a queued reference looks external, the cycle
survives), `gc-tid-not-restored` (step c leaves gc_refs in a reachable object's `ob_tid`: an
object reachable only from other objects is left with `ob_tid` 0 but not merged, one with
external references with an `ob_tid` that is no thread's; restoring the *collector's* id
instead would be harmless to BRC, which only needs one owner), `gc-skips-abandoned` (`gc_visit_heaps` misses the abandoned pool: a dead
thread's objects are never scanned), `gc-count-lost` (`record_deallocation` resets its buffer
without adding it to the interpreter's count).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ftlab.runtime import obmalloc as _obmalloc
from ftlab.runtime import qsbr as _qsbr
from ftlab.runtime.mimalloc.types import MI_SEGMENT_MASK, HeapTag
from ftlab.runtime.mimalloc.visit import abandoned_pool_visit_blocks, heap_visit_blocks
from ftlab.runtime.object import (
    GC_BITS_FINALIZED,
    GC_BITS_FROZEN,
    GC_BITS_TRACKED,
    GC_BITS_UNREACHABLE,
    IMMORTAL_REFCNT_LOCAL,
    OB_REF_LOCAL,
    OB_REF_SHARED,
    OB_TID,
    PREHEADER_SIZE,
    REF_MERGED,
    REF_ONE,
    REF_SHARED,
    REF_SHARED_FLAG_MASK,
    add_ref_total,
    gc_bits,
    gc_clear_bits,
    gc_set_bits,
    inc_ref_total,
    shared_count,
    type_of,
)
from ftlab.sim.atomics import RELAXED, SEQ_CST
from ftlab.sim.memory import Tag
from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.runtime.pystate import Runtime, ThreadState

LOCAL_ALLOC_COUNT_THRESHOLD = 512       # each thread buffers up to +/- this many
DEFAULT_THRESHOLD = 2000                # _PyGC_InitState: young.threshold

# _PyGC_Reason
REASON_HEAP = "heap"                    # threshold reached (the eval breaker)
REASON_MANUAL = "manual"                # gc.collect()
REASON_SHUTDOWN = "shutdown"

DEBUG_OFFSET = 2 * 8                    # the debug allocator's two words before an object

_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1


def _i32(v: int) -> int:
    v &= _U32
    return v - (1 << 32) if v & (1 << 31) else v


def _i64(v: int) -> int:
    v &= _U64
    return v - (1 << 64) if v & (1 << 63) else v


# ---------------------------------------------------------------------------------------------
# State

class GCThreadState:
    """`struct _gc_thread_state`: the thread's buffered allocation count (plain: only the
    thread itself touches it)."""

    __slots__ = ("alloc_count",)

    def __init__(self) -> None:
        self.alloc_count = 0


class GCState:
    """`struct _gc_runtime_state` of the interpreter. `young.count` and `collecting` are atomic
    ints in simulated memory; the threshold, `enabled` and `long_lived_total` are written only
    by the collector (with `collecting` held) or in set-up."""

    __slots__ = ("rt", "addr", "threshold", "old0_threshold", "enabled", "long_lived_total",
                 "collections", "collected")

    COUNT = 0                           # int young.count
    COLLECTING = 8                      # int collecting

    def __init__(self, rt: "Runtime") -> None:
        from ftlab.runtime.pystate import GC_SCHEDULED_BIT
        self.rt = rt
        self.addr = rt.raw_calloc(16)
        rt.name_struct(self.addr, 16, "gc", {self.COUNT: "young.count",
                                             self.COLLECTING: "collecting"})
        self.threshold = rt.config.gc_threshold
        self.old0_threshold = 10        # != 0: the scaled threshold applies
        self.enabled = True
        self.long_lived_total = 0
        self.collections = 0
        self.collected = 0
        rt.add_pending("gc", run_gc, bit=GC_SCHEDULED_BIT)

    @property
    def count_addr(self) -> int:
        return self.addr + self.COUNT

    @property
    def collecting_addr(self) -> int:
        return self.addr + self.COLLECTING

    def peek_count(self) -> int:
        """`young.count` as stored (for oracles and tests; not an access)."""
        return _i32(self.rt.mem.raw_load(self.count_addr, 4))


def local_threshold(rt: "Runtime") -> int:
    """LOCAL_ALLOC_COUNT_THRESHOLD, or the smaller value a scenario configures to reach a flush
    in a few allocations (`Config.gc_local_threshold`)."""
    return rt.config.gc_local_threshold


# ---------------------------------------------------------------------------------------------
# Allocation counting

async def gc_should_collect(t: "ThreadState") -> bool:
    """`gc_should_collect`."""
    gcstate = t.rt.gc
    count = _i32(await t.mem.load(gcstate.count_addr, 4, RELAXED))
    threshold = gcstate.threshold
    if count <= threshold or threshold == 0 or not gcstate.enabled:
        return False
    # Scale with the live objects to avoid quadratic behaviour; old[0].threshold == 0 is the
    # tests' escape hatch for immediate scheduling.
    return count > gcstate.long_lived_total // 4 or gcstate.old0_threshold == 0


async def record_allocation(t: "ThreadState") -> None:
    """`record_allocation`: buffer +1; flush at the threshold and maybe schedule a GC."""
    g = t.gc
    g.alloc_count += 1
    if g.alloc_count >= local_threshold(t.rt):
        gcstate = t.rt.gc
        # _Py_atomic_add_int (seq_cst); pairs with the relaxed loads of gc_should_collect
        await t.mem.fetch_add(gcstate.count_addr, g.alloc_count & _U32, 4, SEQ_CST)
        g.alloc_count = 0
        if (await gc_should_collect(t)
                and not await t.mem.load(gcstate.collecting_addr, 4, RELAXED)):
            await schedule_gc(t)


async def record_deallocation(t: "ThreadState") -> None:
    """`record_deallocation`: buffer -1; flush at minus the threshold (never schedules)."""
    g = t.gc
    g.alloc_count -= 1
    if g.alloc_count <= -local_threshold(t.rt):
        if not t.rt.mutated("gc-count-lost"):
            await t.mem.fetch_add(t.rt.gc.count_addr, g.alloc_count & _U32, 4, SEQ_CST)
        g.alloc_count = 0


async def schedule_gc(t: "ThreadState") -> None:
    """`_Py_ScheduleGC`: set GC_SCHEDULED in the current thread's eval breaker."""
    from ftlab.runtime.pystate import GC_SCHEDULED_BIT, set_eval_breaker_bit
    if not await t.mem.load(t.eval_breaker_addr, 8, RELAXED) & GC_SCHEDULED_BIT:
        await set_eval_breaker_bit(t, GC_SCHEDULED_BIT)


async def run_gc(t: "ThreadState") -> None:
    """`_Py_RunGC`, from `_Py_HandlePending` when GC_SCHEDULED is set."""
    if not t.rt.gc.enabled:
        return
    await gc_collect_main(t, REASON_HEAP)


async def collect(t: "ThreadState") -> int:
    """`PyGC_Collect` (`gc.collect()`): the number of unreachable objects found."""
    if not t.rt.gc.enabled:
        return 0
    return await gc_collect_main(t, REASON_MANUAL)


# ---------------------------------------------------------------------------------------------
# Header helpers (plain accesses: the world is stopped, or the object is the collector's)

def _load_tid(mem, op: int) -> int:
    return mem.load_u64(op + OB_TID)


def _store_tid(mem, op: int, value: int) -> None:
    mem.store_u64(op + OB_TID, value & _U64, Tag.HEADER)


def _refcnt(mem, op: int) -> int:
    """`Py_REFCNT` (plain loads)."""
    local = mem.load_u32(op + OB_REF_LOCAL)
    return local + shared_count(mem.load_u64(op + OB_REF_SHARED))


def _is_immortal(mem, op: int) -> bool:
    return mem.load_u32(op + OB_REF_LOCAL) == IMMORTAL_REFCNT_LOCAL


def _is_tracked(mem, op: int) -> bool:
    return bool(gc_bits(mem, op) & GC_BITS_TRACKED)


def _is_unreachable(mem, op: int) -> bool:
    return bool(gc_bits(mem, op) & GC_BITS_UNREACHABLE)


def merge_refcount(t: "ThreadState", op: int, extra: int) -> int:
    """`merge_refcount`: fold the count (plus `extra`) into the shared field as MERGED, with
    plain stores (no other thread is attached). Returns the new count."""
    rt = t.rt
    assert rt.world_stopped, "merge_refcount with the world running"
    mem = t.mem
    rt.observer.merge_started(t, op)
    refcount = _refcnt(mem, op) + extra
    add_ref_total(t, extra)                 # Py_REF_DEBUG
    _store_tid(mem, op, 0)
    mem.store_u32(op + OB_REF_LOCAL, 0, Tag.HEADER)
    mem.store_u64(op + OB_REF_SHARED, REF_SHARED(refcount, REF_MERGED), Tag.HEADER)
    rt.observer.merge_finished(t, op, extra)
    return refcount


# ---------------------------------------------------------------------------------------------
# Worklists linked through ob_tid

class Worklist:
    """`struct worklist`: a stack of objects linked through `ob_tid` (0 ends it)."""

    __slots__ = ("mem", "head")

    def __init__(self, mem) -> None:
        self.mem = mem
        self.head = 0

    def push(self, op: int) -> None:
        """`worklist_push`."""
        assert _load_tid(self.mem, op) == 0, "worklist_push of an object whose ob_tid is set"
        _store_tid(self.mem, op, self.head)
        self.head = op

    def __iter__(self):
        """`WORKSTACK_FOR_EACH` (the links are read as the walk goes)."""
        op = self.head
        while op:
            yield op
            op = _load_tid(self.mem, op)

    def remove_if(self, pred: Callable[[int], bool]) -> list[int]:
        """`WORKSTACK_FOR_EACH_ITER` + `worklist_remove` of every object `pred` holds for;
        returns them in list order (ob_tid of each cleared)."""
        removed = []
        prev = 0
        op = self.head
        while op:
            nxt = _load_tid(self.mem, op)
            if pred(op):
                if prev:
                    _store_tid(self.mem, prev, nxt)
                else:
                    self.head = nxt
                _store_tid(self.mem, op, 0)
                removed.append(op)
            else:
                prev = op
            op = nxt
        return removed


async def worklist_pop(t: "ThreadState", wl: Worklist) -> int:
    """`worklist_pop`: the relaxed store of ob_tid = 0 (the world may be running)."""
    op = wl.head
    if op:
        wl.head = _load_tid(t.mem, op)
        await t.mem.store(op + OB_TID, 0, 8, RELAXED, Tag.HEADER)
    return op


class CollectionState:
    """`struct collection_state`."""

    __slots__ = ("reason", "collected", "long_lived_total", "unreachable", "objs_to_decref",
                 "offset_base")

    def __init__(self, t: "ThreadState", reason: str) -> None:
        self.reason = reason
        self.collected = 0
        self.long_lived_total = 0
        self.unreachable = Worklist(t.mem)
        self.objs_to_decref = Worklist(t.mem)
        # Offset of the PyObject from the start of its block: the debug allocator's two words.
        self.offset_base = DEBUG_OFFSET if t.rt.config.debug_allocator else 0


# ---------------------------------------------------------------------------------------------
# Visiting every GC object

async def gc_visit_heaps(t: "ThreadState", state: CollectionState,
                         visitor: Callable[[int], None]) -> None:
    """`gc_visit_heaps` (world stopped, under HEAD_LOCK): `visitor(op)` for every tracked,
    unfrozen object of every thread's GC and GC_PRE heaps and of the abandoned pool. The
    visitor is a plain function: no allocation, no free, no scheduling point."""
    rt = t.rt
    assert rt.world_stopped, "gc_visit_heaps needs the world stopped"
    mem = t.mem
    offset_base = state.offset_base
    offset_pre = offset_base + PREHEADER_SIZE

    def block_visitor(offset: int):
        def visit(heap, area, block, block_size) -> bool:   # op_from_block
            if block is None:
                return True
            op = block + offset
            bits = gc_bits(mem, op)
            if bits & GC_BITS_TRACKED and not bits & GC_BITS_FROZEN:
                visitor(op)
            return True
        return visit

    from ftlab.runtime.pystate import MIMALLOC_INITIALIZED_OFFSET
    await rt.head_lock.lock()
    for p in tuple(rt.threads_head):
        # Pairs with the release store at the end of the thread's tstate_mimalloc_bind.
        if not await mem.load(p.block + MIMALLOC_INITIALIZED_OFFSET, 4, SEQ_CST):
            continue                    # the thread has not bound its heaps yet
        await heap_visit_blocks(p.mimalloc.heaps[HeapTag.GC], True, block_visitor(offset_base))
        await heap_visit_blocks(p.mimalloc.heaps[HeapTag.GC_PRE], True,
                                block_visitor(offset_pre))
    if not rt.mutated("gc-skips-abandoned"):
        mi = rt.mimalloc
        await abandoned_pool_visit_blocks(mi, HeapTag.GC, True, block_visitor(offset_base))
        await abandoned_pool_visit_blocks(mi, HeapTag.GC_PRE, True, block_visitor(offset_pre))
    await rt.head_lock.unlock()


def _traverse(rt: "Runtime", op: int) -> list[int]:
    tp = type_of(rt, op)
    if tp is None or tp.traverse is None:
        return []
    return tp.traverse(rt.mem, op)


# ---------------------------------------------------------------------------------------------
# Step 1 and 2: merging and delayed frees

def queue_untracked_obj_decref(t: "ThreadState", state: CollectionState, op: int) -> None:
    """`queue_untracked_obj_decref`: a dead non-GC object gets +1 and waits on
    `objs_to_decref` for the world to restart (GC objects at 0 are found as garbage)."""
    mem = t.mem
    if not _is_tracked(mem, op):
        shared = mem.load_u64(op + OB_REF_SHARED)
        mem.store_u64(op + OB_REF_SHARED, (shared + REF_ONE) & _U64, Tag.HEADER)
        inc_ref_total(t)                    # Py_REF_DEBUG
        t.rt.observer.ref_added(t, op, "gc objs_to_decref")
        state.objs_to_decref.push(op)


def merge_queued_objects(t: "ThreadState", p: "ThreadState", state: CollectionState) -> None:
    """`merge_queued_objects` for thread `p` (world stopped: no bucket lock)."""
    brc = p.brc
    brc.local_objects_to_merge.extend(brc.objects_to_merge)     # _PyObjectStack_Merge
    brc.objects_to_merge.clear()
    while brc.local_objects_to_merge:
        op = brc.local_objects_to_merge.pop()
        # Subtract one: the queue had a reference.
        if merge_refcount(t, op, -1) == 0:
            queue_untracked_obj_decref(t, state, op)


async def process_delayed_frees(t: "ThreadState", state: CollectionState) -> None:
    """`process_delayed_frees`: in a stop-the-world pause the latest write sequence is
    observable at once, so every queued free is due."""
    rt = t.rt
    await _qsbr.advance(t.qsbr)
    await _qsbr.quiescent_state(t.qsbr)
    if rt.config.version == "3.13.0":
        # 3.13: `_PyMem_ProcessDelayed(p)` of each thread, polling with p's QSBR state (the
        # others are detached, so every goal up to wr_seq is reached); object items are
        # PyObject_Free'd there, no destructor runs.
        await rt.head_lock.lock()
        for p in tuple(rt.threads_head):
            await _obmalloc.process_delayed(p)
        await rt.head_lock.unlock()
        return
    for p in tuple(rt.threads_head):
        if p is not t:
            t.mem_free_queue.extend(p.mem_free_queue)           # llist_concat
            p.mem_free_queue.clear()
    await _obmalloc.process_delayed_no_dealloc(
        t, lambda op: queue_untracked_obj_decref(t, state, op))


# ---------------------------------------------------------------------------------------------
# Step 3: deduce_unreachable_heap

def _maybe_init_refs(mem, op: int) -> None:
    """`gc_maybe_init_refs`: first sight of `op` in this collection: UNREACHABLE, gc_refs 0."""
    if not _is_unreachable(mem, op):
        gc_set_bits(mem, op, GC_BITS_UNREACHABLE)
        _store_tid(mem, op, 0)


def visit_decref(mem, op: int) -> None:
    """`visit_decref`: subtract a reference from a tracked object to `op`."""
    if _is_tracked(mem, op) and not _is_immortal(mem, op) \
            and not gc_bits(mem, op) & GC_BITS_FROZEN:
        _maybe_init_refs(mem, op)
        _store_tid(mem, op, _load_tid(mem, op) - 1)


def update_refs(t: "ThreadState", op: int) -> None:
    """`update_refs`: gc_refs(op) += refcount; gc_refs(child) -= 1 for each reference."""
    mem = t.mem
    if _is_immortal(mem, op):
        _store_tid(mem, op, 0)
        gc_clear_bits(mem, op, GC_BITS_TRACKED | GC_BITS_UNREACHABLE)
        return
    refcount = _refcnt(mem, op)
    if refcount < 0:
        raise ViolationError("refcount", f"the GC's update_refs finds object {op:#x} with a "
                             f"negative refcount {refcount}")
    _maybe_init_refs(mem, op)
    _store_tid(mem, op, _load_tid(mem, op) + refcount)        # gc_add_refs
    for child in _traverse(t.rt, op):
        visit_decref(mem, child)


def mark_reachable(rt: "Runtime", op: int) -> None:
    """`mark_reachable`: clear UNREACHABLE transitively from `op`."""
    mem = rt.mem
    stack: list[int] = []
    while True:
        for child in _traverse(rt, op):             # visit_clear_unreachable
            if _is_unreachable(mem, child):
                if not _is_tracked(mem, child):
                    raise AssertionError(f"mark_reachable: untracked object {child:#x} is "
                                         "marked unreachable")
                gc_clear_bits(mem, child, GC_BITS_UNREACHABLE)
                stack.append(child)
        if not stack:
            return
        op = stack.pop()


def mark_heap_visitor(t: "ThreadState", op: int) -> None:
    """`mark_heap_visitor`: an object with external references is a root."""
    mem = t.mem
    gc_refs = _i64(_load_tid(mem, op))
    if gc_refs < 0:
        raise ViolationError("refcount", f"the GC finds more references to object {op:#x} "
                             f"from tracked objects than its refcount (gc_refs {gc_refs}): "
                             "refcount is too small")
    if _is_unreachable(mem, op) and gc_refs != 0:
        gc_clear_bits(mem, op, GC_BITS_UNREACHABLE)
        mark_reachable(t.rt, op)


def gc_restore_tid(t: "ThreadState", op: int) -> None:
    """`gc_restore_tid`: ob_tid back from the object's segment (0 if merged; an abandoned
    segment's 0 means nobody owns it any more, so merge)."""
    mem = t.mem
    rt = t.rt
    if mem.load_u64(op + OB_REF_SHARED) & REF_SHARED_FLAG_MASK == REF_MERGED:
        _store_tid(mem, op, 0)
        return
    if rt.mutated("gc-tid-not-restored"):
        return                          # ob_tid keeps gc_refs: 0, or no thread's id
    # The segment's thread id: may differ from the object's creator if the segment was
    # abandoned and reclaimed by another thread.
    tid = rt.mimalloc.segments[(op - 1) & ~MI_SEGMENT_MASK].thread_id
    _store_tid(mem, op, tid)
    if tid == 0:
        merge_refcount(t, op, 0)


def scan_heap_visitor(t: "ThreadState", state: CollectionState, op: int) -> None:
    """`scan_heap_visitor`: unreachable objects to the worklist (with a reference), reachable
    ones get their ob_tid back."""
    mem = t.mem
    if _is_unreachable(mem, op):
        merge_refcount(t, op, 1)
        state.unreachable.push(op)
        t.rt.observer.gc_object_unreachable(t, op)
        return
    gc_restore_tid(t, op)
    state.long_lived_total += 1


async def deduce_unreachable_heap(t: "ThreadState", state: CollectionState) -> None:
    """`deduce_unreachable_heap`: three heap passes (update, mark, scan)."""
    await gc_visit_heaps(t, state, lambda op: update_refs(t, op))
    await gc_visit_heaps(t, state, lambda op: mark_heap_visitor(t, op))
    await gc_visit_heaps(t, state, lambda op: scan_heap_visitor(t, state, op))


# ---------------------------------------------------------------------------------------------
# Steps 5-7: finalizers, resurrection, clearing

async def cleanup_worklist(t: "ThreadState", wl: Worklist) -> None:
    """`cleanup_worklist`: pop, clear UNREACHABLE, drop the worklist's reference."""
    while True:
        op = await worklist_pop(t, wl)
        if not op:
            return
        gc_clear_bits(t.mem, op, GC_BITS_UNREACHABLE)
        await t.decref(op)


async def finalize_garbage(t: "ThreadState", state: CollectionState) -> None:
    """`finalize_garbage`: `tp_finalize` once per object (the worklist keeps each alive)."""
    mem = t.mem
    op = state.unreachable.head
    while op:
        if not gc_bits(mem, op) & GC_BITS_FINALIZED:
            tp = type_of(t.rt, op)
            if tp is not None and tp.finalize is not None:
                gc_set_bits(mem, op, GC_BITS_FINALIZED)
                await tp.finalize(t, op)
        op = _load_tid(mem, op)


def handle_resurrected_objects(t: "ThreadState", state: CollectionState) -> None:
    """`handle_resurrected_objects` (world stopped): external references of the unreachable
    set computed in `ob_ref_local` (ob_tid holds the links); resurrected objects and what they
    reach leave the set."""
    mem = t.mem
    rt = t.rt

    def untracked(op: int) -> bool:
        return not _is_tracked(mem, op)

    # Untracked by a finalizer: decref'd after the pause.
    for op in state.unreachable.remove_if(untracked):
        gc_clear_bits(mem, op, GC_BITS_UNREACHABLE)
        state.objs_to_decref.push(op)
    for op in state.unreachable:
        shared = mem.load_u64(op + OB_REF_SHARED)
        if shared & REF_SHARED_FLAG_MASK != REF_MERGED:
            raise AssertionError(f"handle_resurrected_objects: unreachable {op:#x} not merged")
        local = mem.load_u32(op + OB_REF_LOCAL)
        # + refcount - 1 (the worklist's reference)
        mem.store_u32(op + OB_REF_LOCAL, (local + shared_count(shared) - 1) & _U32, Tag.HEADER)
        for child in _traverse(rt, op):             # visit_decref_unreachable
            if _is_unreachable(mem, child) and _is_tracked(mem, child):
                v = mem.load_u32(child + OB_REF_LOCAL)
                mem.store_u32(child + OB_REF_LOCAL, (v - 1) & _U32, Tag.HEADER)
    any_resurrected = False
    for op in state.unreachable:
        gc_refs = _i32(mem.load_u32(op + OB_REF_LOCAL))
        mem.store_u32(op + OB_REF_LOCAL, 0, Tag.HEADER)
        if gc_refs < 0:
            raise ViolationError("refcount", f"after the finalizers, unreachable object "
                                 f"{op:#x} has fewer references than the cycle holds "
                                 f"(gc_refs {gc_refs}): refcount is too small")
        if _is_unreachable(mem, op) and gc_refs > 0:
            any_resurrected = True
            gc_clear_bits(mem, op, GC_BITS_UNREACHABLE)
            mark_reachable(rt, op)
    if any_resurrected:
        for op in state.unreachable.remove_if(lambda o: not _is_unreachable(mem, o)):
            rt.observer.gc_object_resurrected(t, op)
            merge_refcount(t, op, -1)                # the worklist's reference


async def delete_garbage(t: "ThreadState", state: CollectionState) -> None:
    """`delete_garbage`: `tp_clear` each unreachable object, then drop the worklist's
    reference (which frees the cycle)."""
    mem = t.mem
    while True:
        op = await worklist_pop(t, state.objs_to_decref)
        if not op:
            break
        await t.decref(op)
    while True:
        op = await worklist_pop(t, state.unreachable)
        if not op:
            return
        if not _is_unreachable(mem, op):
            raise AssertionError(f"delete_garbage: {op:#x} on the unreachable list is not "
                                 "marked unreachable")
        gc_clear_bits(mem, op, GC_BITS_UNREACHABLE)
        if not _is_tracked(mem, op):
            await t.decref(op)              # untracked by another tp_clear
            continue
        state.collected += 1
        tp = type_of(t.rt, op)
        if tp is not None and tp.tp_clear is not None:
            await tp.tp_clear(t, op)
        await t.decref(op)                  # the worklist's reference


# ---------------------------------------------------------------------------------------------
# The collection

async def gc_collect_internal(t: "ThreadState", state: CollectionState) -> None:
    """`gc_collect_internal` (module docstring, steps 1-7)."""
    rt = t.rt
    gcstate = rt.gc
    await rt.stop_the_world(t)
    rt.observer.gc_collection_started(t)
    t.mem.store_u32(gcstate.count_addr, 0, Tag.META)      # young.count = 0
    rt.observer.gc_count_reset(t)
    if not rt.mutated("gc-no-merge"):
        for p in tuple(rt.threads_head):
            merge_queued_objects(t, p, state)
    await process_delayed_frees(t, state)
    await deduce_unreachable_heap(t, state)
    gcstate.long_lived_total = state.long_lived_total
    await rt.start_the_world(t)

    await cleanup_worklist(t, state.objs_to_decref)
    await finalize_garbage(t, state)

    await rt.stop_the_world(t)
    handle_resurrected_objects(t, state)
    await rt.start_the_world(t)

    await delete_garbage(t, state)


async def gc_collect_main(t: "ThreadState", reason: str) -> int:
    """`gc_collect_main`: one collection at a time (`collecting`), none for a heap trigger
    that no longer holds."""
    rt = t.rt
    gcstate = rt.gc
    mem = t.mem
    ok, _ = await mem.cas(gcstate.collecting_addr, 0, 1, 4, SEQ_CST)
    if not ok:
        return 0                        # a collection is already running
    if reason == REASON_HEAP and not await gc_should_collect(t):
        await mem.store(gcstate.collecting_addr, 0, 4, SEQ_CST)
        return 0
    state = CollectionState(t, reason)
    gcstate.collections += 1
    await gc_collect_internal(t, state)
    gcstate.collected += state.collected
    rt.observer.gc_collection_finished(t, state.collected)
    await mem.store(gcstate.collecting_addr, 0, 4, SEQ_CST)
    return state.collected
