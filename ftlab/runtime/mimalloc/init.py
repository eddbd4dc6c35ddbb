"""Process and thread state (`src/init.c`, and the mimalloc part of CPython's `Python/pystate.c`).

`MiRuntime` is what C keeps in globals and in the interpreter state: the arenas, the segment
map (here a dict from segment base to `Segment`), the cookie, the interpreter's abandoned pool
(CPython: `interp->mimalloc.abandoned_pool`), the build (`MiBuild`: release, or `MI_DEBUG` 2 for
Py_DEBUG), and the hooks CPython's obmalloc.c plugs into mimalloc. One `MiRuntime` per
`Runtime`; nothing is module-global.

Thread binding (`tstate_mimalloc_bind`, run by `ThreadState.bind` before the thread's first
step): a private `Tld` whose backing heap is the MEM heap, and four heaps initialised with
`_mi_heap_init_ex(no_reclaim=false, tag=i)` for i = 0..3 (so the thread's heap list is
3 → 2 → 1 → 0); OBJECT and GC get `debug_offset` 24 (`offsetof(PyObject, ob_type)`: the debug
fills keep `ob_tid` and the refcount fields), GC_PRE 40 (after the 2-word pre-header), plus 16
with the PYMEM debug hooks; OBJECT, GC and GC_PRE use QSBR for their pages. The heap records
live in the runtime's metadata area of simulated memory (in C they are part of the thread
state, allocated from the raw domain).

Thread exit (`tstate_clear_mimalloc_heaps`, CPython's `_PyThreadState_ClearMimallocHeaps`):
`heap_collect_abandon` on the four heaps. Heaps made with `heap_new` that are still alive are
first deleted into the backing heap, as mimalloc's own `_mi_heap_done` does.

Bound: C's `_mi_abandoned_collect` pops up to 1024 segments at every heap collect, and `pop`
swaps the visited list back in when the abandoned list runs dry, so with a few abandoned
segments an exiting thread cycles through them thousands of times (four heaps, ~20 atomics a
pop): far beyond any step budget. The model stops after one full pass over the pool, as C with
fewer tries would (`abandoned_collect_exact = True` restores the 1024).

Time: mimalloc's purge delays are in milliseconds of wall-clock time. The model has no wall
clock; `clock_now` is virtual: `MI_STEPS_PER_MS` machine steps per millisecond (so a 10 ms
purge delay is 1,000 scheduling steps). It only decides when freed memory is decommitted, never
where a block goes.
"""

from __future__ import annotations

import random as _random
from collections import Counter
from typing import TYPE_CHECKING, Any

from ftlab.runtime.mimalloc import page as _page
from ftlab.runtime.mimalloc.bins import bin_size
from ftlab.runtime.mimalloc.heap import heap_collect_abandon, heap_delete, heap_init_ex, heap_new
from ftlab.runtime.mimalloc.types import (
    HEAP_TAG_COUNT,
    MI_BIN_FULL,
    MI_POOL_SIZE,
    PYDEBUG_BUILD,
    RELEASE_BUILD,
    AbandonedPool,
    Heap,
    HeapTag,
    Page,
    Tld,
)
from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.runtime.mimalloc.types import PageQueue
    from ftlab.runtime.pystate import Runtime, ThreadState

MI_STEPS_PER_MS = 100
RAW_REGION_SIZE = 32 << 20
RAW_COMMIT_CHUNK = 64 << 10
OFFSETOF_PYOBJECT_OB_TYPE = 24   # FT PyObject: ob_tid, flags/mutex/gc_bits/ref_local, ref_shared
PYMEM_DEBUG_HEADER = 16          # the PYMEM debug hooks' two words before the data


class MiHooks:
    """CPython's forward-declared `_PyMem_mi_*` functions (Objects/obmalloc.c) that its copy of
    mimalloc calls. These defaults are what they do for a page without QSBR (`use_qsbr` false):
    free at once. The QSBR model (`runtime/obmalloc.py`) replaces them with the delayed-reuse
    versions; `heap_collect_qsbr`, `page_maybe_free` and `page_is_safe_to_free` are awaitable
    because those can reach scheduling points."""

    def page_clear_qsbr(self, page: Page) -> None:
        """`_PyMem_mi_page_clear_qsbr`: forget a pending goal (none without QSBR)."""

    async def page_is_safe_to_free(self, page: Page) -> bool:
        """`_PyMem_mi_page_is_safe_to_free`."""
        return True

    async def page_maybe_free(self, page: Page, pq: "PageQueue", force: bool) -> bool:
        """`_PyMem_mi_page_maybe_free`: free now (True) or keep for a grace period (False)."""
        await _page.page_free(page, pq, force)
        return True

    def page_reclaimed(self, page: Page) -> None:
        """`_PyMem_mi_page_reclaimed`."""

    async def heap_collect_qsbr(self, heap: Heap) -> None:
        """`_PyMem_mi_heap_collect_qsbr`: free the thread's deferred pages whose goal is reached
        (there are none without QSBR)."""

    def page_unlink_qsbr(self, page: Page) -> None:
        """`_mi_page_abandon`'s `llist_remove(&page->qsbr_node)` (the goal is kept)."""


