"""Quiescent-state-based reclamation: `Python/qsbr.c` and `Include/internal/pycore_qsbr.h`.

QSBR tells a thread when memory it has unlinked from a shared structure can no longer be
reached by a reader that found it without a lock (a list's old item array, a dict's old keys,
an empty mimalloc page that could change size class), so that it may be freed or reused. It is
derived from FreeBSD's "global unbounded sequences" (GUS).

The mechanism
-------------
- `wr_seq`, the interpreter's write sequence, starts at QSBR_INITIAL (1) and only grows, by
  QSBR_INCR (2): it is always odd, so it never equals QSBR_OFFLINE (0), even after wrapping.
- Every registered thread owns a slot in one contiguous array of 64-byte pads (contiguous so a
  poll scans one block; padded so threads do not share cache lines). The slot's `seq` is the
  value of `wr_seq` the thread last observed at a quiescent state, or OFFLINE while the
  thread is detached.
- `rd_seq` caches the minimum `seq` over the attached threads (and `wr_seq`). Only `poll`
  recomputes it (the scan), with one CAS that may lose to another poller; it never decreases.
- A writer that unlinks a block asks for a *goal*: `advance` adds 2 to `wr_seq` and returns the
  new value; the 3.13.0 `deferred_advance` and the 3.14 `shared_next` return `wr_seq + 2`
  without writing it (a value that exists only once some thread advances). The block may be
  freed once `goal <= rd_seq` (`goal_reached`, cheap, or `poll`, which scans).
- A thread reports a quiescent state (it holds no pointer obtained without a lock) at every
  periodic check of the eval loop: `seq = wr_seq`. Detaching is an extended quiescent state:
  `seq = OFFLINE`, and polls skip it. Attaching stores the current `wr_seq`.

Slot states: free (on the freelist, seq 0) -> reserved (`reserve`, allocated, no thread) ->
registered (`register`, linked to a thread state; seq OFFLINE while detached, odd while
attached) -> free again (`unregister`). The array grows (doubling, at least MIN_ARRAY_SIZE)
only with the world stopped, because every attached thread reads its own slot and pollers read
all of them without a lock; a thread state finds its slot again through `tstate.qsbr`, which
the growth re-points (an index is what survives a resize, hence `reserve` returns one).

Safety argument (what the model must preserve; the `QsbrOracle` in `ftlab.check.qsbr` checks
it): a writer unlinks a block at t0 and then obtains goal G from a value W of `wr_seq` read at
t1 > t0 (G = W + 2, advanced or not). A reader that can still use the block loaded its pointer
before t0, after its last quiescent state, whose `seq` is at most W < G. `rd_seq >= G` needs
every attached thread's `seq` to be at least G or OFFLINE when some poll scanned it, so every
thread attached at t1 has since stored a `seq` it read after `wr_seq` reached G (a quiescent
state after t1, hence after t0) or detached: none of them still holds the pointer. Threads that
attach after t1 store the then-current `wr_seq` (maybe below G, which only delays the goal) but
cannot reach the unlinked block. `rd_seq` only grows, so a reached goal stays reached.

Where the model differs from C: the per-slot fields other than `seq` (`shared`, `tstate`, the
deferral counters, `allocated`, `freelist_next`) are Python attributes of `QsbrThreadState`;
`seq` and the shared words `wr_seq`, `rd_seq`, `array`, `size` are in simulated memory, so each
atomic access is a scheduling point and every access is seen by the race detector (a growth
that raced with a poller would be reported). The seq_cst fence that opens a scan has no
separate step: execution is sequentially consistent at scheduling points (under the c11
memory model it is a `fence_now` inside the first load's step, and it matters: mutations
`qsbr-scan-no-fence` and `qsbr-attach-release`, scenario list-attach-c11). A scan loads every
slot of the array, free ones included, as C does: a poll costs `size + 2` or so scheduling
points. `_Py_qsbr_after_fork` and `_Py_qsbr_fini` are not modelled (no fork, no interpreter
teardown). Slots of threads created in set-up are reserved with plain steps, since nothing
runs yet (`reserve_and_register_before_run`); threads created by model threads go through
`reserve`/`register`, run by the creator as in C's `new_threadstate`.

Versions (DESIGN §7): `"3.13.0"` uses `deferred_advance` (a real advance on every
QSBR_DEFERRED_LIMIT-th call) and the `deferrals` counter; `"3.14"` (gh-133136) uses
`shared_next` and leaves the advance decision to obmalloc (`deferred_count`,
`deferred_memory`, `deferred_page_memory`, `should_process`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ftlab.sim.atomics import ACQUIRE, RELEASE, SEQ_CST
from ftlab.sim.memory import Tag

if TYPE_CHECKING:
    from ftlab.runtime.pystate import Runtime, ThreadState


# ---------------------------------------------------------------------------------------------
# Constants (pycore_qsbr.h, qsbr.c)

QSBR_OFFLINE = 0            # a detached thread's seq
QSBR_INITIAL = 1            # wr_seq and rd_seq at start
QSBR_INCR = 2               # wr_seq stays odd
MIN_ARRAY_SIZE = 8          # first size of the slot array
QSBR_DEFERRED_LIMIT = 10    # 3.13.0: deferred_advance advances on every 10th call

SEQ_MASK = (1 << 64) - 1    # sequences are uint64_t
_SIGN = 1 << 63

# struct _qsbr_pad: one slot per 64-byte cache line, `seq` first.
QSBR_PAD_SIZE = 64
SEQ_OFFSET = 0

# struct _qsbr_shared, the words kept in simulated memory.
WR_SEQ_OFFSET = 0
RD_SEQ_OFFSET = 8
ARRAY_OFFSET = 16
SIZE_OFFSET = 24
SHARED_SIZE = 32


def QSBR_LT(a: int, b: int) -> bool:
    """Wrap-safe a < b: the sign of the 64-bit difference (a holdover from FreeBSD's
    32-bit counters)."""
    return bool((a - b) & SEQ_MASK & _SIGN)


def QSBR_LEQ(a: int, b: int) -> bool:
    """Wrap-safe a <= b."""
    d = (a - b) & SEQ_MASK
    return d == 0 or bool(d & _SIGN)


# ---------------------------------------------------------------------------------------------
# Data structures

class QsbrShared:
    """`struct _qsbr_shared` (`interp->qsbr`). `wr_seq`, `rd_seq`, `array` and `size` live at
    `addr` in simulated memory; `slots[i]` is the Python side of the pad at
    `array + i * QSBR_PAD_SIZE`; `freelist` and the slots' links are protected by `mutex`."""

    __slots__ = ("rt", "addr", "slots", "mutex", "freelist")

    def __init__(self, rt: "Runtime") -> None:
        self.rt = rt
        self.addr = rt.raw_calloc(SHARED_SIZE)
        rt.name_struct(self.addr, SHARED_SIZE, "qsbr", {WR_SEQ_OFFSET: "wr_seq",
                       RD_SEQ_OFFSET: "rd_seq", ARRAY_OFFSET: "array", SIZE_OFFSET: "size"})
        mem = rt.mem
        # Set-up, before any thread runs: plain stores.
        mem.store_u64(self.addr + WR_SEQ_OFFSET, QSBR_INITIAL, Tag.META)
        mem.store_u64(self.addr + RD_SEQ_OFFSET, QSBR_INITIAL, Tag.META)
        self.slots: list[QsbrThreadState] = []   # array is NULL, size 0
        self.mutex = rt.mutex("qsbr.mutex")
        self.freelist: QsbrThreadState | None = None

    @property
    def wr_seq_addr(self) -> int:
        return self.addr + WR_SEQ_OFFSET

    @property
    def rd_seq_addr(self) -> int:
        return self.addr + RD_SEQ_OFFSET

    # Inspection for tests and reports: not accesses, never scheduling points.
    def peek_wr_seq(self) -> int:
        return self.rt.mem.raw_load(self.wr_seq_addr, 8)

    def peek_rd_seq(self) -> int:
        return self.rt.mem.raw_load(self.rd_seq_addr, 8)

    def peek_array(self) -> int:
        return self.rt.mem.raw_load(self.addr + ARRAY_OFFSET, 8)

    @property
    def size(self) -> int:
        return len(self.slots)


