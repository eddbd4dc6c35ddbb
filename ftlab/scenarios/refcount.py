"""Scenarios of objects and biased reference counting (`ftlab.runtime.object`, `brc`).

- `slot-replace`: a reader gets a reference to what a dict-like slot holds without the lock
  (`_Py_XGetRef`) while a writer replaces the item under the lock and drops the last reference
  to the old one, then allocates an object of another size. The reader may still try-incref
  the old object after it was freed: delayed page reuse keeps its header readable and dead
  (0 or MERGED/0), so the try-incref fails, or the address holds a new object of the same size
  and the slot re-check fails. The old item is a large object, alone in a large page, so that
  its page is freed (not retired) when it dies. Mutation `no-page-delay`: the emptied page is
  released at once and its memory can be reused for the other size (`premature-reuse`; a
  stale try-incref on it is a `use-after-free` or `resurrection`).
- `slot-replace-debug`: the same with the debug allocator (`PYTHONMALLOC=debug`) and GC
  objects with a pre-header. `debug-fill-header` and `debug-dealloc-heap-bug` fill the freed
  object's refcount fields with 0xDD, which try-incref accepts (`resurrection`); the fill is a
  memset over the fields a lock-free reader loads atomically, so it can also be seen first as
  a `data-race`;
  `debug-offset-bug` leaves the freed object's `ob_type` intact, so it no longer reads as freed
  (`_PyObject_IsFreed`, the check of test_capi.test_mem): the check step reports it.
- `hand-off`: a thread hands a fresh object to another, which drops the last reference; the
  decrement queues it for the owner, which merges it at a periodic check or when it exits (or
  the dropping thread merges it itself once the owner has gone). `brc-no-queue`: nobody
  deallocates it (`leak`).
- `merge-vs-reader`: the owner drops its last local reference and merges while a lock-free
  reader drops the reference it took. `merge-order-bug` (gh-119999) publishes MERGED before
  clearing `ob_tid`, so the reader's last decref can free the object before the owner's store
  (`use-after-free`), or after it without any ordering between the two, so that the free's
  free-list write races with the store (`data-race`).
- `tryincref-zero`: a lock-free reader try-increfs an object whose shared field is exactly 0
  (its writer did not set MAYBE_WEAKREF) while the owner drops the last reference on its
  fast path, without any atomic operation; the reader must refuse and take the locked path.
  `tryincref-accepts-zero` lets it revive the freed object (`resurrection`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ftlab.runtime import obmalloc_debug
from ftlab.runtime.object import PyType, load_field, store_field
from ftlab.scenarios import Scenario
from ftlab.sim.atomics import SEQ_CST
from ftlab.sim.sync import Event as SimEvent
from ftlab.sim.sync import Mutex
from ftlab.sim.violation import ViolationError

PAYLOAD = 32                       # offset of the first payload word of every item
CHILD = PAYLOAD + 8                # a Holder's reference to another object


async def _clear_child(t, op: int) -> None:
    """A Holder's tp_dealloc: drop the reference it owns (before its memory is freed)."""
    child = load_field(t, op, CHILD)
    if child:
        await t.decref(child)


OLD_ITEM = PyType("OldItem", basicsize=48)
HOLDER = PyType("Holder", basicsize=48, clear=_clear_child)
NEW_ITEM = PyType("NewItem", basicsize=80)
FILLER = PyType("Filler", basicsize=160)
GC_ITEM = PyType("GCItem", basicsize=48, gc=True, preheader=True)
GC_NEW_ITEM = PyType("GCNewItem", basicsize=80, gc=True, preheader=True)
# A large object (a big bytes or tuple object): alone in a mimalloc large page, which is freed,
# not retired, when the object is freed, so that its memory can go to a small page at once.
BIG_ITEM = PyType("BigItem", basicsize=160 << 10)


@dataclass
class _Slot:
    """A dict-like slot: one pointer word, written under `lock`, read with or without it."""

    addr: int
    lock: Mutex
    old_type: PyType
    new_type: PyType
    filler_type: PyType
    old: int = 0            # the first item, for the check step
    ready: SimEvent | None = None
    go: SimEvent | None = None