class MiThreadState:
    """CPython's `struct _mimalloc_thread_state`: the tld, the four tagged heaps and the
    current object heap."""

    __slots__ = ("tld", "heaps", "current_object_heap", "initialized", "page_list")

    def __init__(self, tld: Tld, heaps: list[Heap]) -> None:
        # the address of the QSBR page list's sentinel `llist_node` (in the thread state's
        # memory: `ThreadState.bind` sets it; 0 for a thread state that has none)
        self.page_list = 0
        self.tld = tld
        self.heaps = heaps
        self.current_object_heap = heaps[HeapTag.OBJECT]
        self.initialized = True


# The block size of each of a heap's 75 queues (`MI_PAGE_QUEUES_EMPTY`): constant, so computed
# once when the module is imported (an immutable tuple: nothing of one run can reach another).
QUEUE_BLOCK_SIZES: tuple[int, ...] = tuple(bin_size(b) for b in range(MI_BIN_FULL + 1))


class MiRuntime:
    """The interpreter-wide allocator state of one run (module docstring)."""

    def __init__(self, rt: "Runtime") -> None:
        self.rt = rt
        self.mem = rt.mem
        self.machine = rt.machine
        self.race = rt.machine.race
        self.build = PYDEBUG_BUILD if getattr(rt.config, "pydebug", False) else RELEASE_BUILD
        self.plain_build = self.build.debug == 0
        self.sizeof_page = self.build.sizeof_page(True)
        self.sizeof_segment = self.build.sizeof_segment(True)
        self.queue_block_sizes = QUEUE_BLOCK_SIZES
        self.page_empty = Page(None, 0, 0, self.build)     # `_mi_page_empty`
        self.segments: dict[int, Any] = {}                 # the segment map
        self.arenas: list[Any] = []
        self.heaps_by_addr: dict[int, Heap] = {}
        self.tlds: list[Tld | None] = []                   # by thread index
        self.waiters: dict[int, list] = {}                 # parked spinners, by address
        self.hooks = MiHooks()
        # how often each slow-path event happened (mimalloc's stat counters, always on)
        self.counters: Counter[str] = Counter()
        # C's `_mi_abandoned_collect` tries 1024 pops (see segment.abandoned_collect); the model
        # stops after a full pass over the pool unless this is set.
        self.abandoned_collect_exact = False
        self.random = _random.Random(0x6D69_6D61)          # deterministic keys and cookies
        self.cookie = self.random.getrandbits(64) | 1      # `_mi_heap_main.cookie`
        self.main_thread_id = 0                            # `_mi_heap_main.thread_id`
        # the heap-integrity oracle turns this on to learn which pages changed (by thread)
        self.track_touched = False
        self.pending: dict[int, list[Page]] = {}
        self.pending_queues: dict[int, list[tuple[Heap, "PageQueue"]]] = {}
        # metadata area: the pool and the thread states' heap records (raw-domain memory)
        self._raw_base = self.mem.reserve(RAW_REGION_SIZE)
        self._raw_next = self._raw_base
        self._raw_committed = self._raw_base
        self.pool = AbandonedPool(self.raw_alloc(MI_POOL_SIZE))

    # -- what C gets from globals and the OS --

    @property
    def observer(self) -> Any:
        return self.rt.observer

    def thread_id(self) -> int:
        """`_mi_thread_id()` (`_Py_ThreadId()` in CPython, the thread state's `tid`)."""
        return self.tlds[self.machine.current.index].thread_id

    def is_main_thread(self) -> bool:
        """`_mi_is_main_thread()`: the first thread that bound a thread state."""
        return self.main_thread_id == 0 or self.main_thread_id == self.thread_id()

    def thread_count(self) -> int:
        """`_mi_current_thread_count()`."""
        return sum(1 for t in self.tlds if t is not None and t.heap_backing is not None)

    def clock_now(self) -> int:
        """`_mi_clock_now()`: virtual milliseconds (module docstring)."""
        return self.machine.steps // MI_STEPS_PER_MS

    def error(self, message: str, kind: str = "invalid-free", fatal: bool = False) -> None:
        """`_mi_error_message`: the model reports every mimalloc error as a violation."""
        raise ViolationError(kind, f"mimalloc: {message}")

    def touch(self, page: Page) -> None:
        """Record that the current thread changed `page` (for the heap-integrity oracle)."""
        cur = self.machine.current
        self.pending.setdefault(cur.index if cur is not None else -1, []).append(page)

    def touch_queue(self, heap: Heap, pq: "PageQueue") -> None:
        """Record that the current thread changed a page queue (for the oracle)."""
        cur = self.machine.current
        self.pending_queues.setdefault(cur.index if cur is not None else -1, []).append((heap, pq))

    # -- the metadata area --

    def raw_alloc(self, size: int) -> int:
        """Zeroed memory for runtime structures (the raw domain: not mimalloc's)."""
        size = (size + 63) & ~63
        addr = self._raw_next
        self._raw_next += size
        if self._raw_next > self._raw_base + RAW_REGION_SIZE:
            raise MemoryError("runtime metadata area exhausted")
        while self._raw_committed < self._raw_next:
            self.mem.commit(self._raw_committed, RAW_COMMIT_CHUNK)
            self._raw_committed += RAW_COMMIT_CHUNK
        return addr

    def tld_of_current(self) -> Tld:
        return self.tlds[self.machine.current.index]


