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

- `list-append-index` (`test_list.py`'s concurrent append and index, under the 3.14 policy):
  the writer starts a reader, handing it an object the reader drops first (a non-owner's
  decref of the writer's object: it goes to the writer's BRC queue and sets its
  EXPLICIT_MERGE eval-breaker bit); the reader then reads `lst[-1]` lock-free twice. The
  writer appends (a resize of the 1 MiB array: its free advances `wr_seq` and sets
  `should_process`), reaches its periodic check (the merge, then `_PyMem_ProcessDelayed` on
  `should_process`, while the reader may still be indexing the old array) and allocates a
  block of the old array's size, which reuses its memory if it was freed. An item freed
  before its goal in queue processing is caught here. Mutations: `list-items-freed-at-once`,
  `no-free-delayed`.

- `list-attach-c11` (c11 memory model): QSBR's store-buffering pair. The reader makes the
  list shared (a locked read), then twice blocks detached (`_Py_qsbr_detach`) and re-attaches
  (`_Py_qsbr_attach`: a seq_cst store of its sequence, then loads) to read `lst[-1]` lock-free;
  the writer clears the list (`list_clear`: `ob_item` NULL with a release store, the 1 MiB
  array to `_PyMem_FreeDelayed`) and its periodic check scans (`qsbr_poll_scan`: a seq_cst
  fence, then the slots). C11 forbids the scan reading OFFLINE while the re-attached reader
  loads the old `ob_item`; weakening either side allows it, and the reader then reads the
  freed array: mutations `qsbr-attach-release` and `qsbr-scan-no-fence`, found under c11 and
  never under SC (tests/scenarios/test_c11_rows.py).

Model notes: the list is a runtime list (`ftlab.runtime.listobject`) owned by the writer, its
appends `PyList_Append` under the list's critical section, the reads `list_get_item_ref`. The
reader's first read finds the list neither its own nor shared and takes `list_item_impl`,
which marks it shared: from then on the writer's resize frees the old array with
`_PyMem_FreeDelayed` (a resize before that frees it at once, which is safe: the reader has not
loaded `ob_item` yet). Mutations: `no-free-delayed` (every delayed free is immediate) and
`list-items-freed-at-once` (only `free_list_items` ignores the shared bit).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ftlab.runtime import critical_section as cs
from ftlab.runtime.listobject import (
    ALLOCATED, OB_ITEM, OB_SIZE, list_allocate_array, list_clear, list_get_item_ref, list_new,
    pylist_append,
)
from ftlab.runtime.object import PyType
from ftlab.scenarios import Scenario
from ftlab.sim.atomics import RELAXED
from ftlab.sim.memory import Tag
from ftlab.sim.sync import Event
from ftlab.sim.violation import ViolationError

INITIAL = 131_072               # [None] * INITIAL: an 8 + 1 MiB array, full
READS = 3
ARRAY_BYTES = 8 + 8 * INITIAL     # sizeof the full array's _PyListArray

ITEM_A = PyType("ItemA", basicsize=48)
ITEM_B = PyType("ItemB", basicsize=112)     # a size class the writer has not used before


@dataclass
class _List:
    none: int                   # Py_None
    addr: int = 0               # the list object
    appended: list[int] = field(default_factory=list)
    seen: list[int] = field(default_factory=list)
    shared_event: Event | None = None   # list-attach-c11: the reader has made the list shared


def _setup(rt) -> None:
    rt.shared = _List(rt.objects.immortal_object(None, 32, "None"))


async def list_repeat_none(t, n: int) -> int:
    """`[None] * n` (`list_repeat`): a list whose array holds exactly `n` items, full."""
    lst = await list_new(t)
    items = await list_allocate_array(t, n, zeroed=False, owner=lst)
    mem = t.mem
    mem.write_bytes(items, struct.pack("<Q", t.shared.none) * n, Tag.PAYLOAD)
    mem.store_u64(lst + OB_ITEM, items, Tag.PAYLOAD)
    mem.store_u64(lst + ALLOCATED, n, Tag.PAYLOAD)
    mem.store_u64(lst + OB_SIZE, n, Tag.PAYLOAD)
    return lst


async def _reader(t) -> None:
    lst = t.shared
    for _ in range(READS):
        size = await t.mem.load(lst.addr + OB_SIZE, 8, RELAXED)
        item = await list_get_item_ref(t, lst.addr, size - 1)    # `lst[-1]`
        if item:
            lst.seen.append(item)
            if item != lst.none:
                await t.decref(item)
        await t.periodic_check()


async def _writer(t) -> None:
    lst = t.shared
    lst.addr = await list_repeat_none(t, INITIAL)
    reader = await t.spawn(_reader, name="reader")
    for tp in (ITEM_A, ITEM_B):
        item = await t.new_object(tp)
        lst.appended.append(item)
        await pylist_append(t, lst.addr, item)
        await t.decref(item)
        await t.periodic_check()
    await t.join(reader)
    await t.decref(lst.addr)            # del lst: list_dealloc frees the array at once


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
    # the free may also come after the reader's plain read of the array's capacity with no
    # ordering between them: the allocator's write then races with it (data-race)
    mutations={"no-free-delayed": ("premature-reuse", "use-after-free", "data-race"),
               "list-items-freed-at-once": ("premature-reuse", "use-after-free", "data-race")},
    dfs_bound=2,
    pct_steps=80,
)

