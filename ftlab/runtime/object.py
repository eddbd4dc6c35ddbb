"""Objects and biased reference counting: `Include/object.h`, `Include/refcount.h` (3.14),
`Objects/object.c` and the lock-free helpers of `Include/internal/pycore_object.h`.

Every object lives in simulated memory with the free-threaded header at its real offsets:

    +0  ob_tid        u64  owning thread id (`_Py_ThreadId`), 0 once merged or immortal
    +8  ob_flags      u16
    +10 ob_mutex      u8   PyMutex of the critical-section API
    +11 ob_gc_bits    u8
    +12 ob_ref_local  u32  the owner's count; only the owner writes it, without atomics
    +16 ob_ref_shared i64  everyone else's count << 2, plus a 2-bit state in the low bits
    +24 ob_type       u64

The true reference count is `ob_ref_local + (ob_ref_shared >> 2)` (arithmetic shift: the
shared part goes negative when a non-owner drops a reference the owner took). The state bits
only move forward: INIT (0) -> MAYBE_WEAKREF (1) -> QUEUED (2) -> MERGED (3), any step may be
skipped, nothing leaves MERGED. Once merged the object has no owner (`ob_tid` 0) and every
thread uses the shared field. Immortal objects have `ob_ref_local` = UINT32_MAX and are never
counted, merged or freed.

An object is deallocated exactly once, by exactly one of: its owner dropping the last local
reference while the shared field is exactly 0 (no atomic operation at all); whoever's CAS
produces exactly MERGED (count 0); whoever finishes an explicit merge with count 0 (`brc.py`).
A non-owner whose decrement finds count 0 and neither queued nor merged (field 0 or
MAYBE_WEAKREF) does not subtract: it marks the object QUEUED and hands its reference to the
owner's BRC queue (`brc.queue_object`).

Lock-free readers (a dict or list read without the container's lock) use try-incref, which
refuses a shared field of exactly 0 or exactly MERGED: 0 means the owner may free the object on
its fast path without any atomic operation, so a racing non-owner increment could revive a
freed object; MERGED/0 means it is being freed. A store into a dict or list does not change
the stored object's shared field: an object that no other thread has referenced (field 0) makes
the first lock-free read of it fail, and the reader's locked fallback (the `read_failed`
path of `_Py_dict_lookup_threadsafe`, `list_item_impl`) takes its reference with
`_Py_NewRefWithLock`, which adds 4 and sets MAYBE_WEAKREF (weakref creation,
`_PyObject_SetMaybeWeakref`, is the other way an object gets it). From then on the owner's last decref takes the CAS path, which
linearises with a reader's CAS. The reader re-checks the slot after its increment, because
delayed page reuse (mimalloc pages that held objects are kept for their size class until a
QSBR grace period) lets the address hold a new object of the same size.

How the model's accesses map to C (DESIGN §2):

- The owner's `ob_ref_local` updates are plain loads and stores (relaxed atomics in C that
  compile to plain moves): no scheduling point, and the race detector sees them as plain, so a
  second writer would be reported.
- The ownership and immortality tests read `ob_tid` and `ob_ref_local` with relaxed loads. They
  are modelled as *peeks*: not a scheduling point (they decide nothing another thread can change
  in between: only the owner writes these words) and not reported to the race detector, because
  a stale lock-free reader reads them after the block was freed, where mimalloc has written a
  free-list link with a plain store; CPython accepts that race by design (type-stable memory),
  and the `refcount`/`resurrection`/`use-after-free` oracles judge its consequences instead.
- `new_reference` stores `ob_tid`, `ob_gc_bits`, `ob_ref_local`, `ob_ref_shared` of a new
  object as relaxed atomics (as CPython does under TSAN, for the same stale readers): reported
  to the race detector as atomic writes, not scheduling points (nobody else can reach the new
  object yet, so no interleaving is lost).
- Everything else a non-owner does to a header is an atomic of the simulated machine (a
  scheduling point), with the C memory order.

The oracles watch through `Observer` events, in the step of the access they report:
`object_accessed` comes just *before* an access that needs a live object (after the
scheduling point of an atomic: `_on_live`), so a use-after-free is reported as such and not as
the data race or segfault the same access would also cause; `ref_added`/`ref_dropped` follow
the access that changed the count, `merge_started`/`merge_finished` bracket a merge (the count
is in flux between them), `object_deallocating` and `object_freeing` mark the end of a life.
The accesses allowed on a freed object (a stale reader's header reads and failing try-incref
CAS) are not reported; a try-incref that succeeds is reported (`ref_added`, "try-incref")
and is a resurrection if the object is dead.

Mutations: `merge-order-bug` (gh-119999: publish MERGED before clearing `ob_tid`/
`ob_ref_local`), `tryincref-accepts-zero` (try-incref accepts a shared field of 0),
`brc-no-queue` (`brc.py`).
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Generator

from ftlab.runtime import brc
from ftlab.runtime.mimalloc.alloc import heap_malloc
from ftlab.runtime.mimalloc.free import mi_free
from ftlab.runtime.mimalloc.segment import segment_page_of
from ftlab.runtime.mimalloc.types import MI_SEGMENT_MASK, HeapTag
from ftlab.sim.atomics import ACQUIRE, RELAXED, SEQ_CST, as_signed
from ftlab.sim.memory import Tag

if TYPE_CHECKING:
    from ftlab.runtime.pystate import Runtime, ThreadState

# ---------------------------------------------------------------------------------------------
# Layout (Include/object.h, 64-bit free-threaded build)

OB_TID = 0
OB_FLAGS = 8
OB_MUTEX = 10
OB_GC_BITS = 11
OB_REF_LOCAL = 12
OB_REF_SHARED = 16
OB_TYPE = 24
SIZEOF_PYOBJECT = 32                    # sizeof(PyObject)
PREHEADER_SIZE = 2 * 8                  # managed dict + managed weakref pointers (FT: no GC head)

# Include/refcount.h
UNOWNED_TID = 0                         # _Py_UNOWNED_TID
IMMORTAL_REFCNT_LOCAL = 0xFFFF_FFFF     # _Py_IMMORTAL_REFCNT_LOCAL
IMMORTAL_INITIAL_REFCNT = 3 << 30       # what Py_REFCNT reports for an immortal (3.14)
REF_SHARED_SHIFT = 2                    # _Py_REF_SHARED_SHIFT
REF_SHARED_FLAG_MASK = 0x3
REF_SHARED_INIT = 0x0
REF_MAYBE_WEAKREF = 0x1
REF_QUEUED = 0x2
REF_MERGED = 0x3
STATE_NAMES = ("INIT", "MAYBE_WEAKREF", "QUEUED", "MERGED")
REF_ONE = 1 << REF_SHARED_SHIFT         # one shared reference

# Type flags the model keeps in a type object (Include/object.h).
TPFLAGS_MANAGED_DICT = 1 << 4
TPFLAGS_MANAGED_WEAKREF = 1 << 3
TPFLAGS_PREHEADER = TPFLAGS_MANAGED_WEAKREF | TPFLAGS_MANAGED_DICT
TPFLAGS_HAVE_GC = 1 << 14
# A static type object: a PyObject header, then tp_basicsize and tp_flags at these offsets
# (not CPython's offsets: the model's types carry only what the runtime reads).
TP_BASICSIZE = SIZEOF_PYOBJECT
TP_FLAGS = SIZEOF_PYOBJECT + 8
SIZEOF_TYPE_OBJECT = SIZEOF_PYOBJECT + 16

# ob_gc_bits (Include/internal/pycore_gc.h, free-threaded build)
GC_BITS_TRACKED = 1 << 0                # _PyGC_BITS_TRACKED
GC_BITS_FINALIZED = 1 << 1              # tp_finalize was called
GC_BITS_UNREACHABLE = 1 << 2            # set by the GC during a collection
GC_BITS_FROZEN = 1 << 3
GC_BITS_SHARED = 1 << 4                 # may be read lock-free: free its buffers with QSBR
GC_BITS_SHARED_INLINE = 1 << 5          # 3.13: the object's own memory is read lock-free
GC_BITS_DEFERRED = 1 << 6

_U64 = (1 << 64) - 1

# Run statistics (`Runtime.stats`, reported in `RunResult.stats`).
STATS = (
    "objects_allocated", "objects_deallocated",
    "refcnt_nonatomic",     # owner fast-path increments and decrements (plain)
    "refcnt_atomic",        # atomic read-modify-writes of ob_ref_shared (incl. merges)
    "refcnt_immortal",      # operations skipped on immortal objects
    "brc_queued",           # non-owner decrements that marked an object QUEUED
    "brc_queue_pushes",     # objects pushed onto a live owner's queue
    "brc_merges",           # owners giving up ownership on their last local decref
    "brc_explicit_merges",  # explicit merges (queue processing, owner gone)
)


def REF_SHARED(count: int, flags: int) -> int:
    """`_Py_REF_SHARED(count, flags)` as the unsigned 64-bit word stored in memory."""
    return ((count << REF_SHARED_SHIFT) + flags) & _U64


def shared_count(shared: int) -> int:
    """The signed count in a shared field (`ob_ref_shared >> 2`, arithmetic)."""
    return as_signed(shared) >> REF_SHARED_SHIFT


# ---------------------------------------------------------------------------------------------
# Types

@dataclass(frozen=True)
class PyType:
    """What the model needs of a type: its size and which mimalloc heap its instances use
    (`_PyObject_MallocWithType`: GC_PRE with a pre-header, GC for other GC types, OBJECT
    otherwise). `clear`, if given, is what `tp_dealloc` does before the memory is freed
    (decref the references the object owns); it runs in the deallocating thread.

    What the cyclic GC (`gc.py`) needs of a container type:
    `traverse` is `tp_traverse` as a plain function (no scheduling point: the GC calls it with
    the world stopped) that returns the object's strong references by reading its memory, in
    the order `tp_traverse` visits them (NULL slots left out). `tp_clear` drops those
    references (the GC calls it on unreachable objects to break cycles; tuples have none).
    `finalize` is `tp_finalize` (`__del__`), called at most once per object (FINALIZED bit);
    it may resurrect the object by storing a new reference to it somewhere."""

    name: str
    basicsize: int = SIZEOF_PYOBJECT + 16
    gc: bool = False
    preheader: bool = False
    clear: Callable[["ThreadState", int], Awaitable[None]] | None = None
    traverse: Callable[[Any, int], list[int]] | None = None
    tp_clear: Callable[["ThreadState", int], Awaitable[None]] | None = None
    finalize: Callable[["ThreadState", int], Awaitable[None]] | None = None

    def __post_init__(self) -> None:
        assert self.basicsize >= SIZEOF_PYOBJECT, "an object is at least a PyObject"
        assert self.gc or not self.preheader, "only GC types have a pre-header"
        assert self.gc or self.traverse is None, "only GC types have a tp_traverse"

    @property
    def heap_tag(self) -> HeapTag:
        if self.preheader:
            return HeapTag.GC_PRE
        return HeapTag.GC if self.gc else HeapTag.OBJECT

    @property
    def presize(self) -> int:
        """`_PyType_PreHeaderSize` in the free-threaded build."""
        return PREHEADER_SIZE if self.preheader else 0

    @property
    def flags(self) -> int:
        return (TPFLAGS_HAVE_GC if self.gc else 0) | (TPFLAGS_PREHEADER if self.preheader else 0)


class ObjectState:
    """The interpreter's object state: static immortal objects (type objects, singletons) in a
    raw static area."""

    __slots__ = ("rt", "_static_next", "_static_end", "types", "reftotal")

    STATIC_CHUNK = 1 << 16

    def __init__(self, rt: "Runtime") -> None:
        self.rt = rt
        for key in STATS:
            rt.stats[key] = 0
        self._static_next = 0
        self._static_end = 0
        self.types: dict[PyType, int] = {}
        # `interp->object_state.reftotal`: the totals of thread states that were deleted
        self.reftotal = 0

    def static_alloc(self, size: int) -> int:
        """Memory of a statically allocated object: never freed, zeroed."""
        size = (size + 15) & ~15
        if self._static_next + size > self._static_end:
            n = max(size, self.STATIC_CHUNK)
            self._static_next = self.rt.raw_calloc(n)
            self._static_end = self._static_next + n
        p = self._static_next
        self._static_next += size
        return p

    def type_object(self, tp: PyType) -> int:
        """The static (immortal) type object of `tp`, made on first use."""
        addr = self.types.get(tp)
        if addr is None:
            addr = self.immortal_object(None, SIZEOF_TYPE_OBJECT, tp.name + " type")
            mem = self.rt.mem
            mem.store_u64(addr + TP_BASICSIZE, tp.basicsize, Tag.PAYLOAD)
            mem.store_u64(addr + TP_FLAGS, tp.flags, Tag.PAYLOAD)
            self.types[tp] = addr
        return addr

    def immortal_object(self, tp: PyType | None, size: int | None = None,
                        name: str | None = None) -> int:
        """A statically allocated immortal object (`_Py_SetImmortal`: tid 0, local
        UINT32_MAX, shared 0), like `Py_None`. Set-up code: no thread, no scheduling point."""
        size = size if size is not None else tp.basicsize
        op = self.static_alloc(size)
        mem = self.rt.mem
        mem.store_u64(op + OB_TID, UNOWNED_TID, Tag.HEADER)
        mem.store_u32(op + OB_REF_LOCAL, IMMORTAL_REFCNT_LOCAL, Tag.HEADER)
        mem.store_u64(op + OB_REF_SHARED, 0, Tag.HEADER)
        mem.store_u64(op + OB_TYPE, self.type_object(tp) if tp is not None else 0, Tag.HEADER)
        self.rt.observer.object_created(None, op, size, name or (tp.name if tp else "object"),
                                        True)
        return op


# ---------------------------------------------------------------------------------------------
# Accesses that are not scheduling points (see the module docstring)

def _peek(mem, addr: int, width: int) -> int:
    """A relaxed load of a word only its owner writes (`ob_tid`, `ob_ref_local`)."""
    return mem.peek(addr, width)


def _peek_shared(mem, op: int) -> int:
    """The relaxed load of `ob_ref_shared` that starts a CAS loop whose every decision is
    taken again on the value the CAS observes: when it happens does not matter (a stale value
    only fails the CAS), so it is not a scheduling point of its own."""
    return mem.peek(op + OB_REF_SHARED, 8)


def _init_store(mem, addr: int, width: int, value: int) -> None:
    """A relaxed store into a new object nobody else can reach yet (`new_reference`)."""
    mem.store_unpublished(addr, value, width, Tag.HEADER)


@types.coroutine
def _on_live(t: "ThreadState", op: int, field: str,
             access: Generator[Any, None, Any]) -> Generator[Any, None, Any]:
    """Await `access`, an atomic of the simulated memory on a field of object `op` that
    needs the object alive, telling the oracles after its scheduling point and before it
    happens. An atomic is one scheduling point (a `yield`) followed by the access."""
    access.send(None)                   # up to its scheduling point: nothing happened yet
    yield                               # the scheduling point
    t.rt.observer.object_accessed(t, op, field)
    try:
        access.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("an atomic of the simulated memory is one scheduling point")


def is_immortal(mem, op: int) -> bool:
    """`_Py_IsImmortal`."""
    return _peek(mem, op + OB_REF_LOCAL, 4) == IMMORTAL_REFCNT_LOCAL


def is_owned_by(t: "ThreadState", op: int) -> bool:
    """`_Py_IsOwnedByCurrentThread`."""
    return _peek(t.mem, op + OB_TID, 8) == t.tid


def refcnt(mem, op: int) -> int:
    """`Py_REFCNT` (a relaxed read of both fields; for tests and oracles, not an access)."""
    local = mem.raw_load(op + OB_REF_LOCAL, 4)
    if local == IMMORTAL_REFCNT_LOCAL:
        return IMMORTAL_INITIAL_REFCNT
    return local + shared_count(mem.raw_load(op + OB_REF_SHARED, 8))


def header(mem, op: int) -> tuple[int, int, int]:
    """(ob_tid, ob_ref_local, ob_ref_shared) as stored; not an access."""
    return (mem.raw_load(op + OB_TID, 8), mem.raw_load(op + OB_REF_LOCAL, 4),
            mem.raw_load(op + OB_REF_SHARED, 8))


# ---------------------------------------------------------------------------------------------
# Allocation (`PyObject_Malloc`, `_PyObject_MallocWithType`, `PyObject_Free`)

async def object_malloc(t: "ThreadState", size: int, tag: int = HeapTag.OBJECT) -> int:
    """`_PyObject_MallocWithType`: make the `tag` heap the thread's current object heap,
    `PyObject_Malloc` (through the debug hooks when they are on), then back to OBJECT."""
    mts = t.mimalloc
    mts.current_object_heap = mts.heaps[tag]
    if t.rt.config.debug_allocator:
        from ftlab.runtime import obmalloc_debug
        p = await obmalloc_debug.debug_malloc(t, obmalloc_debug.API_OBJECT, size,
                                              _object_mi_malloc)
    else:
        p = await _object_mi_malloc(t, size)
    mts.current_object_heap = mts.heaps[HeapTag.OBJECT]
    return p


async def object_free(t: "ThreadState", p: int) -> None:
    """`PyObject_Free` (through the debug hooks when they are on)."""
    if t.rt.config.debug_allocator:
        from ftlab.runtime import obmalloc_debug
        await obmalloc_debug.debug_free(t, obmalloc_debug.API_OBJECT, p, _object_mi_free)
    else:
        await _object_mi_free(t, p)


async def _object_mi_malloc(t: "ThreadState", size: int) -> int:
    """`_PyObject_MiMalloc`: `mi_heap_malloc(current_object_heap, size)`."""
    p = await heap_malloc(t.mimalloc.current_object_heap, size)
    if p == 0:
        raise MemoryError(f"{t.name}: out of memory allocating {size} bytes for an object")
    return p


async def _object_mi_free(t: "ThreadState", p: int) -> None:
    """`_PyObject_MiFree`: `mi_free(p)`."""
    await mi_free(t.rt.mimalloc, p)


def page_debug_offset(rt: "Runtime", block: int) -> int:
    """`_mi_ptr_page(block)->debug_offset`: what the page of an object block keeps intact
    (set from its heap when the page was initialised)."""
    segment = rt.mimalloc.segments[(block - 1) & ~MI_SEGMENT_MASK]
    return segment_page_of(segment, block).debug_offset


# ---------------------------------------------------------------------------------------------
# New objects and deallocation

async def new_object(t: "ThreadState", tp: PyType, size: int | None = None) -> int:
    """Allocate and initialise an instance of `tp` (`_PyObject_New` / `_PyObject_GC_New`):
    owned by `t`, local 1, shared 0. Returns the object pointer (after any pre-header)."""
    size = tp.basicsize if size is None else size
    presize = tp.presize
    mem = t.mem
    p = await object_malloc(t, presize + size, tp.heap_tag)
    if presize:
        mem.fill(p, presize, 0, Tag.HEADER)                  # gc_alloc zeroes the pre-header
    op = p + presize
    if tp.gc:
        # gc_alloc: record_allocation before the object is initialised
        from ftlab.runtime import gc as _gc
        t.rt.observer.gc_object_allocated(t, op)
        await _gc.record_allocation(t)
    mem.store_u64(op + OB_TYPE, t.rt.objects.type_object(tp), Tag.HEADER)   # Py_SET_TYPE
    new_reference(t, op)
    t.rt.stats["objects_allocated"] += 1
    t.rt.observer.object_created(t, op, size, tp.name, False)
    return op


def new_reference(t: "ThreadState", op: int) -> None:
    """`new_reference` (Objects/object.c): the allocating thread owns the object."""
    mem = t.mem
    mem.store_u16(op + OB_FLAGS, 0, Tag.HEADER)
    mem.store_u8(op + OB_MUTEX, 0, Tag.HEADER)
    _init_store(mem, op + OB_TID, 8, t.tid)
    _init_store(mem, op + OB_GC_BITS, 1, 0)
    _init_store(mem, op + OB_REF_LOCAL, 4, 1)
    _init_store(mem, op + OB_REF_SHARED, 8, 0)
    inc_ref_total(t)                        # _Py_IncRefTotal in _Py_NewReference


async def dealloc(t: "ThreadState", op: int) -> None:
    """`_Py_Dealloc`: the type's `tp_dealloc` (its `clear`, then `PyObject_Free` /
    `PyObject_GC_Del` of the block, pre-header included)."""
    rt = t.rt
    rt.observer.object_deallocating(t, op)
    rt.stats["objects_deallocated"] += 1
    tp = type_of(rt, op)
    if tp is not None and tp.clear is not None:
        await tp.clear(t, op)
    rt.observer.object_freeing(t, op)
    if tp is not None and tp.gc:
        # PyObject_GC_Del: record_deallocation, then PyObject_Free
        from ftlab.runtime import gc as _gc
        rt.observer.gc_object_freed(t, op)
        await _gc.record_deallocation(t)
        if gc_bits(t.mem, op) & GC_BITS_SHARED_INLINE and rt.config.version == "3.13.0":
            # 3.13's PyObject_GC_Del: an object whose memory others read without a lock is
            # freed with `_PyObject_FreeDelayed` (the 3.14 policy's object items are deferred
            # decrefs instead, `_PyObject_XDecRefDelayed`: obmalloc.free_work_item).
            from ftlab.runtime import obmalloc as _obmalloc
            await _obmalloc.object_free_delayed(t, op - tp.presize)
            return
    await object_free(t, op - (tp.presize if tp is not None else 0))


def type_of(rt: "Runtime", op: int) -> PyType | None:
    """The `PyType` whose type object `op->ob_type` points to (a plain read of ob_type)."""
    addr = rt.mem.load_u64(op + OB_TYPE)
    for tp, a in rt.objects.types.items():
        if a == addr:
            return tp
    return None


# ---------------------------------------------------------------------------------------------
# Py_INCREF / Py_DECREF: the owner's fast path first, the shared path beside it

async def incref(t: "ThreadState", op: int) -> None:
    """`Py_INCREF`."""
    mem = t.mem
    if _peek(mem, op + OB_TID, 8) == t.tid:
        local = mem.load_u32(op + OB_REF_LOCAL)
        if local == IMMORTAL_REFCNT_LOCAL:
            return
        mem.store_u32(op + OB_REF_LOCAL, local + 1, Tag.HEADER)
        inc_ref_total(t)
        t.rt.stats["refcnt_nonatomic"] += 1
        t.rt.observer.ref_added(t, op, "incref")
        return
    if _peek(mem, op + OB_REF_LOCAL, 4) == IMMORTAL_REFCNT_LOCAL:
        t.rt.stats["refcnt_immortal"] += 1
        return
    await _on_live(t, op, "ob_ref_shared (incref)",
                   mem.fetch_add(op + OB_REF_SHARED, REF_ONE, 8, SEQ_CST, Tag.HEADER))
    inc_ref_total(t)
    t.rt.stats["refcnt_atomic"] += 1
    t.rt.observer.ref_added(t, op, "incref (shared)")


async def decref(t: "ThreadState", op: int) -> None:
    """`Py_DECREF`."""
    mem = t.mem
    if _peek(mem, op + OB_TID, 8) == t.tid:
        local = mem.load_u32(op + OB_REF_LOCAL)
        if local == IMMORTAL_REFCNT_LOCAL:
            return
        dec_ref_total(t)                    # _Py_DECREF_DecRefTotal, before the owner test
        local = (local - 1) & 0xFFFF_FFFF
        mem.store_u32(op + OB_REF_LOCAL, local, Tag.HEADER)
        t.rt.stats["refcnt_nonatomic"] += 1
        t.rt.observer.ref_dropped(t, op, "decref")
        if local == 0:
            await merge_zero_local_refcount(t, op)
        return
    if _peek(mem, op + OB_REF_LOCAL, 4) == IMMORTAL_REFCNT_LOCAL:
        t.rt.stats["refcnt_immortal"] += 1
        return
    dec_ref_total(t)
    await dec_ref_shared(t, op)


async def dec_ref_shared(t: "ThreadState", op: int) -> None:
    """`_Py_DecRefShared` (`_Py_DecRefSharedIsDead`, then `_Py_Dealloc` if dead): a
    non-owner's decrement. A field of 0 or MAYBE_WEAKREF (count 0, not queued, not merged)
    is not decremented but marked QUEUED: the owner's queue takes over this reference."""
    mem = t.mem
    rt = t.rt
    no_queue = rt.config.mutated("brc-no-queue")
    shared = _peek_shared(mem, op)
    while True:
        should_queue = (shared == 0 or shared == REF_MAYBE_WEAKREF) and not no_queue
        new_shared = REF_QUEUED if should_queue else (shared - REF_ONE) & _U64
        ok, shared = await _on_live(t, op, "ob_ref_shared (decref)", mem.cas(
            op + OB_REF_SHARED, shared, new_shared, 8, SEQ_CST, Tag.HEADER))
        if ok:
            break
    rt.stats["refcnt_atomic"] += 1
    if should_queue:
        # The queue holds the reference this decref gave up (gh-115184 fix 3).
        if not rt.mutated("reftotal-untracked-brc"):
            inc_ref_total(t)
        rt.stats["brc_queued"] += 1
        rt.observer.object_queued(t, op)
        await brc.queue_object(t, op)
        return
    rt.observer.ref_dropped(t, op, "decref (shared)")
    if new_shared == REF_MERGED:
        await dealloc(t, op)