# ---------------------------------------------------------------------------------------------
# Thread states (Python/pystate.c: tstate_mimalloc_bind, _PyThreadState_ClearMimallocHeaps)

def tstate_mimalloc_bind(mi: MiRuntime, tstate: "ThreadState") -> MiThreadState:
    """`tstate_mimalloc_bind`: the thread's tld and its four tagged heaps."""
    index = tstate.vt.index
    tid = getattr(tstate, "tid", index + 1)   # MI_PRIM_THREAD_ID is _Py_ThreadId
    if mi.main_thread_id == 0:
        mi.main_thread_id = tid
    tld = Tld(mi, mi.pool, tstate, tid)     # _mi_tld_init; the pool is the interpreter's
    heaps = [Heap() for _ in range(HEAP_TAG_COUNT)]
    tld.heap_backing = heaps[HeapTag.MEM]
    size = mi.build.sizeof_heap()
    for tag in range(HEAP_TAG_COUNT):
        heap_init_ex(mi, heaps[tag], tld, mi.raw_alloc(size), False, tag)
    base_offset = OFFSETOF_PYOBJECT_OB_TYPE
    if mi.rt.config.debug_allocator:
        base_offset += PYMEM_DEBUG_HEADER
    heaps[HeapTag.OBJECT].debug_offset = base_offset
    heaps[HeapTag.GC].debug_offset = base_offset
    heaps[HeapTag.GC_PRE].debug_offset = base_offset + 16
    for tag in (HeapTag.OBJECT, HeapTag.GC, HeapTag.GC_PRE):
        heaps[tag].page_use_qsbr = True
    while len(mi.tlds) <= index:
        mi.tlds.append(None)
    mi.tlds[index] = tld
    return MiThreadState(tld, heaps)


async def tstate_clear_mimalloc_heaps(mi: MiRuntime, mts: MiThreadState) -> None:
    """`_PyThreadState_ClearMimallocHeaps`: abandon the four heaps (after deleting the thread's
    `heap_new` heaps into the backing heap)."""
    tld = mts.tld
    extra = []
    h = tld.heaps
    while h is not None:
        if h not in mts.heaps:
            extra.append(h)
        h = h.next
    for h in extra:
        await heap_delete(h)
    for heap in mts.heaps:
        await heap_collect_abandon(heap)
    # The records stay where they are (the raw area is never reused: reuse through libc would
    # order the next user after us, which the model's bump allocation does not need to model).
    for heap in mts.heaps:
        heap.deleted = True
    mts.initialized = False
    tld.heap_backing = None


async def thread_heap_new(mts: MiThreadState) -> Heap:
    """`mi_heap_new()` on the thread's tld."""
    return await heap_new(mts.tld)
