"""List resize vs. a lock-free reader (`Objects/listobject.c`, free-threaded build): the
delayed free of a list's old item array (`_PyMem_FreeDelayed`, `ftlab.runtime.obmalloc`).

- `list-resize`: a shared list (a module-level `[None] * 131072`: its item array is just over
  1 MiB) is read by a reader thread without the list's lock, the way `list_get_item_ref` does:
  load `ob_size` (relaxed), load `ob_item` (an atomic load that pairs with the writer's release
  store), then `_Py_TryXGetRef(&ob_item[i])` on the last item, with the locked `list_item_impl`
  as the fallback; it uses the item, drops it and passes the eval loop's periodic check. The
  writer appends two new objects under the list's lock (`_PyList_AppendTakeRef`); the first
  append finds the array full and resizes it (`list_resize`: a new, bigger array, the items
  copied, the new array published with a release store, then the old one freed with
  `_PyMem_FreeDelayed`, the list being shared). Its second item is an object of a size class
  the writer has not used yet, so mimalloc needs a fresh page for it.

  With the fix the old array stays allocated until the reader, which may still be indexing it,
  has passed a quiescent state (3.14: the array is over 1 MiB, so its goal is advanced at once;
  the writer's exit processes the interpreter queue, gh-130794). Mutation `no-free-delayed`:
  the old array is freed at once, and the fresh page is carved out of its memory while the
  reader may still read it: `premature-reuse`.

Model notes: the list object is a static (immortal) object with `ob_size`, `ob_item` and
`allocated` at the offsets of `PyListObject`; the item array is a `_PyListArray` (its
`allocated` word, then the items) from the MEM heap, copied with one bulk read and write
(`memcpy`). `list_get_item_ref` re-checks the index against the array's capacity because
`ob_size` and `ob_item` are loaded separately and the list may shrink in between; this
scenario only grows the list, and execution is sequentially consistent at scheduling points,
so the check can never fail here and is left out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ftlab.runtime.object import PyType, try_xget_ref
from ftlab.scenarios import Scenario
from ftlab.sim.atomics import RELAXED, RELEASE, SEQ_CST
from ftlab.sim.memory import Tag
from ftlab.sim.sync import Mutex
from ftlab.sim.violation import ViolationError

# PyListObject (64-bit, free-threaded): PyObject (32 bytes), ob_size, ob_item, allocated
OB_SIZE = 32
OB_ITEM = 40
ALLOCATED = 48
SIZEOF_LIST = 56
# _PyListArray: Py_ssize_t allocated, then the items
ARRAY_ITEMS = 8

INITIAL = 131_072               # [None] * INITIAL: an 8 + 1 MiB array, full
READS = 3

ITEM_A = PyType("ItemA", basicsize=48)
ITEM_B = PyType("ItemB", basicsize=112)     # a size class the writer has not used before


@dataclass
class _List:
    addr: int                   # the list object
    lock: Mutex                 # its per-object critical section
    none: int                   # Py_None
    appended: list[int] = field(default_factory=list)
    seen: list[int] = field(default_factory=list)


def _setup(rt) -> None:
    objects = rt.objects
    lst = objects.immortal_object(None, SIZEOF_LIST, "list")
    none = objects.immortal_object(None, 32, "None")
    rt.shared = _List(lst, rt.mutex("list lock"), none)


def new_allocated(newsize: int) -> int:
    """`list_resize`'s over-allocation: ~12.5% plus a little, a multiple of 4."""
    return (newsize + (newsize >> 3) + 6) & ~3


async def list_resize(t, lst: _List, newsize: int) -> None:
    """`list_resize` (FT), under the list's lock: a new `_PyListArray`, the items copied and the
    tail zeroed, published with a release store; the old array freed with
    `_PyMem_FreeDelayed` (the list is shared with the reader)."""
    mem = t.mem
    a = lst.addr
    allocated = mem.load_u64(a + ALLOCATED)
    size = mem.load_u64(a + OB_SIZE)
    new_alloc = new_allocated(newsize)
    array = await t.malloc(ARRAY_ITEMS + 8 * new_alloc)
    mem.store_u64(array, new_alloc, Tag.PAYLOAD)
    items = array + ARRAY_ITEMS
    old_items = mem.load_u64(a + OB_ITEM)
    if old_items:
        mem.write_bytes(items, mem.read_bytes(old_items, 8 * size))
    if new_alloc > size:
        mem.fill(items + 8 * size, 8 * (new_alloc - size), 0)
    # pairs with the reader's load of ob_item: it sees the copied items
    await mem.store(a + OB_ITEM, items, 8, RELEASE)
    mem.store_u64(a + ALLOCATED, new_alloc, Tag.PAYLOAD)
    await mem.store(a + OB_SIZE, newsize, 8, RELAXED)
    if old_items:
        old_size = ARRAY_ITEMS + 8 * allocated
        await t.free_delayed(old_items - ARRAY_ITEMS, old_size)     # free_list_items(.., 1)


