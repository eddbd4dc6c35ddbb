"""Delayed-free processing with a lock-free reader alive (issue 12 item 2): `_PyMem_FreeDelayed`
of raw memory and of an object, the queue processed (`_PyMem_ProcessDelayed`) while the reader
may still hold both pointers, then the freed memory reused.

- `delayed-free-raw-object` (all three version policies): the writer publishes a raw
  `PyMem_Malloc` block `R` and an object `X` in two slots and starts a reader. The reader passes
  a quiescent state, loads both pointers without a lock and reads their payloads twice, with a
  periodic check (its next quiescent state) only after the second read: in between it holds
  both pointers, borrowed, with no reference. It does this twice, so that the queue can be
  processed, and the memory reused, while it reads again (the old pointers or the new ones). The writer unlinks both (the slots get new ones),
  hands them to the delayed-free queue and makes the queue be processed:

  - `R` by `_PyMem_FreeDelayed(R, size)`;
  - `X`, under 3.13.0, by its death: it is a GC object marked SHARED_INLINE, whose
    `PyObject_GC_Del` calls `_PyObject_FreeDelayed` (an object item that `PyObject_Free`s it);
    under 3.14 and main by `_PyObject_XDecRefDelayed(X)`, the slot's reference dropped once
    safe (an object item that `Py_DECREF`s it: X is deallocated and freed then); X is queued
    before R, so that its `shared_next` goal is the one R's advance reaches;
  - processing, 3.13.0: the 254th item fills the work chunk and `free_delayed` calls
    `_PyMem_ProcessDelayed` itself (the writer frees 252 small filler blocks the same way, with
    one periodic check after the tenth, whose `_Py_qsbr_deferred_advance` advanced `wr_seq`);
    3.14 and main: `R` is over 1 MiB, so `should_advance_qsbr_for_free` advances at once and
    sets `should_process`; the writer's next periodic check sees its eval breaker set (the
    reader dropped a reference to an object the writer owns: a BRC merge request) and
    `_Py_HandlePending` runs `_PyMem_ProcessDelayed`;
  - reuse: the writer then allocates a block of another size and an object of another size
    class, which are carved out of freed memory if the items were freed.

  Unmutated, an item is freed only once the reader has passed its quiescent state, after its
  last read. Mutation `free-delayed-stale-goal`: an item's goal is the write sequence before
  the advance, which the reader reached at its first quiescent state, before it loaded the
  pointers: the processing frees `R` and `X` while the reader still reads them
  (`use-after-free`, or `premature-reuse` when the writer's allocation reuses the memory first).

- `delayed-free-reentrant` (3.14 and main, where object items are deferred decrefs): the
  writer publishes `X`, whose destructor frees a block with `_PyMem_FreeDelayed` and calls
  `gc.collect()`; a reader reads it lock-free as above. The writer queues `X`'s reference
  (`_PyObject_XDecRefDelayed`) and a block over 1 MiB (`should_process`), and its periodic
  check processes the queue: then, or (if the reader had not passed its quiescent state) after
  the reader has exited, with a second such block and a second merge request. `X`'s
  deferred decref deallocates it inside `process_queue`, and the destructor's collection runs
  `_PyMem_ProcessDelayedNoDealloc` on the same queue, nested. C advances the chunk's `rd_idx`
  before each free, so the nested call starts after `X`. Mutation
  `process-queue-rd-after-free`: the index moves after the free, the nested call finds `X`
  again and decrefs it a second time (a `refcount` or freed-object violation).
"""

from __future__ import annotations

from dataclasses import dataclass

from ftlab.runtime.object import GC_BITS_SHARED_INLINE, PyType, gc_set_bits, store_field
from ftlab.scenarios import Scenario
from ftlab.sim.atomics import RELAXED, SEQ_CST
from ftlab.sim.memory import Tag
from ftlab.sim.sync import Event
from ftlab.sim.violation import ViolationError