async def merge_zero_local_refcount(t: "ThreadState", op: int) -> None:
    """`_Py_MergeZeroLocalRefcount`: the owner's local count reached 0. A shared field of
    exactly 0 means no other thread ever had a reference: deallocate without an atomic write.
    Otherwise give up ownership: clear `ob_tid` (before the CAS, gh-119999; outside the fast
    path so that tid 0 implies merged, gh-121794), then set the state to MERGED keeping the
    count; whoever produces exactly MERGED/0 deallocates."""
    mem = t.mem
    rt = t.rt
    # Acquire (gh-117657): pairs with the non-owners' CAS, so their earlier accesses to the
    # object happen before its deallocation.
    shared = await _on_live(t, op, "ob_ref_shared (merge)",
                            mem.load(op + OB_REF_SHARED, 8, ACQUIRE))
    if shared == 0:
        await dealloc(t, op)
        return
    rt.observer.merge_started(t, op)
    bug = rt.config.mutated("merge-order-bug")
    if not bug and not rt.config.mutated("merge-keeps-tid"):
        await _on_live(t, op, "ob_tid (merge)",
                       mem.store(op + OB_TID, UNOWNED_TID, 8, RELAXED, Tag.HEADER))
    while True:
        new_shared = (shared & ~REF_SHARED_FLAG_MASK & _U64) | REF_MERGED
        ok, shared = await _on_live(t, op, "ob_ref_shared (merge)", mem.cas(
            op + OB_REF_SHARED, shared, new_shared, 8, SEQ_CST, Tag.HEADER))
        if ok:
            break
    if bug:
        # gh-119999: once MERGED is visible another thread may free the object.
        await _on_live(t, op, "ob_tid (stored after the merge)",
                       mem.store(op + OB_TID, UNOWNED_TID, 8, RELAXED, Tag.HEADER))
    rt.stats["refcnt_atomic"] += 1
    rt.stats["brc_merges"] += 1
    rt.observer.merge_finished(t, op, 0)
    if new_shared == REF_MERGED:
        await dealloc(t, op)


