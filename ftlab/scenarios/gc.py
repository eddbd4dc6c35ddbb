"""Scenarios of the free-threaded GC (`ftlab.runtime.gc`, `Python/gc_free_threading.c`).

- `gc-cycle`: a reference cycle across two threads' lists. Thread a owns list A, thread b owns
  list B; b hands a two references to B; a drops one of them (B's shared field is 0, so the
  decrement queues B to b's BRC queue), appends the other to A and appends A to B; both drop
  their own references, so A -> B -> A is garbage, with B's count still including the queued
  reference. b keeps list C, which holds list D (reachable only through C), runs a few periodic
  checks and waits; a collects (`gc.collect()`), stopping b at a periodic check or parking it
  while it waits. The collection must free A and B exactly once, and leave C and D with
  their `ob_tid` restored, so that b frees them on its fast path afterwards.
  `gc-no-merge`: B's queued reference looks external, the cycle survives (`check`, `leak`).
  `gc-tid-not-restored`: D keeps ob_tid 0 unmerged (`refcount`).
- `gc-thread-exit`: the same cycle, but b exits right after building it (its heaps abandoned,
  its segments in the interpreter's pool) while a collects, possibly before, during or after
  b's exit; b also hands a list E to a, which a still holds after the collection (E's segment
  may be abandoned: `gc_restore_tid` merges it). `gc-skips-abandoned`: B is never scanned, A
  looks referenced from outside, the cycle survives (`check`, `leak`).
- `gc-threshold`: two threads allocate and free GC lists (a buffer of 2, threshold 2 through
  `Config.gc_local_threshold`/`gc_threshold`), handing some to each other; a flush that
  crosses the threshold schedules a collection through the eval breaker, run at the next
  periodic check while the other thread allocates. `gc-count-lost`: the deallocation flush
  loses its count (`gc-count`).
- `gc-reader-page`: a lock-free reader holds a pointer to an item of a shared list (it read
  `ob_item[i]` without a lock and is about to try-incref it) while the writer appends (the
  list is shared, so the resize hands the old item array to `_PyMem_FreeDelayed`), replaces
  the item, drops it (its large page empties), allocates another size class and collects:
  the collection processes the delayed free with the world stopped
  (`_PyMem_ProcessDelayedNoDealloc`) and visits the heaps; the reader's try-incref must still
  fail cleanly (the page is kept for QSBR, its header reads as dead). A collection cannot
  start while the reader holds the pointer (it stops only at a periodic check).
  `no-page-delay`: the page is reused while the reader may still read it; `no-free-delayed`:
  the old array is freed while the reader may still index it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ftlab.runtime.listobject import OB_ITEM, list_append, list_new, list_setitem
from ftlab.runtime.object import PyType, try_xget_ref
from ftlab.scenarios import Scenario
from ftlab.sim.sync import Event
from ftlab.sim.violation import ViolationError

CHECKS = 2                      # periodic checks b passes while a may be collecting


@dataclass
class _Shared:
    ready: Event
    built: Event
    dropped: Event
    collected: Event
    A: int = 0
    B: int = 0
    E: int = 0


def _setup(rt) -> None:
    rt.shared = _Shared(rt.event("b ready"), rt.event("cycle built"), rt.event("b dropped"),
                        rt.event("collected"))


def _check_cycle_freed(rt) -> None:
    if rt.gc.collected != 2:
        raise ViolationError("check", f"the collection freed {rt.gc.collected} object(s), not "
                                      "the two lists of the cycle A -> B -> A")


# ---------------------------------------------------------------------------------------------
# gc-cycle

async def _cycle_b(t, keep_alive: bool) -> None:
    s = t.shared
    B = await list_new(t)
    await t.incref(B)
    await t.incref(B)                   # two references for a
    s.B = B
    C = D = 0
    if keep_alive:
        C = await list_new(t)
        D = await list_new(t)
        await list_append(t, C, D)      # D's only reference is C's
    await s.ready.set()
    await t.wait(s.built)
    await t.decref(B)                   # b's own reference
    await s.dropped.set()
    if not keep_alive:
        return                          # exit: heaps abandoned, maybe while a collects
    for _ in range(CHECKS):
        await t.periodic_check()        # a stop request or the queued merge
    await t.wait(s.collected)
    await t.periodic_check()
    await t.decref(C)                   # frees C and D on b's fast path


async def _cycle_a(t, keep_alive: bool) -> None:
    s = t.shared
    A = await list_new(t)
    s.A = A
    b = await t.spawn(_cycle_b, keep_alive, name="b")
    await t.wait(s.ready)
    B = s.B
    await t.decref(B)                   # shared field 0: queued to b's BRC queue
    await list_append(t, A, B)          # A -> B (a's second reference)
    await t.incref(A)
    await list_append(t, B, A)          # B -> A
    await t.decref(A)                   # a's own reference: A is only B's now
    await s.built.set()
    await t.wait(s.dropped)
    await t.gc_collect()
    await s.collected.set()
    await t.join(b)


async def _cycle_main(t) -> None:
    await _cycle_a(t, True)


GC_CYCLE = Scenario(
    name="gc-cycle",
    description="a reference cycle across two threads' lists, one member with a queued BRC "
                "reference, collected by one thread while the other runs",
    threads=(("a", _cycle_main),),
    setup=_setup,
    check=_check_cycle_freed,
    mutations={"gc-no-merge": ("check", "leak"),
               "gc-tid-not-restored": ("refcount", "leak", "check")},
    pct_steps=80,
)


# ---------------------------------------------------------------------------------------------
# gc-thread-exit

async def _exit_b(t) -> None:
    s = t.shared
    E = await list_new(t)
    s.E = E                             # handed to a (b keeps no reference)
    B = await list_new(t)
    await t.incref(B)
    s.B = B
    await s.ready.set()
    await t.wait(s.built)
    await t.decref(B)


async def _exit_a(t) -> None:
    s = t.shared
    A = await list_new(t)
    b = await t.spawn(_exit_b, name="b")
    await t.wait(s.ready)
    B = s.B
    await list_append(t, A, B)          # A -> B (the reference b handed over)
    await t.incref(A)
    await list_append(t, B, A)          # B -> A
    await t.decref(A)
    await s.built.set()
    await t.periodic_check()
    await t.gc_collect()                # b is running, exiting or gone
    await t.join(b)
    if t.rt.gc.collected < 2:
        await t.gc_collect()            # b had not dropped B yet: collect again
    await t.decref(s.E)


GC_THREAD_EXIT = Scenario(
    name="gc-thread-exit",
    description="a cycle across two threads collected while one of them exits and abandons "
                "its heaps (its objects are then in the abandoned pool)",
    threads=(("a", _exit_a),),
    setup=_setup,
    check=_check_cycle_freed,
    mutations={"gc-skips-abandoned": ("check", "leak")},
    pct_steps=80,
)


# ---------------------------------------------------------------------------------------------
# gc-threshold

BATCH = 3                       # lists each thread allocates, then frees


@dataclass
class _HandOff:
    handed: Event
    item: int = 0


def _threshold_setup(rt) -> None:
    rt.shared = _HandOff(rt.event("handed"))


async def _allocate_and_free(t) -> None:
    xs = []
    for _ in range(BATCH):
        xs.append(await list_new(t))    # record_allocation: a flush every 2
        await t.periodic_check()        # GC_SCHEDULED runs the collection here
    for x in xs:
        await t.decref(x)               # record_deallocation: a flush at -2
        await t.periodic_check()


async def _threshold_b(t) -> None:
    s = t.shared
    s.item = await list_new(t)          # handed to a, which drops it
    await s.handed.set()
    await _allocate_and_free(t)


async def _threshold_a(t) -> None:
    s = t.shared
    b = await t.spawn(_threshold_b, name="b")
    await _allocate_and_free(t)
    await t.wait(s.handed)
    await t.decref(s.item)              # queued to b, or merged here once b has gone
    await t.join(b)
    await t.periodic_check()


GC_THRESHOLD = Scenario(
    name="gc-threshold",
    description="two threads allocate and free GC objects with buffered counts and hand one "
                "over; a flush past the threshold schedules a collection via the eval breaker",
    threads=(("a", _threshold_a),),
    setup=_threshold_setup,
    mutations={"gc-count-lost": ("gc-count",)},
    pct_steps=80,
    config={"gc_local_threshold": 2, "gc_threshold": 2},
)


# ---------------------------------------------------------------------------------------------
# gc-reader-page

# A large GC object, alone in a large page of the GC heap (freed, not retired, when it dies);
# small objects of another size class then want a fresh page.
BIG_GC_ITEM = PyType("BigGCItem", basicsize=160 << 10, gc=True)
SMALL_ITEM = PyType("SmallItem", basicsize=48)
OTHER_ITEM = PyType("OtherItem", basicsize=112)
READS = 2
APPENDS = 4                     # X and 3 items fill the first array (capacity 4); one more


@dataclass
class _ReaderPage:
    lst: int = 0
    seen: list[int] = field(default_factory=list)


def _reader_page_setup(rt) -> None:
    rt.shared = _ReaderPage()


async def _list_get_item_ref(t, lst: int, i: int) -> int:
    """The lock-free `list[i]` of the FT build (`list_get_item_ref` without its locked
    fallback, which issue 10 adds): `ob_size` relaxed, `ob_item` acquire, `_Py_TryXGetRef`."""
    from ftlab.runtime.listobject import OB_SIZE
    from ftlab.sim.atomics import ACQUIRE, RELAXED
    mem = t.mem
    if not 0 <= i < await mem.load(lst + OB_SIZE, 8, RELAXED):
        return 0
    items = await mem.load(lst + OB_ITEM, 8, ACQUIRE)   # pairs with list_resize's release
    if items == 0:
        return 0
    return await try_xget_ref(t, items + 8 * i)


async def _page_reader(t) -> None:
    s = t.shared
    for _ in range(READS):
        item = await _list_get_item_ref(t, s.lst, 0)
        if item:
            s.seen.append(item)
            await t.decref(item)
        await t.periodic_check()


async def _page_writer(t) -> None:
    from ftlab.runtime.object import GC_BITS_SHARED, gc_set_bits, gc_track
    s = t.shared
    lst = await list_new(t)
    # A list read lock-free by another thread is shared (ensure_shared_on_read, issue 10).
    gc_set_bits(t.mem, lst, GC_BITS_SHARED)
    x = await t.new_object(BIG_GC_ITEM)
    gc_track(t, x)
    await t.set_maybe_weakref(x)        # stored in a lock-free-readable slot
    await list_append(t, lst, x)
    s.lst = lst
    reader = await t.spawn(_page_reader, name="reader")
    for _ in range(APPENDS):            # the last one resizes: the old array is delayed
        item = await t.new_object(SMALL_ITEM)
        await t.set_maybe_weakref(item)
        await list_append(t, lst, item)
    y = await t.new_object(SMALL_ITEM)
    await t.set_maybe_weakref(y)
    await list_setitem(t, lst, 0, y)    # drops X: its large page empties
    # Another size class: X's emptied page must not serve it while the reader may still
    # hold the pointer to X it loaded without a lock.
    z = await t.new_object(OTHER_ITEM)
    await t.gc_collect()                # world stopped: delayed frees and heap visits
    w = await t.new_object(OTHER_ITEM)
    await t.join(reader)
    for o in (z, w, lst):
        await t.decref(o)


GC_READER_PAGE = Scenario(
    name="gc-reader-page",
    description="a lock-free list reader holds a pointer to an item whose page empties, "
                "while the writer allocates another size class and collects",
    threads=(("writer", _page_writer),),
    setup=_reader_page_setup,
    mutations={"no-page-delay": ("premature-reuse", "use-after-free", "resurrection"),
               "no-free-delayed": ("premature-reuse", "use-after-free")},
    pct_steps=60,
)


SCENARIOS = (GC_CYCLE, GC_THREAD_EXIT, GC_THRESHOLD, GC_READER_PAGE)