# ---------------------------------------------------------------------------------------------
# list-append-index

async def _indexer(t, arg: int) -> None:
    lst = t.shared
    await t.decref(arg)                 # the thread's argument, made by the writer
    for _ in range(2):
        size = await t.mem.load(lst.addr + OB_SIZE, 8, RELAXED)
        item = await list_get_item_ref(t, lst.addr, size - 1)
        if item:
            lst.seen.append(item)
            if item != lst.none:
                await t.decref(item)
        await t.periodic_check()


async def _appender(t) -> None:
    lst = t.shared
    lst.addr = await list_repeat_none(t, INITIAL)
    arg = await t.new_object(ITEM_A)
    reader = await t.spawn(_indexer, arg, name="reader")
    item = await t.new_object(ITEM_A)
    lst.appended.append(item)
    await pylist_append(t, lst.addr, item)      # the resize: should_process under 3.14
    await t.decref(item)
    await t.periodic_check()                    # merge; _PyMem_ProcessDelayed
    p = await t.malloc(ARRAY_BYTES)             # reuses the old array's memory if freed
    t.mem.fill(p, 64, 0xAB, Tag.PAYLOAD)
    await t.free(p)
    await t.join(reader)
    await t.decref(lst.addr)


LIST_APPEND_INDEX = Scenario(
    name="list-append-index",
    description="a lock-free reader indexes a list while the writer appends, processes its "
                "delayed frees on should_process and reuses the old array's memory",
    threads=(("writer", _appender),),
    setup=_setup,
    check=_check,
    mutations={"list-items-freed-at-once": ("premature-reuse", "use-after-free", "data-race"),
               "no-free-delayed": ("premature-reuse", "use-after-free", "data-race")},
    dfs_bound=2,
    pct_steps=60,
    config={"version": "3.14"},
)

# ---------------------------------------------------------------------------------------------
# list-attach-c11 (c11 memory model, ftlab/sim/c11.py): QSBR's store buffering pair

BLOCKED_STEPS = (0, 16)   # list-attach-c11: the reader's blocking calls, detached


async def _attacher(t, arg: int) -> None:
    lst = t.shared
    # a non-owner's decref of the writer's object: the writer's EXPLICIT_MERGE bit, so its
    # periodic check runs the pending work (3.14's should_process has no bit of its own)
    await t.decref(arg)
    item = await list_get_item_ref(t, lst.addr, INITIAL - 1)   # locked: marks the list shared
    lst.seen.append(item)
    await lst.shared_event.set()
    for blocked in BLOCKED_STEPS:
        # Py_BEGIN/END_ALLOW_THREADS around a blocking call (no access another thread could
        # see): `_Py_qsbr_detach`, `_Py_qsbr_attach`; then `lst[-1]` lock-free
        await t.detach()
        for _ in range(blocked):
            await t.yield_now()
        await t.attach()
        size = await t.mem.load(lst.addr + OB_SIZE, 8, RELAXED)
        item = await list_get_item_ref(t, lst.addr, size - 1)
        if item:
            lst.seen.append(item)
            if item != lst.none:
                await t.decref(item)


async def _clearer(t) -> None:
    lst = t.shared
    lst.addr = await list_repeat_none(t, INITIAL)
    arg = await t.new_object(ITEM_A)
    reader = await t.spawn(_attacher, arg, name="reader")
    await t.wait(lst.shared_event)
    c = await cs.begin(t, lst.addr)             # `lst.clear()`: list_clear_impl
    await list_clear(t, lst.addr)               # the old array freed with _PyMem_FreeDelayed
    await cs.end(t, c)
    await t.periodic_check()                    # _PyMem_ProcessDelayed: the scan
    p = await t.malloc(ARRAY_BYTES)             # reuses the old array's memory if freed
    t.mem.fill(p, 64, 0xAB, Tag.PAYLOAD)
    await t.free(p)
    await t.join(reader)
    await t.decref(lst.addr)


def _setup_attach(rt) -> None:
    _setup(rt)
    rt.shared.shared_event = Event(rt.machine, "shared")


LIST_ATTACH_C11 = Scenario(
    name="list-attach-c11",
    description="c11 memory model: a reader re-attaches (_Py_qsbr_attach's seq_cst store) and "
                "reads a shared list lock-free while the writer resizes it and its QSBR scan "
                "(after a seq_cst fence) decides whether the old array may be freed",
    threads=(("writer", _clearer),),
    setup=_setup_attach,
    check=_check,
    # Under SC the mutation is invisible: a scan that reads OFFLINE ran before the attach, so
    # the reader's next load sees the new array. Under C11 a release attach store lets the
    # scan read the stale OFFLINE while the reader holds the old array.
    mutations={"qsbr-attach-release": ("premature-reuse", "use-after-free", "data-race"),
               "qsbr-scan-no-fence": ("premature-reuse", "use-after-free", "data-race")},
    dfs_bound=2,
    pct_steps=60,
    dfs=False,  # the store choices make the DFS tree wide; random and PCT reach the bug
    config={"version": "3.14", "memory_model": "c11"},
    versions=("3.14",),
)

SCENARIOS = (LIST_RESIZE, LIST_APPEND_INDEX, LIST_ATTACH_C11)