async def explicit_merge_refcount(t: "ThreadState", op: int, extra: int) -> int:
    """`_Py_ExplicitMergeRefcount`: merge the local count into the shared field, add `extra`
    (callers give up a reference with -1) and mark it MERGED; return the merged count. The
    caller deallocates on 0. Run by the owner (its queue) or, once the owner has left the BRC
    table, by the queuing thread. `ob_ref_local` and `ob_tid` are cleared *before* the merge
    is published (gh-119999): after it, another thread may free the object."""
    mem = t.mem
    rt = t.rt
    assert not is_immortal(mem, op), "explicit merge of an immortal object"
    if not rt.mutated("reftotal-untracked-brc"):
        add_ref_total(t, extra)             # gh-115184 fix 3
    rt.observer.merge_started(t, op)
    bug = rt.config.mutated("merge-order-bug")
    rt.observer.object_accessed(t, op, "ob_ref_local (merge)")
    local = mem.load_u32(op + OB_REF_LOCAL)
    if not bug:
        await _on_live(t, op, "ob_ref_local (merge)",
                       mem.store(op + OB_REF_LOCAL, 0, 4, RELAXED, Tag.HEADER))
        await _on_live(t, op, "ob_tid (merge)",
                       mem.store(op + OB_TID, UNOWNED_TID, 8, RELAXED, Tag.HEADER))
    shared = _peek_shared(mem, op)
    while True:
        count = shared_count(shared) + local + extra
        new_shared = REF_SHARED(count, REF_MERGED)
        ok, shared = await _on_live(t, op, "ob_ref_shared (merge)", mem.cas(
            op + OB_REF_SHARED, shared, new_shared, 8, SEQ_CST, Tag.HEADER))
        if ok:
            break
    if bug:
        # gh-119999: once MERGED is visible another thread may free the object.
        await _on_live(t, op, "ob_ref_local (stored after the merge)",
                       mem.store(op + OB_REF_LOCAL, 0, 4, RELAXED, Tag.HEADER))
        await _on_live(t, op, "ob_tid (stored after the merge)",
                       mem.store(op + OB_TID, UNOWNED_TID, 8, RELAXED, Tag.HEADER))
    rt.stats["refcnt_atomic"] += 1
    rt.stats["brc_explicit_merges"] += 1
    rt.observer.merge_finished(t, op, extra)
    return count