PAYLOAD = 32                    # an object's first payload word
RAW_SIZE = (1 << 20) + 64       # over QSBR_FREE_MEM_LIMIT: 3.14 advances and sets should_process
OTHER_RAW_SIZE = 48 << 10       # the reuse: another size class
FILLERS = 252                   # 3.13.0: R, X and 252 fillers fill one 254-item work chunk
FILLER_SIZE = 16

ITEM = PyType("Item", basicsize=48, gc=True)
OTHER = PyType("Other", basicsize=112)
TOKEN = PyType("Token", basicsize=48)


@dataclass
class _Shared:
    raw_slot: int
    obj_slot: int
    token: int
    loaded: Event
    version: str
    token2: int = 0         # delayed-free-reentrant: dropped by the reader as it ends ...
    processed: Event | None = None      # ... once the writer's first processing is over


def _setup(rt) -> None:
    slots = rt.raw_calloc(16)
    rt.shared = _Shared(raw_slot=slots, obj_slot=slots + 8, token=0,
                        loaded=Event(rt.machine, "loaded"), version=rt.config.version)


async def _read(t, what: str, p: int, offset: int) -> None:
    # a relaxed load, as C's lock-free readers of shared memory do (`_Py_atomic_load_*_relaxed`)
    if await t.mem.load(p + offset, 8, RELAXED) != 1:
        raise ViolationError("check", f"{t.vt.label} reads {what} at {p:#x} without its value")


async def _reader(t) -> None:
    s = t.shared
    await t.decref(s.token)                 # a BRC merge request to the writer, its owner
    for i in range(2):
        await t.periodic_check()            # quiescent: holds no pointer
        r = await t.mem.load(s.raw_slot, 8, SEQ_CST)
        x = await t.mem.load(s.obj_slot, 8, SEQ_CST)
        if i == 0:
            await s.loaded.set()
        for _ in range(2):                  # borrowed reads: no reference taken
            await _read(t, "the raw block", r, 0)
            await _read(t, "the object", x, PAYLOAD)
    await t.periodic_check()


async def _drop_slots(t) -> None:
    """The writer's last act: the slots' block and object, freed and released."""
    s = t.shared
    await t.free(await t.mem.exchange(s.raw_slot, 0, 8, SEQ_CST))
    await t.decref(await t.mem.exchange(s.obj_slot, 0, 8, SEQ_CST))


async def _writer(t) -> None:
    s = t.shared
    r = await t.malloc(RAW_SIZE)
    t.mem.store_u64(r, 1, Tag.PAYLOAD)
    x = await t.new_object(ITEM)
    store_field(t, x, PAYLOAD, 1)
    if s.version == "3.13.0":
        gc_set_bits(t.mem, x, GC_BITS_SHARED_INLINE)
    await t.mem.store(s.raw_slot, r, 8, SEQ_CST)
    await t.mem.store(s.obj_slot, x, 8, SEQ_CST)         # the slot owns X's reference
    s.token = await t.new_object(TOKEN)                 # the reader's reference to drop
    reader = await t.spawn(_reader, name="reader")
    await t.wait(s.loaded)

    # Unlink both (a new block and a new object take their places) and free them delayed.
    r2 = await t.malloc(64)
    t.mem.store_u64(r2, 1, Tag.PAYLOAD)
    x2 = await t.new_object(ITEM)
    store_field(t, x2, PAYLOAD, 1)
    await t.mem.store(s.raw_slot, r2, 8, SEQ_CST)
    await t.mem.store(s.obj_slot, x2, 8, SEQ_CST)
    if s.version == "3.13.0":
        await t.free_delayed(r, RAW_SIZE)
        await t.decref(x)                   # dealloc: PyObject_GC_Del -> _PyObject_FreeDelayed
        for i in range(FILLERS):            # the 254th item processes the queue
            await t.free_delayed(await t.malloc(FILLER_SIZE), FILLER_SIZE)
            if i == 9:
                await t.periodic_check()    # after the deferred advance: the writer's seq
    else:
        # X first: its goal is `shared_next`, which R's advance then reaches (R second would
        # leave X waiting for some later advance, as C does).
        await t.object_free_delayed(x)      # _PyObject_XDecRefDelayed: the slot's reference
        await t.free_delayed(r, RAW_SIZE)   # over 1 MiB: advance, should_process
        await t.periodic_check()            # the merge, then _PyMem_ProcessDelayed

    # Reuse: another size of raw block and another size class of object.
    y = await t.malloc(OTHER_RAW_SIZE)
    z = await t.new_object(OTHER)
    await t.join(reader)
    await t.free(y)
    await t.decref(z)
    await _drop_slots(t)