class QsbrThreadState:
    """`struct _qsbr_thread_state`: one slot. `addr` is where its `seq` lives (the pad's
    first word); a growth replaces every slot object, and `tstate.qsbr` is re-pointed."""

    __slots__ = ("shared", "index", "addr", "tstate", "allocated", "freelist_next",
                 # 3.13.0
                 "deferrals",
                 # 3.14 (gh-133136): the advance decision moved to obmalloc
                 "deferred_count", "deferred_memory", "deferred_page_memory", "should_process")

    def __init__(self, shared: QsbrShared, index: int, addr: int) -> None:
        self.shared = shared
        self.index = index
        self.addr = addr
        self.tstate: ThreadState | None = None
        self.allocated = False
        self.freelist_next: QsbrThreadState | None = None
        self.deferrals = 0
        self.deferred_count = 0
        self.deferred_memory = 0
        self.deferred_page_memory = 0
        self.should_process = False

    def _copy_fields(self, other: "QsbrThreadState") -> None:
        """The memcpy of the pad's non-`seq` fields during a growth."""
        self.tstate = other.tstate
        self.allocated = other.allocated
        self.deferrals = other.deferrals
        self.deferred_count = other.deferred_count
        self.deferred_memory = other.deferred_memory
        self.deferred_page_memory = other.deferred_page_memory
        self.should_process = other.should_process

    def peek_seq(self) -> int:
        """The slot's seq, for assertions and tests (not an access)."""
        return self.shared.rt.mem.raw_load(self.addr, 8)

    def __repr__(self) -> str:
        who = self.tstate.name if self.tstate is not None else "-"
        return f"<qsbr slot {self.index} {who} seq={self.peek_seq()}>"