# ---------------------------------------------------------------------------------------------
# The total reference count (`_Py_RefTotal`, Py_REF_DEBUG; `sys.gettotalrefcount()`)
#
# Every reference a thread creates or drops is added to its own `t.reftotal` (FT: the thread
# state's `reftotal`, written only by its thread; C stores it relaxed for the reader below);
# `tstate_delete_common` adds it to the interpreter's `rt.objects.reftotal` under HEAD_LOCK.
# The sum is the number of strong references to non-immortal objects, provided the two paths
# gh-115184 fixed keep it: the BRC queue holds the reference a queuing decref gave up (+1 on
# the queue path), and an explicit merge adds its `extra` (-1 when the queue's reference is
# dropped). Mutation `reftotal-untracked-brc`: both are missing (they cancel once the queue is
# merged, so the total is off by one for each object waiting in a queue). Kept in every build
# of the model (C: debug builds only).

def add_ref_total(t: "ThreadState", n: int) -> None:
    """`_Py_AddRefTotal` (`reftotal_add`)."""
    t.reftotal += n


def inc_ref_total(t: "ThreadState") -> None:
    """`_Py_IncRefTotal` / `_Py_INCREF_IncRefTotal`."""
    t.reftotal += 1


def dec_ref_total(t: "ThreadState") -> None:
    """`_Py_DecRefTotal` / `_Py_DECREF_DecRefTotal`."""
    t.reftotal -= 1