def _slot_setup(old_type: PyType, new_type: PyType, filler_type: PyType = FILLER):
    def setup(rt) -> None:
        rt.shared = _Slot(rt.raw_calloc(64), rt.mutex("slot lock"), old_type, new_type,
                          filler_type, ready=rt.event("reader ready"), go=rt.event("go"))
    return setup


async def _new_item(t, tp: PyType, value: int, maybe_weakref: bool = True) -> int:
    """A new object with `value` in its payload. `maybe_weakref`: it is given MAYBE_WEAKREF
    before it is published, standing for an earlier read of it through a container's locked
    fallback (`_Py_NewRefWithLock`, what sets it in real 3.13t; a dict or list store does not)
    or a weak reference to it, so that lock-free reads of it can succeed."""
    o = await t.new_object(tp)
    store_field(t, o, PAYLOAD, value)
    if maybe_weakref:
        await t.set_maybe_weakref(o)
    return o


async def _replace(t, s: _Slot, new: int) -> int:
    """Store `new` in the slot under its lock; return the old item (the slot's reference)."""
    await t.lock(s.lock)
    old = await t.mem.exchange(s.addr, new, 8, SEQ_CST)
    await s.lock.unlock()
    return old


def _use(t, o: int) -> None:
    if load_field(t, o, PAYLOAD) == 0:
        raise ViolationError("check", f"{t.vt.label} reads an item at {o:#x} with no value")


# ---------------------------------------------------------------------------------------------
# slot-replace, slot-replace-debug

async def _lockfree_reader(t) -> None:
    s = t.shared
    for _ in range(2):
        o = await t.xget_ref(s.addr)
        if o:
            _use(t, o)
            await t.decref(o)
        await t.periodic_check()


async def _replacing_writer(t) -> None:
    s = t.shared
    s.old = await _new_item(t, s.old_type, 1)
    await t.mem.store(s.addr, s.old, 8, SEQ_CST)
    reader = await t.spawn(_lockfree_reader, name="reader")
    new = await _new_item(t, s.new_type, 2)
    await t.decref(await _replace(t, s, new))   # the last reference, unless the reader has one
    await t.periodic_check()
    # Allocate another size class: the emptied page of the old item must not be reused for it
    # while the reader may still hold the old pointer.
    filler = await t.new_object(s.filler_type)
    await t.decref(filler)
    await t.join(reader)
    await t.decref(await _replace(t, s, 0))


def _freed_object_reads_as_freed(rt) -> None:
    """test_capi.test_mem's `check_pyobject_freed_is_freed`: with the debug hooks, a freed
    object reads as freed (its `ob_type` is DEADBYTE)."""
    s = rt.shared
    if not obmalloc_debug.object_is_freed(rt.mem, s.old):
        ob_type = rt.mem.raw_load(s.old + 24, 8)
        raise ViolationError(
            "check", f"the freed {s.old_type.name} at {s.old:#x} does not read as freed: "
            f"its ob_type is {ob_type:#x}, not DEADBYTE")


SLOT_REPLACE = Scenario(
    name="slot-replace",
    description="lock-free read of a dict-like slot vs. a writer that replaces the item and "
                "drops the last reference, over delayed page reuse",
    threads=(("writer", _replacing_writer),),
    setup=_slot_setup(BIG_ITEM, NEW_ITEM),
    mutations={"no-page-delay": ("premature-reuse", "use-after-free", "resurrection")},
    pct_steps=60,
)

SLOT_REPLACE_DEBUG = Scenario(
    name="slot-replace-debug",
    description="the slot-replace scenario with the debug allocator and pre-header GC objects",
    threads=(("writer", _replacing_writer),),
    setup=_slot_setup(GC_ITEM, GC_NEW_ITEM),
    check=_freed_object_reads_as_freed,
    mutations={
        "debug-fill-header": ("resurrection", "data-race"),
        "debug-dealloc-heap-bug": ("resurrection", "data-race"),
        "debug-offset-bug": ("check",),
    },
    pct_steps=60,
    config={"debug_allocator": True},
    dpor=True,
)