# ---------------------------------------------------------------------------------------------
# Sequences and goals

async def shared_current(shared: QsbrShared) -> int:
    """`_Py_qsbr_shared_current`. Acquire: pairs with the seq_cst add in `advance`, so a thread
    that sees the new `wr_seq` also sees the unlink that preceded it."""
    return await shared.rt.mem.load(shared.wr_seq_addr, 8, ACQUIRE)


async def advance(qsbr: QsbrThreadState) -> int:
    """`_Py_qsbr_advance(qsbr->shared)`: add QSBR_INCR to `wr_seq`, return the new value (the
    goal). Takes the caller's slot (C takes the shared state) so the observer knows who asks."""
    shared = qsbr.shared
    old = await shared.rt.mem.fetch_add(shared.wr_seq_addr, QSBR_INCR, 8, SEQ_CST)
    goal = (old + QSBR_INCR) & SEQ_MASK
    shared.rt.observer.qsbr_advance(qsbr.tstate, goal)
    return goal


async def deferred_advance(qsbr: QsbrThreadState) -> int:
    """`_Py_qsbr_deferred_advance` (3.13.0): advance only on every QSBR_DEFERRED_LIMIT-th call;
    otherwise return `wr_seq + 2`, a goal no thread can have observed yet, so it is reached
    only after some thread advances and every attached thread then passes a quiescent state."""
    qsbr.deferrals += 1
    if qsbr.deferrals < QSBR_DEFERRED_LIMIT:
        goal = (await shared_current(qsbr.shared) + QSBR_INCR) & SEQ_MASK
        qsbr.shared.rt.observer.qsbr_advance(qsbr.tstate, goal)
        return goal
    qsbr.deferrals = 0
    return await advance(qsbr)


async def shared_next(qsbr: QsbrThreadState) -> int:
    """`_Py_qsbr_shared_next(qsbr->shared)` (3.14): `wr_seq + 2` without writing it; obmalloc
    decides separately when to `advance`."""
    goal = (await shared_current(qsbr.shared) + QSBR_INCR) & SEQ_MASK
    qsbr.shared.rt.observer.qsbr_advance(qsbr.tstate, goal)
    return goal