async def get_total_refcount(t: "ThreadState") -> int:
    """`sys.gettotalrefcount()` (`get_global_reftotal`): under HEAD_LOCK, the interpreter's
    total plus every linked thread's (each read while its thread may be running, as in C)."""
    rt = t.rt
    await rt.head_lock.lock()
    total = rt.objects.reftotal + sum(p.reftotal for p in rt.threads_head)
    await rt.head_lock.unlock()
    return total


# ---------------------------------------------------------------------------------------------
# Lock-free acquisition (pycore_object.h)

def try_incref_fast(t: "ThreadState", op: int) -> bool:
    """`_Py_TryIncrefFast`: succeeds only for immortal objects and objects `t` owns."""
    mem = t.mem
    if _peek(mem, op + OB_REF_LOCAL, 4) == IMMORTAL_REFCNT_LOCAL:
        return True
    if _peek(mem, op + OB_TID, 8) != t.tid:
        return False
    local = mem.load_u32(op + OB_REF_LOCAL)
    mem.store_u32(op + OB_REF_LOCAL, local + 1, Tag.HEADER)
    inc_ref_total(t)
    t.rt.stats["refcnt_nonatomic"] += 1
    t.rt.observer.ref_added(t, op, "try-incref (owner)")
    return True


async def try_incref_shared(t: "ThreadState", op: int) -> bool:
    """`_Py_TryIncRefShared`: add one shared reference unless the field is exactly 0 or
    exactly MERGED (count 0). A failed CAS only reads the header, which stays valid after the
    free thanks to delayed page reuse."""
    mem = t.mem
    accept_zero = t.rt.config.mutated("tryincref-accepts-zero")
    shared = await mem.load(op + OB_REF_SHARED, 8, RELAXED)
    while True:
        if (shared == 0 and not accept_zero) or shared == REF_MERGED:
            return False
        ok, shared = await mem.cas(op + OB_REF_SHARED, shared, (shared + REF_ONE) & _U64,
                                   8, SEQ_CST, Tag.HEADER)
        if ok:
            inc_ref_total(t)
            t.rt.stats["refcnt_atomic"] += 1
            t.rt.observer.ref_added(t, op, "try-incref")
            return True