# ---------------------------------------------------------------------------------------------
# hand-off

async def _receiver(t, o: int) -> None:
    await t.incref(o)                   # a shared reference of its own
    _use(t, o)
    await t.decref(o)
    await t.decref(o)                   # the handed-off reference: the last one


async def _producer(t) -> None:
    o = await _new_item(t, OLD_ITEM, 1, maybe_weakref=False)
    await t.spawn(_receiver, o, name="receiver")        # hands its reference over
    await t.periodic_check()
    await t.periodic_check()


HAND_OFF = Scenario(
    name="hand-off",
    description="a fresh object handed to another thread, which drops the last reference: "
                "queued to the owner, or merged directly once the owner has exited",
    threads=(("producer", _producer),),
    mutations={"brc-no-queue": ("leak", "use-after-free")},
    pct_steps=40,
)


# ---------------------------------------------------------------------------------------------
# merge-vs-reader

async def _reader_once(t) -> None:
    s = t.shared
    o = await t.xget_ref(s.addr)
    await s.ready.set()
    if o:
        _use(t, o)
        await t.wait(s.go)                    # drop it while the owner merges
        await t.decref(o)


async def _merging_owner(t) -> None:
    s = t.shared
    o = await _new_item(t, HOLDER, 1)
    store_field(t, o, CHILD, await _new_item(t, OLD_ITEM, 2, maybe_weakref=False))
    await t.mem.store(s.addr, o, 8, SEQ_CST)
    reader = await t.spawn(_reader_once, name="reader")
    await t.wait(s.ready)                     # the reader has taken its reference (or not)
    await s.go.set()
    await t.decref(await _replace(t, s, 0))     # local 1 -> 0: merge unless shared is 0
    await t.join(reader)


MERGE_VS_READER = Scenario(
    name="merge-vs-reader",
    description="the owner merges on its last local decref while a lock-free reader takes "
                "and drops a reference",
    threads=(("owner", _merging_owner),),
    setup=_slot_setup(OLD_ITEM, NEW_ITEM),
    # The late store lands after the free (use-after-free) or before it, unordered with it:
    # then the free's own write races with it (data-race), which in C11 is the same bug.
    mutations={"merge-order-bug": ("use-after-free", "data-race")},
    pct_steps=30,
    dpor=True,
)


# ---------------------------------------------------------------------------------------------
# tryincref-zero

async def _reader_with_fallback(t) -> None:
    """A global-variable style read (`_Py_dict_lookup_threadsafe`): one lock-free attempt,
    then the locked path, whose `_Py_NewRefWithLock` sets MAYBE_WEAKREF (and adds 4) so that
    later lock-free reads succeed."""
    s = t.shared
    o = await t.mem.load(s.addr, 8, SEQ_CST)
    if o and await t.try_incref_compare(s.addr, o):
        _use(t, o)
        await t.decref(o)
        return
    await t.lock(s.lock)
    o = await t.mem.load(s.addr, 8, SEQ_CST)
    if o:
        await t.new_ref_with_lock(o)
    await s.lock.unlock()
    if o:
        _use(t, o)
        await t.decref(o)


async def _plain_owner(t) -> None:
    s = t.shared
    o = await _new_item(t, OLD_ITEM, 1, maybe_weakref=False)   # shared field stays 0
    await t.mem.store(s.addr, o, 8, SEQ_CST)
    reader = await t.spawn(_reader_with_fallback, name="reader")
    await t.decref(await _replace(t, s, 0))     # fast path: shared 0 -> freed, no atomic
    await t.join(reader)


TRYINCREF_ZERO = Scenario(
    name="tryincref-zero",
    description="lock-free try-incref of an object whose shared field is 0 while its owner "
                "frees it on the fast path",
    threads=(("owner", _plain_owner),),
    setup=_slot_setup(OLD_ITEM, NEW_ITEM),
    mutations={"tryincref-accepts-zero": ("resurrection",)},
    pct_steps=30,
    dpor=True,
)


SCENARIOS = (SLOT_REPLACE, SLOT_REPLACE_DEBUG, HAND_OFF, MERGE_VS_READER, TRYINCREF_ZERO)