async def quiescent_state(qsbr: QsbrThreadState) -> None:
    """`_Py_qsbr_quiescent_state`: the caller holds no pointer obtained without a lock.
    Release store: pairs with the scan's loads in `poll_scan`, so what this thread did before
    happens before whatever a poller frees after seeing the new seq."""
    shared = qsbr.shared
    seq = await shared_current(shared)
    await shared.rt.mem.store(qsbr.addr, seq, 8, RELEASE)
    shared.rt.observer.qsbr_quiescent(qsbr.tstate, seq)


async def goal_reached(qsbr: QsbrThreadState, goal: int) -> bool:
    """`_Py_qbsr_goal_reached` (sic, "qbsr" in C): `goal <= rd_seq` with the cached `rd_seq`,
    no scan. It may say False where `poll` would say True, never the reverse."""
    shared = qsbr.shared
    rd_seq = await shared.rt.mem.load(shared.rd_seq_addr, 8, SEQ_CST)
    if QSBR_LEQ(goal, rd_seq):
        shared.rt.observer.qsbr_goal_reached(qsbr.tstate, goal)
        return True
    return False


async def poll_scan(shared: QsbrShared) -> int:
    """`qsbr_poll_scan`: recompute `rd_seq` as the minimum of `wr_seq` and the `seq` of every
    attached thread; publish it with one CAS (losing it is fine: another poller moved `rd_seq`
    up) and return the value this scan found.

    The order of the loads is C's: [seq_cst fence: it pairs with the seq_cst store in `attach`,
    so the scan cannot see a stale OFFLINE for a thread that attached and then loaded a
    pointer], `wr_seq`, then each slot of the array in index order (free slots too: their seq
    is 0), then `rd_seq`, then the CAS."""
    mem = shared.rt.mem
    # `_Py_atomic_fence_seq_cst()`: inside the step of the first load (no scheduling point of
    # its own; it orders nothing more under SC, and under the c11 memory model it is what keeps
    # this scan from reading OFFLINE for a thread whose seq_cst attach store came after it and
    # then loading a pointer older than the unlink this scan's goal covers).
    if not shared.rt.mutated("qsbr-scan-no-fence"):
        mem.fence_now(SEQ_CST)
    min_seq = await mem.load(shared.wr_seq_addr, 8, SEQ_CST)
    # `shared->array` and `shared->size` are plain fields: only a growth writes them, with the
    # world stopped, and a poller is attached (the race detector checks exactly that).
    array = mem.load_u64(shared.addr + ARRAY_OFFSET)
    size = mem.load_u64(shared.addr + SIZE_OFFSET)
    for i in range(size):
        seq = await mem.load(array + i * QSBR_PAD_SIZE + SEQ_OFFSET, 8, SEQ_CST)
        if seq != QSBR_OFFLINE and QSBR_LT(seq, min_seq):
            min_seq = seq
    rd_seq = await mem.load(shared.rd_seq_addr, 8, SEQ_CST)
    if QSBR_LT(rd_seq, min_seq):
        await mem.cas(shared.rd_seq_addr, rd_seq, min_seq, 8, SEQ_CST)
        rd_seq = min_seq
    return rd_seq


async def poll(qsbr: QsbrThreadState, goal: int) -> bool:
    """`_Py_qsbr_poll`: has every thread attached when `goal` was handed out passed a
    quiescent state since? The cached `rd_seq` first, then a scan."""
    t = qsbr.tstate
    assert t is not None and t.attached, "poll needs an attached thread state"
    assert t.qsbr is qsbr, "poll must use the calling thread's own slot"
    if await goal_reached(qsbr, goal):
        return True
    rd_seq = await poll_scan(qsbr.shared)
    if QSBR_LEQ(goal, rd_seq):
        qsbr.shared.rt.observer.qsbr_goal_reached(t, goal)
        return True
    return False