async def try_incref(t: "ThreadState", op: int) -> bool:
    """`_Py_TryIncref`."""
    return try_incref_fast(t, op) or await try_incref_shared(t, op)


async def try_incref_compare(t: "ThreadState", src: int, op: int) -> bool:
    """`_Py_TryIncrefCompare`: incref `op` and make sure the slot at `src` still holds it
    (else undo and fail): the address may hold a new object since the slot was read."""
    if try_incref_fast(t, op):
        return True
    if not await try_incref_shared(t, op):
        return False
    if await t.mem.load(src, 8, SEQ_CST) != op:
        await decref(t, op)
        return False
    return True


async def xget_ref(t: "ThreadState", ptr: int) -> int:
    """`_Py_XGetRef`: a new reference to what the slot at `ptr` holds, or 0 for NULL."""
    while True:
        value = await t.mem.load(ptr, 8, SEQ_CST)
        if value == 0:
            return 0
        if await try_incref_compare(t, ptr, value):
            return value


async def try_xget_ref(t: "ThreadState", ptr: int) -> int:
    """`_Py_TryXGetRef`: one attempt; 0 for NULL or a concurrent update."""
    value = await t.mem.load(ptr, 8, SEQ_CST)
    if value == 0:
        return 0
    return value if await try_incref_compare(t, ptr, value) else 0