async def _del_frees_and_collects(t, op: int) -> None:
    """X's `__del__`: `_PyMem_FreeDelayed` of a block, then `gc.collect()`, whose
    `_PyMem_ProcessDelayedNoDealloc` (world stopped) processes this thread's queue again."""
    b = await t.malloc(64)
    await t.free_delayed(b, 64)
    await t.gc_collect()


DEL_ITEM = PyType("DelItem", basicsize=48, gc=True, clear=_del_frees_and_collects)


def _setup_reentrant(rt) -> None:
    _setup(rt)
    rt.shared.processed = Event(rt.machine, "processed")


async def _reader_reentrant(t) -> None:
    await _reader(t)
    await t.wait(t.shared.processed)
    await t.decref(t.shared.token2)         # another merge request: the writer processes again


async def _writer_reentrant(t) -> None:
    s = t.shared
    x = await t.new_object(DEL_ITEM)
    store_field(t, x, PAYLOAD, 1)
    r = await t.malloc(64)
    t.mem.store_u64(r, 1, Tag.PAYLOAD)
    await t.mem.store(s.raw_slot, r, 8, SEQ_CST)
    await t.mem.store(s.obj_slot, x, 8, SEQ_CST)         # the slot owns X's reference
    s.token = await t.new_object(TOKEN)
    s.token2 = await t.new_object(TOKEN)
    reader = await t.spawn(_reader_reentrant, name="reader")
    await t.wait(s.loaded)
    x2 = await t.new_object(ITEM)
    store_field(t, x2, PAYLOAD, 1)
    await t.mem.store(s.obj_slot, x2, 8, SEQ_CST)
    await t.object_free_delayed(x)          # X first, then a block over 1 MiB: should_process
    big = await t.malloc(RAW_SIZE)
    await t.free_delayed(big, RAW_SIZE)
    await t.periodic_check()                # processing: X's destructor re-enters it ...
    await s.processed.set()
    await t.join(reader)
    big = await t.malloc(RAW_SIZE)          # ... or, if the reader had not passed a quiescent
    await t.free_delayed(big, RAW_SIZE)     # state yet, this one (should_process again, and
    await t.periodic_check()                # token2's merge request sets the eval breaker)
    await _drop_slots(t)


SCENARIOS = [
    Scenario(
        name="delayed-free-raw-object",
        description="a raw block and an object in the delayed-free queue, processed (chunk full "
                    "in 3.13.0, should_process in 3.14) and reused while a reader may hold both",
        threads=(("writer", _writer),),
        setup=_setup,
        mutations={"free-delayed-stale-goal": ("use-after-free", "premature-reuse", "data-race",
                                                "check")},
        pct_steps=120,
        dfs_bound=1,
    ),
    Scenario(
        name="delayed-free-reentrant",
        description="an object item's destructor, run by _PyMem_ProcessDelayed, frees delayed "
                    "and processes the queue again (re-entrant process_queue)",
        threads=(("writer", _writer_reentrant),),
        setup=_setup_reentrant,
        mutations={"process-queue-rd-after-free": ("refcount", "use-after-free", "double-free",
                                                    "heap-integrity")},
        versions=("3.14", "main"),
        pct_steps=80,
        dfs_bound=1,
    ),
]
