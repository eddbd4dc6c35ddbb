"""Lists: `Objects/listobject.c` (free-threaded build), the parts a GC container needs.

A list is a GC object (`PyListObject`, in the GC heap: lists have no managed dict) whose items
live in a separate `_PyListArray` block of the MEM heap (`PyMem_Malloc`):

    PyListObject                            _PyListArray
    +0  PyObject header                     +0  allocated   capacity of the array
    +32 ob_size    i64  number of items     +8  ob_item[]   strong references
    +40 ob_item    u64  -> _PyListArray.ob_item (NULL when allocated is 0)
    +48 allocated  i64

Invariant: `0 <= ob_size <= allocated`; `ob_item[0:ob_size]` hold strong references (or NULL
while being built), the rest is zero. `list_resize` (`list_resize` of listobject.c) allocates a
new array with the ~12.5 % over-allocation, copies the items, publishes the new `ob_item` with
a release store (pairs with the acquire load of a lock-free `list[i]` reader) and frees the old
array with `free_list_items(old, use_qsbr)`: through `_PyMem_FreeDelayed` when the list may be
read lock-free by other threads (`_PyObject_GC_IS_SHARED`, set by `ensure_shared_on_resize`
when a thread that does not own the list resizes it, and by `ensure_shared_on_read` when one
reads it), at once otherwise. `list_dealloc` frees its array at once (nobody can read a dead
list). `list_clear_impl` unlinks the array first (size 0, `ob_item` NULL) and then drops the
items, so a finalizer run by one of those decrefs sees an empty list; `list.clear()` (and
`PyList_Clear`) is a resize (`is_resize`: `ensure_shared_on_resize`, the array freed through
QSBR if the list is shared), `tp_clear` (`list_clear_slot`, the GC's `delete_garbage`) is not:
an unreachable list has no reader, its array is freed at once (3.13.15 and 3.14 alike).

Every mutator here (`list_append`, `list_setitem`, `list_resize`, `list_clear`) is what
CPython runs *inside* `Py_BEGIN_CRITICAL_SECTION(self)`: the caller holds the list's critical
section (`pylist_append`, `PyList_Append`, takes it), or is the only thread that can reach the
list (the GC scenarios hand a list from thread to thread through joins and events).

Lock-free `list[i]` (`list_get_item_ref`): a list that neither is owned by the reader nor is
shared is read under the lock (`list_item_impl`, which marks it shared). Otherwise: load
`ob_size` (relaxed) and check the index, load `ob_item` (pairs with `list_resize`'s release
store), check the index against the array's own capacity (`ob_size` and `ob_item` are loaded
separately: the list may have shrunk in between), then `_Py_TryXGetRef(&ob_item[i])`, the
try-incref re-checked against the slot. A failure takes `list_item_impl`: under the critical
section, `_Py_NewRefWithLock(ob_item[i])` (which sets MAYBE_WEAKREF on an item whose shared
field was 0, so that the next lock-free read of it succeeds). The old array the reader may
still index stays allocated until it passes a quiescent state: `free_list_items(.., use_qsbr)`
with `use_qsbr` the shared bit.

Mutation `list-items-freed-at-once`: `free_list_items` frees the old array of a shared list at
once, as for a list no other thread reads.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ftlab.runtime import critical_section as cs
from ftlab.runtime.object import (
    GC_BITS_SHARED,
    SIZEOF_PYOBJECT,
    PyType,
    gc_bits,
    gc_set_bits,
    gc_track,
    gc_untrack,
    is_immortal,
    is_owned_by,
    load_field,
    new_object,
    new_ref_with_lock,
    try_xget_ref,
)
from ftlab.sim.atomics import RELAXED, RELEASE, SEQ_CST
from ftlab.sim.memory import Tag

if TYPE_CHECKING:
    from ftlab.runtime.pystate import ThreadState

OB_SIZE = SIZEOF_PYOBJECT               # PyVarObject.ob_size
OB_ITEM = SIZEOF_PYOBJECT + 8
ALLOCATED = SIZEOF_PYOBJECT + 16
SIZEOF_LIST = SIZEOF_PYOBJECT + 24      # sizeof(PyListObject)
ARRAY_ITEMS = 8                         # offsetof(_PyListArray, ob_item)
_ARRAY_LAYOUT = ((0, "allocated", 0, {}), (ARRAY_ITEMS, "", 8, {}))   # Observer.block_layout


def new_allocated(newsize: int, oldsize: int) -> int:
    """`list_resize`'s capacity: ~12.5 % over-allocation rounded to 4, not over-allocated when
    the new size is closer to that than to the old size, 0 for an empty list."""
    if newsize == 0:
        return 0
    alloc = (newsize + (newsize >> 3) + 6) & ~3
    if newsize - oldsize > alloc - newsize:
        alloc = (newsize + 3) & ~3
    return alloc


def list_size(mem, op: int) -> int:
    """`PyList_GET_SIZE` (for the owner of the list's lock, tests and oracles)."""
    return mem.load_u64(op + OB_SIZE)


def list_items(mem, op: int) -> list[int]:
    """The items `ob_item[0:ob_size]` (plain reads; NULL slots included as 0)."""
    n = mem.load_u64(op + OB_SIZE)
    items = mem.load_u64(op + OB_ITEM)
    return [mem.load_u64(items + 8 * i) for i in range(n)]


def list_traverse(mem, op: int) -> list[int]:
    """`list_traverse`: the non-NULL items, from the first to the last."""
    return [item for item in list_items(mem, op) if item]


def is_list_shared(mem, op: int) -> bool:
    """`_PyObject_GC_IS_SHARED(self)`: the list may be read lock-free by other threads."""
    return bool(gc_bits(mem, op) & GC_BITS_SHARED)


def ensure_shared_on_resize(t: "ThreadState", op: int) -> None:
    """`ensure_shared_on_resize`: a thread that does not own the list writes it, so the owner
    (or a third thread) may be reading it lock-free: from now on old arrays go through QSBR."""
    if not is_owned_by(t, op) and not is_list_shared(t.mem, op):
        gc_set_bits(t.mem, op, GC_BITS_SHARED)


async def free_list_items(t: "ThreadState", items: int, use_qsbr: bool) -> None:
    """`free_list_items`: free the `_PyListArray` holding `items`, after a QSBR grace period if
    lock-free readers may still index it."""
    array = items - ARRAY_ITEMS
    if use_qsbr and not t.rt.mutated("list-items-freed-at-once"):
        size = ARRAY_ITEMS + 8 * t.mem.load_u64(array)
        await t.free_delayed(array, size)
    else:
        await t.free(array)


async def list_allocate_array(t: "ThreadState", capacity: int, zeroed: bool = True,
                              owner: int = 0) -> int:
    """`list_allocate_array`: a `_PyListArray` of `capacity` items, zeroed unless the caller
    writes every item itself; returns `ob_item`. `owner`: the list it is for (timeline names)."""
    array = await t.malloc(ARRAY_ITEMS + 8 * capacity)
    if owner:
        t.rt.observer.block_layout(array, owner, "ob_item", _ARRAY_LAYOUT)
    t.mem.store_u64(array, capacity, Tag.PAYLOAD)
    if zeroed:
        t.mem.fill(array + ARRAY_ITEMS, 8 * capacity, 0, Tag.PAYLOAD)
    return array + ARRAY_ITEMS


# ---------------------------------------------------------------------------------------------
# Creation, resize, mutation (each under the list's critical section in CPython: see above)

async def list_new(t: "ThreadState", size: int = 0) -> int:
    """`PyList_New(size)`: a tracked list of `size` NULL items, owned by `t`."""
    op = await new_object(t, LIST)
    mem = t.mem
    items = await list_allocate_array(t, size, owner=op) if size > 0 else 0
    mem.store_u64(op + OB_SIZE, size, Tag.PAYLOAD)
    mem.store_u64(op + OB_ITEM, items, Tag.PAYLOAD)
    mem.store_u64(op + ALLOCATED, size, Tag.PAYLOAD)
    gc_track(t, op)
    return op


async def list_resize(t: "ThreadState", op: int, newsize: int) -> None:
    """`list_resize` (FT): a new array unless the capacity already fits, items copied, the new
    `ob_item` published with a release store, the old array freed (delayed if shared)."""
    mem = t.mem
    allocated = mem.load_u64(op + ALLOCATED)
    size = mem.load_u64(op + OB_SIZE)
    if allocated >= newsize and newsize >= (allocated >> 1):
        await mem.store(op + OB_SIZE, newsize, 8, RELAXED, Tag.PAYLOAD)
        return
    capacity = new_allocated(newsize, size)
    ensure_shared_on_resize(t, op)
    items = await list_allocate_array(t, capacity, zeroed=False, owner=op) if capacity else 0
    old_items = mem.load_u64(op + OB_ITEM)
    if items:
        keep = min(capacity, allocated) if old_items else 0
        if keep:
            mem.write_bytes(items, mem.read_bytes(old_items, 8 * keep))   # memcpy
        mem.fill(items + 8 * keep, 8 * (capacity - keep), 0, Tag.PAYLOAD)   # the tail
    # pairs with the acquire load of ob_item by lock-free readers (list_get_item_ref)
    await mem.store(op + OB_ITEM, items, 8, RELEASE, Tag.PAYLOAD)
    mem.store_u64(op + ALLOCATED, capacity, Tag.PAYLOAD)
    await mem.store(op + OB_SIZE, newsize, 8, RELAXED, Tag.PAYLOAD)
    if old_items:
        await free_list_items(t, old_items, is_list_shared(mem, op))


async def list_append(t: "ThreadState", op: int, item: int) -> None:
    """`_PyList_AppendTakeRef`: append `item`, stealing the caller's reference."""
    mem = t.mem
    load_field(t, op, OB_SIZE)          # the list must be alive
    n = mem.load_u64(op + OB_SIZE)
    if mem.load_u64(op + ALLOCATED) > n:
        # pairs with the acquire load of the item by lock-free readers
        await mem.store(mem.load_u64(op + OB_ITEM) + 8 * n, item, 8, RELEASE, Tag.PAYLOAD)
        await mem.store(op + OB_SIZE, n + 1, 8, RELAXED, Tag.PAYLOAD)
        return
    await list_resize(t, op, n + 1)
    await mem.store(mem.load_u64(op + OB_ITEM) + 8 * n, item, 8, RELEASE, Tag.PAYLOAD)


def _check_index(t: "ThreadState", op: int, i: int) -> int:
    n = load_field(t, op, OB_SIZE)
    if not 0 <= i < n:
        raise IndexError(f"list index {i} out of range for a list of {n} items")
    return t.mem.load_u64(op + OB_ITEM) + 8 * i


async def list_setitem(t: "ThreadState", op: int, i: int, item: int) -> None:
    """`PyList_SetItem`: store `item` (stealing the caller's reference) and drop the old one."""
    slot = _check_index(t, op, i)
    old = t.mem.load_u64(slot)
    await t.mem.store(slot, item, 8, RELEASE, Tag.PAYLOAD)
    if old:
        await t.decref(old)


async def pylist_append(t: "ThreadState", op: int, item: int) -> None:
    """`PyList_Append`: a new reference to `item` appended under the list's critical section."""
    await t.incref(item)
    c = await cs.begin(t, op)
    await list_append(t, op, item)
    await cs.end(t, c)


def list_getitem(t: "ThreadState", op: int, i: int) -> int:
    """`PyList_GET_ITEM`: a borrowed reference to item `i` (0 for NULL), read by the thread
    that holds the list's lock."""
    return t.mem.load_u64(_check_index(t, op, i))


# ---------------------------------------------------------------------------------------------
# Reading an item: the lock-free path first, the locked one beside it

def list_capacity(mem, items: int) -> int:
    """`list_capacity(ob_item)`: the `allocated` word of the `_PyListArray` (a plain read: it
    is written once, before the array is published)."""
    return mem.load_u64(items - ARRAY_ITEMS)


async def list_get_item_ref(t: "ThreadState", op: int, i: int) -> int:
    """`list_get_item_ref`: a new reference to item `i`, or 0 if out of range."""
    mem = t.mem
    if not is_owned_by(t, op) and not is_list_shared(mem, op):
        return await list_item_impl(t, op, i)
    size = await mem.load(op + OB_SIZE, 8, RELAXED)
    if not 0 <= i < size:
        return 0
    ob_item = await mem.load(op + OB_ITEM, 8, SEQ_CST)    # pairs with list_resize's release
    if ob_item == 0:
        return 0
    if not 0 <= i < list_capacity(mem, ob_item):
        return 0
    item = await try_xget_ref(t, ob_item + 8 * i)
    if item == 0:
        return await list_item_impl(t, op, i)
    return item


async def list_item_impl(t: "ThreadState", op: int, i: int) -> int:
    """`list_item_impl`: under the critical section mark the list shared (from now on its old
    arrays go through QSBR) and return `_Py_NewRefWithLock(ob_item[i])`, or 0."""
    c = await cs.begin(t, op)
    mem = t.mem
    if not is_list_shared(mem, op):
        gc_set_bits(mem, op, GC_BITS_SHARED)
    item = 0
    if 0 <= i < load_field(t, op, OB_SIZE):
        item = mem.load_u64(mem.load_u64(op + OB_ITEM) + 8 * i)
        if item:
            await new_ref_with_lock(t, item)
    await cs.end(t, c)
    return item


# ---------------------------------------------------------------------------------------------
# tp_clear and tp_dealloc

def _run_end(raw: bytes, pos: int, word: bytes) -> int:
    """The end of the run of `word` (8 bytes) starting at `pos` in `raw`: whole-run byte
    comparisons, galloping then bisecting, so `[None] * 131072` costs ~20 memcmps, not 131072
    Python steps."""
    words = (len(raw) - pos) // 8
    good, k = 1, 2
    while k <= words and raw[pos:pos + 8 * k] == word * k:
        good, k = k, 2 * k
    bad = min(k, words + 1)
    while bad - good > 1:
        mid = (good + bad) // 2
        if raw[pos:pos + 8 * mid] == word * mid:
            good = mid
        else:
            bad = mid
    return pos + 8 * good


async def _decref_items(t: "ThreadState", items: int, n: int) -> None:
    """`Py_XDECREF` of `items[0:n]`, the last first. The array is read in one go (what the C
    loop's plain loads read: only this thread can reach it now). A decref of an immortal item
    changes nothing (an immortal object stays immortal and a mortal one does not become one),
    so it is only counted, and a run of one immortal item (`[None] * 131072`) or of NULLs is
    skipped as a whole; the mortal items are then decref'd from the last to the first."""
    mem = t.mem
    raw = mem.read_bytes(items, 8 * n) if n else b""
    immortal: dict[int, bool] = {0: True}       # NULL: skipped, not counted
    mortal: list[int] = []
    skipped = 0
    pos = 0
    while pos < len(raw):
        (item,) = struct.unpack_from("<Q", raw, pos)
        known = immortal.get(item)
        if known is None:
            known = immortal[item] = is_immortal(mem, item)
        if not known:
            mortal.append(item)
            pos += 8
            continue
        stop = _run_end(raw, pos, raw[pos:pos + 8])
        if item:
            skipped += (stop - pos) // 8
        pos = stop
    t.rt.stats["refcnt_immortal"] += skipped
    for item in reversed(mortal):
        await t.decref(item)


async def list_clear(t: "ThreadState", op: int) -> None:
    """`list_clear` (`list.clear()`, `PyList_Clear`): a resize to nothing."""
    await list_clear_impl(t, op, True)


async def list_clear_slot(t: "ThreadState", op: int) -> None:
    """`list_clear_slot` (`tp_clear`, run by the GC on an unreachable list)."""
    await list_clear_impl(t, op, False)


async def list_clear_impl(t: "ThreadState", op: int, is_resize: bool) -> None:
    """`list_clear_impl`: unlink the array (size 0, `ob_item` NULL, allocated 0), drop the
    items from the last to the first, free the array: through QSBR when this is a resize of a
    shared list (a non-owner's resize shares it first), at once otherwise."""
    mem = t.mem
    load_field(t, op, OB_SIZE)
    items = mem.load_u64(op + OB_ITEM)
    if items == 0:
        return
    n = mem.load_u64(op + OB_SIZE)
    await mem.store(op + OB_SIZE, 0, 8, RELAXED, Tag.PAYLOAD)
    await mem.store(op + OB_ITEM, 0, 8, RELEASE, Tag.PAYLOAD)
    mem.store_u64(op + ALLOCATED, 0, Tag.PAYLOAD)
    await _decref_items(t, items, n)
    if is_resize:
        ensure_shared_on_resize(t, op)
    await free_list_items(t, items, is_resize and is_list_shared(mem, op))


async def list_dealloc(t: "ThreadState", op: int) -> None:
    """The body of `list_dealloc` before the object is freed: untrack, drop the items from the
    last to the first, free the array at once (a dead list has no readers)."""
    gc_untrack(t, op)
    mem = t.mem
    items = load_field(t, op, OB_ITEM)
    if items == 0:
        return
    n = mem.load_u64(op + OB_SIZE)
    await _decref_items(t, items, n)
    await free_list_items(t, items, False)


LIST = PyType("list", basicsize=SIZEOF_LIST, gc=True, clear=list_dealloc,
              traverse=list_traverse, tp_clear=list_clear_slot)