async def new_ref_with_lock(t: "ThreadState", op: int) -> int:
    """`_Py_NewRefWithLock`: incref an object read under its container's lock and, while at
    it, set MAYBE_WEAKREF on a shared field in INIT state, so later lock-free reads of it
    can succeed."""
    if try_incref_fast(t, op):
        return op
    mem = t.mem
    shared = _peek_shared(mem, op)
    while True:
        new_shared = (shared + REF_ONE) & _U64
        if shared & REF_SHARED_FLAG_MASK == 0:
            new_shared |= REF_MAYBE_WEAKREF
        ok, shared = await _on_live(t, op, "ob_ref_shared (new-ref-with-lock)", mem.cas(
            op + OB_REF_SHARED, shared, new_shared, 8, SEQ_CST, Tag.HEADER))
        if ok:
            inc_ref_total(t)
            t.rt.stats["refcnt_atomic"] += 1
            t.rt.observer.ref_added(t, op, "new-ref-with-lock")
            return op


async def set_maybe_weakref(t: "ThreadState", op: int) -> None:
    """`_PyObject_SetMaybeWeakref`: INIT -> MAYBE_WEAKREF (nothing to do in any later
    state). Writers do this to objects they store into lock-free-readable slots."""
    mem = t.mem
    if is_immortal(mem, op):
        return
    while True:
        shared = await mem.load(op + OB_REF_SHARED, 8, RELAXED)
        if shared & REF_SHARED_FLAG_MASK:
            return
        ok, _ = await _on_live(t, op, "ob_ref_shared (MAYBE_WEAKREF)", mem.cas(
            op + OB_REF_SHARED, shared, shared | REF_MAYBE_WEAKREF, 8, SEQ_CST, Tag.HEADER))
        if ok:
            t.rt.stats["refcnt_atomic"] += 1
            return