# ---------------------------------------------------------------------------------------------
# Attach and detach (called from pystate's attach/detach)

async def attach(qsbr: QsbrThreadState) -> None:
    """`_Py_qsbr_attach`: start observing at the current `wr_seq`. The store needs seq_cst:
    it pairs with the fence that opens `poll_scan` (see there)."""
    assert qsbr.peek_seq() == QSBR_OFFLINE, "already attached"
    shared = qsbr.shared
    seq = await shared_current(shared)
    # c11 mutation `qsbr-attach-release`: a release store, which the scan's seq_cst fence
    # does not order against this thread's next loads (store buffering)
    order = RELEASE if shared.rt.mutated("qsbr-attach-release") else SEQ_CST
    await shared.rt.mem.store(qsbr.addr, seq, 8, order)
    shared.rt.observer.qsbr_attach(qsbr.tstate, seq)


async def detach(qsbr: QsbrThreadState) -> None:
    """`_Py_qsbr_detach`: go offline; polls skip this slot until the next attach. Release:
    pairs with the scan's loads, so this thread's reads happen before any free that a poll
    seeing OFFLINE allows."""
    assert qsbr.peek_seq() != QSBR_OFFLINE, "already detached"
    await qsbr.shared.rt.mem.store(qsbr.addr, QSBR_OFFLINE, 8, RELEASE)
    qsbr.shared.rt.observer.qsbr_detach(qsbr.tstate)


# ---------------------------------------------------------------------------------------------
# Slots: reserve, register, unregister, and the growth of the array

def qsbr_allocate(shared: QsbrShared) -> QsbrThreadState | None:
    """Pop the freelist (under `shared.mutex`)."""
    qsbr = shared.freelist
    if qsbr is None:
        return None
    shared.freelist = qsbr.freelist_next
    qsbr.freelist_next = None
    qsbr.allocated = True
    return qsbr


def initialize_new_array(shared: QsbrShared) -> None:
    """Re-point every registered thread state at its slot and rebuild the freelist. Free slots
    are pushed in index order, so the highest free index is handed out first."""
    for qsbr in shared.slots:
        if qsbr.tstate is not None:
            qsbr.tstate.qsbr = qsbr
        if not qsbr.allocated:
            qsbr.freelist_next = shared.freelist
            shared.freelist = qsbr


def grow_thread_array(shared: QsbrShared) -> None:
    """Double the array (at least MIN_ARRAY_SIZE): allocate a zeroed one, copy the old pads,
    rebuild the freelist, free the old array. Caller holds `shared.mutex` with the world
    stopped: no other thread is attached, so none reads a slot while it moves. The copy and the
    `array`/`size` updates are plain accesses, checked by the race detector."""
    rt = shared.rt
    mem = rt.mem
    assert rt.stw.world_stopped or _before_run(rt), \
        "the QSBR array may only grow with the world stopped"
    old_size = shared.size
    new_size = max(old_size * 2, MIN_ARRAY_SIZE)
    array = rt.raw_calloc(new_size * QSBR_PAD_SIZE)
    rt.name_struct(array, new_size * QSBR_PAD_SIZE, "qsbr.slot", {SEQ_OFFSET: "seq"},
                   QSBR_PAD_SIZE)
    old_array = mem.load_u64(shared.addr + ARRAY_OFFSET)
    slots = []
    for i in range(new_size):
        qsbr = QsbrThreadState(shared, i, array + i * QSBR_PAD_SIZE + SEQ_OFFSET)
        if i < old_size:
            old = shared.slots[i]
            mem.store_u64(qsbr.addr, mem.load_u64(old.addr), Tag.META)
            qsbr._copy_fields(old)
        slots.append(qsbr)
    mem.store_u64(shared.addr + ARRAY_OFFSET, array, Tag.META)
    mem.store_u64(shared.addr + SIZE_OFFSET, new_size, Tag.META)
    shared.slots = slots
    shared.freelist = None
    initialize_new_array(shared)
    if old_array:
        rt.raw_free(old_array)      # a stale slot pointer now faults
    rt.machine.record(rt.machine.current, f"qsbr array grown {old_size} -> {new_size}")