async def list_append(t, lst: _List, item: int) -> None:
    """`_PyList_AppendTakeRef` under the list's critical section."""
    mem = t.mem
    a = lst.addr
    await t.lock(lst.lock)
    n = mem.load_u64(a + OB_SIZE)
    if mem.load_u64(a + ALLOCATED) > n:
        await mem.store(mem.load_u64(a + OB_ITEM) + 8 * n, item, 8, RELEASE)
        await mem.store(a + OB_SIZE, n + 1, 8, RELAXED)
    else:
        await list_resize(t, lst, n + 1)
        await mem.store(mem.load_u64(a + OB_ITEM) + 8 * n, item, 8, RELEASE)
    await lst.lock.unlock()


async def list_item_impl(t, lst: _List, i: int) -> int:
    """The locked read: `_Py_NewRefWithLock(ob_item[i])` under the list's lock."""
    mem = t.mem
    a = lst.addr
    await t.lock(lst.lock)
    item = 0
    if 0 <= i < mem.load_u64(a + OB_SIZE):
        item = mem.load_u64(mem.load_u64(a + OB_ITEM) + 8 * i)
        if item:
            await t.new_ref_with_lock(item)
    await lst.lock.unlock()
    return item


async def list_get_item_ref(t, lst: _List, i: int) -> int:
    """`list_get_item_ref` (FT): a new reference to item `i` without the lock, or through
    `list_item_impl` when the lock-free attempt fails."""
    mem = t.mem
    a = lst.addr
    size = await mem.load(a + OB_SIZE, 8, RELAXED)
    if not 0 <= i < size:
        return 0
    ob_item = await mem.load(a + OB_ITEM, 8, SEQ_CST)   # pairs with list_resize's release
    if ob_item == 0:
        return 0
    item = await try_xget_ref(t, ob_item + 8 * i)       # _Py_TryXGetRef(&ob_item[i])
    if item == 0:
        return await list_item_impl(t, lst, i)
    return item


async def _reader(t) -> None:
    lst = t.shared
    for _ in range(READS):
        size = await t.mem.load(lst.addr + OB_SIZE, 8, RELAXED)
        item = await list_get_item_ref(t, lst, size - 1)    # `lst[-1]`
        if item:
            lst.seen.append(item)
            if item != lst.none:
                await t.decref(item)
        await t.periodic_check()


async def _writer(t) -> None:
    lst = t.shared
    mem = t.mem
    # lst = [None] * INITIAL (list_repeat: an array of exactly INITIAL items, full)
    array = await t.malloc(ARRAY_ITEMS + 8 * INITIAL)
    mem.store_u64(array, INITIAL, Tag.PAYLOAD)
    mem.write_bytes(array + ARRAY_ITEMS, struct.pack("<Q", lst.none) * INITIAL)
    mem.store_u64(lst.addr + ALLOCATED, INITIAL, Tag.PAYLOAD)
    await mem.store(lst.addr + OB_ITEM, array + ARRAY_ITEMS, 8, RELEASE)
    await mem.store(lst.addr + OB_SIZE, INITIAL, 8, RELAXED)
    reader = await t.spawn(_reader, name="reader")
    for tp in (ITEM_A, ITEM_B):
        item = await t.new_object(tp)
        lst.appended.append(item)
        await list_append(t, lst, item)
        await t.periodic_check()
    await t.join(reader)
    # del lst: the items' references, then the array (list_dealloc frees it at once)
    await t.lock(lst.lock)
    items = mem.load_u64(lst.addr + OB_ITEM)
    await mem.store(lst.addr + OB_ITEM, 0, 8, RELEASE)
    await mem.store(lst.addr + OB_SIZE, 0, 8, RELAXED)
    await lst.lock.unlock()
    for item in lst.appended:
        await t.decref(item)
    await t.free(items - ARRAY_ITEMS)


def _check(rt) -> None:
    lst = rt.shared
    valid = {lst.none, *lst.appended}
    for item in lst.seen:
        if item not in valid:
            raise ViolationError("check", f"the reader got {item:#x}, which was never an item "
                                          f"of the list")


LIST_RESIZE = Scenario(
    name="list-resize",
    description="a lock-free reader indexes a shared list while a writer appends, resizes it "
                "and frees the old item array with _PyMem_FreeDelayed",
    threads=(("writer", _writer),),
    setup=_setup,
    check=_check,
    mutations={"no-free-delayed": ("premature-reuse", "use-after-free")},
    dfs_bound=2,
    pct_steps=70,
)

SCENARIOS = (LIST_RESIZE,)