# ---------------------------------------------------------------------------------------------
# Using an object

def load_field(t: "ThreadState", op: int, offset: int) -> int:
    """A plain read of a word of the object's payload (the object is used)."""
    t.rt.observer.object_accessed(t, op, f"payload +{offset}")
    return t.mem.load_u64(op + offset)


def store_field(t: "ThreadState", op: int, offset: int, value: int) -> None:
    """A plain write of a word of the object's payload."""
    t.rt.observer.object_accessed(t, op, f"payload +{offset}")
    t.mem.store_u64(op + offset, value, Tag.PAYLOAD)


# ---------------------------------------------------------------------------------------------
# GC bits (pycore_gc.h / pycore_object.h): written by the object's creator before it is
# published, or by the GC with the world stopped; read with relaxed loads.

def gc_bits(mem, op: int) -> int:
    """`op->ob_gc_bits` (a relaxed read: no scheduling point, not a race)."""
    return mem.peek(op + OB_GC_BITS, 1)


def gc_set_bits(mem, op: int, bits: int) -> None:
    """`_PyObject_SET_GC_BITS`."""
    mem.store_unpublished(op + OB_GC_BITS, gc_bits(mem, op) | bits, 1, Tag.HEADER)


def gc_clear_bits(mem, op: int, bits: int) -> None:
    """`_PyObject_CLEAR_GC_BITS`."""
    mem.store_unpublished(op + OB_GC_BITS, gc_bits(mem, op) & ~bits, 1, Tag.HEADER)


def gc_is_tracked(mem, op: int) -> bool:
    """`_PyObject_GC_IS_TRACKED`."""
    return bool(gc_bits(mem, op) & GC_BITS_TRACKED)


def gc_track(t: "ThreadState", op: int) -> None:
    """`_PyObject_GC_TRACK`: the GC may now find the object in its heap."""
    assert not gc_is_tracked(t.mem, op), "object already tracked by the garbage collector"
    gc_set_bits(t.mem, op, GC_BITS_TRACKED)


def gc_untrack(t: "ThreadState", op: int) -> None:
    """`_PyObject_GC_UNTRACK`."""
    gc_clear_bits(t.mem, op, GC_BITS_TRACKED)