def _before_run(rt: "Runtime") -> bool:
    """Set-up time: no model thread is running and none is attached, so the world is
    trivially stopped."""
    return rt.machine.current is None and not any(t.attached for t in rt.threads_head)


async def _lock(t: "ThreadState | None", mutex) -> None:
    """`PyMutex_Lock` by `t`, which detaches while it waits (`ThreadState.lock`); `t` None: no
    current thread state (C's unregister runs after `current_fast_clear`)."""
    if t is None:
        await mutex.lock()
    else:
        await t.lock(mutex)


async def reserve(rt: "Runtime", creator: "ThreadState | None") -> int:
    """`_Py_qsbr_reserve` (from `new_threadstate`, run by the creating thread): take a free
    slot; if there is none, stop the world (the creator is the requester and stays attached)
    and grow the array. Returns an index rather than the slot, because the array may grow
    again before `register`."""
    shared = rt.qsbr
    await _lock(creator, shared.mutex)
    qsbr = qsbr_allocate(shared)
    if qsbr is None:
        await rt.stop_the_world(creator)
        grow_thread_array(shared)
        qsbr = qsbr_allocate(shared)
        await rt.start_the_world(creator)
    assert qsbr is not None, "no free QSBR slot after growing the thread array"
    index = qsbr.index
    await shared.mutex.unlock()
    return index


async def register(t: "ThreadState", index: int, creator: "ThreadState | None") -> None:
    """`_Py_qsbr_register` (from `new_threadstate`): link the reserved slot `index` and the
    new thread state `t`."""
    shared = t.rt.qsbr
    await _lock(creator, shared.mutex)
    _link(shared, t, index)
    await shared.mutex.unlock()


def _link(shared: QsbrShared, t: "ThreadState", index: int) -> None:
    qsbr = shared.slots[index]
    assert qsbr.allocated and qsbr.tstate is None, "registering a slot that was not reserved"
    qsbr.tstate = t
    t.qsbr = qsbr


def reserve_and_register_before_run(rt: "Runtime", t: "ThreadState") -> None:
    """`_Py_qsbr_reserve` and `_Py_qsbr_register` for a thread created in set-up: nothing runs
    yet, so there is nobody to wait for or to stop, and these are plain steps."""
    assert _before_run(rt), "plain registration is only for set-up"
    shared = rt.qsbr
    qsbr = qsbr_allocate(shared)
    if qsbr is None:
        grow_thread_array(shared)
        qsbr = qsbr_allocate(shared)
    assert qsbr is not None, "no free QSBR slot after growing the thread array"
    _link(shared, t, qsbr.index)


async def unregister(t: "ThreadState") -> None:
    """`_Py_qsbr_unregister` (from `tstate_delete_common`, with no current thread state, so the
    wait for the mutex does not detach): give the slot back. `t.qsbr` is read inside the mutex:
    the array may have grown (moving the slot) while this thread waited for it."""
    shared = t.rt.qsbr
    mem = t.rt.mem
    stale = t.qsbr if t.rt.mutated("qsbr-unregister-stale-slot") else None
    await shared.mutex.lock()
    qsbr = t.qsbr if stale is None else stale
    assert qsbr is not None, f"{t.name} unregisters from QSBR without a slot"
    # The debug build's `assert(qsbr->seq == 0)` reads the pad: a plain load, ordered after
    # any growth by the mutex (the growth copies the pads holding it). Through a slot pointer
    # loaded before the mutex, it reads the array the growth freed.
    assert mem.load_u64(qsbr.addr) == QSBR_OFFLINE, "thread state must be detached"
    assert qsbr.allocated and qsbr.tstate is t, "unregistering a slot the thread does not own"
    t.qsbr = None
    qsbr.tstate = None
    qsbr.allocated = False
    qsbr.freelist_next = shared.freelist
    shared.freelist = qsbr
    await shared.mutex.unlock()
