"""Per-object critical sections (`Python/critical_section.c`,
`Include/internal/pycore_critical_section.h`) and the `PyMutex` they lock (`Python/lock.c`).

Every object of the free-threaded build has a one-byte `ob_mutex` at +10 of its header (bit 0
locked, bit 1 has parked waiters). Only the critical-section API locks it:
`Py_BEGIN_CRITICAL_SECTION(op)` / `Py_END_CRITICAL_SECTION()` and the two-object form, which
locks the lower address first so two threads never take the same pair in opposite orders.

A critical section is not a lock held for a whole block. The thread state keeps a stack of its
sections (`tstate->critical_section`, top first). Whenever the thread detaches — it blocks on a
mutex, waits, or parks for a stop-the-world — `suspend_all` unlocks the mutex(es) of every
active section and marks them inactive; when it attaches again `resume` re-locks only the
top-most one (lower ones stay inactive until `end` makes them the top). So blocking inside a
section releases it exactly where the GIL would have been released: an ABBA pair of sections
cannot deadlock (blocking on B releases A), and a thread parked on a section is detached and
never holds up a stop-the-world. The guarantee is the GIL's: atomicity only between points that
may block.

Invariants (asserted): a section is ended by the thread that began it, in LIFO order; a
section being locked has its mutex pointer cleared until it holds the mutex (as `BeginSlow`
does), so a detach while parked on it does not unlock what it does not hold; re-entry on a
mutex the top-most active section already holds is a no-op section.

Mutation `critical-section-no-suspend`: detaching leaves the sections locked (what a plain
per-object lock would do); the ABBA test then deadlocks.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING

from ftlab.runtime.object import OB_MUTEX
from ftlab.sim.atomics import RELAXED, SEQ_CST
from ftlab.sim.memory import Tag

if TYPE_CHECKING:
    from ftlab.runtime.pystate import ThreadState

# PyMutex bits (pycore_lock.h)
LOCKED = 0x1
HAS_PARKED = 0x2


# ---------------------------------------------------------------------------------------------
# PyMutex on a byte of simulated memory (Python/lock.c)

async def mutex_lock_fast(t: "ThreadState", m: int) -> bool:
    """`_PyMutex_Lock`'s fast path: one CAS 0 -> LOCKED (`_Py_atomic_compare_exchange_uint8`,
    seq_cst); its acquire pairs with the release in `mutex_unlock`."""
    ok, _ = await t.mem.cas(m, 0, LOCKED, 1, SEQ_CST, Tag.HEADER)
    return ok


async def mutex_lock(t: "ThreadState", m: int) -> None:
    """`PyMutex_Lock` (`_PyMutex_LockTimed` with `_PY_LOCK_DETACH`): CAS; if held, the thread
    detaches (suspending its critical sections), parks on the mutex's address until an unlock,
    re-attaches and retries."""
    retry = False
    while True:
        # A retry after a park or a lost CAS is a spin's reload: under c11 it reads the newest
        # store (ftlab/sim/c11.py load_newest), as the parking lot's check just did; a stale
        # read there would spin forever where C eventually sees the unlock.
        load = t.mem.load_newest if retry else t.mem.load
        retry = True
        # `_PyMutex_LockTimed`: a relaxed load, then a seq_cst CAS (its acquire is the one
        # that pairs with the unlock)
        v = await load(m, 1, RELAXED)
        if not v & LOCKED:
            ok, _ = await t.mem.cas(m, v, v | LOCKED, 1, SEQ_CST, Tag.HEADER)
            if ok:
                return
            continue
        attached = t.attached
        if attached:
            await t.detach()
        await _park(t, m)
        if attached:
            await t.attach()


@types.coroutine
def _park(t: "ThreadState", m: int):
    """`_PyParkingLot_Park(&m->_bits, LOCKED|HAS_PARKED, ...)`: set HAS_PARKED and sleep unless
    the mutex was unlocked meanwhile; the check, the flag and the enqueue are one step, as under
    the parking lot's bucket lock."""
    yield
    mem = t.mem
    t.rt.machine.note_access(m, 1, True)       # the check, HAS_PARKED and the enqueue
    v = mem.raw_load(m, 1)
    if v & LOCKED:
        mem.raw_store(m, 1, v | HAS_PARKED, Tag.HEADER)
        t.rt.parking_lot.setdefault(m, []).append(t.vt)
        t.rt.machine.block(t.vt, f"PyMutex at {m:#x}")
        yield


async def mutex_unlock(t: "ThreadState", m: int) -> None:
    """`PyMutex_Unlock`: exchange to 0 (its release pairs with the acquire of the next locker);
    if a thread parked, unpark them all (each retries; one wins, the rest park again)."""
    # `_PyMutex_TryUnlock`'s seq_cst CAS LOCKED -> UNLOCKED (the parked case is the unpark)
    old = await t.mem.exchange(m, 0, 1, SEQ_CST, Tag.HEADER)
    if not old & LOCKED:
        raise AssertionError(f"{t.name} unlocks the PyMutex at {m:#x}, which is not locked")
    if old & HAS_PARKED:
        for w in t.rt.parking_lot.pop(m, []):
            t.rt.machine.wake(w)


# ---------------------------------------------------------------------------------------------
# Critical sections

class CriticalSection:
    """`PyCriticalSection` / `PyCriticalSection2` on the thread's stack. `mutex` is None while
    it is being locked (and for a re-entrant no-op section); `inactive` is the INACTIVE tag."""

    __slots__ = ("mutex", "mutex2", "inactive", "pushed")

    def __init__(self) -> None:
        self.mutex: int | None = None
        self.mutex2: int | None = None
        self.inactive = False
        self.pushed = False


def _top(t: "ThreadState") -> CriticalSection | None:
    return t.critical_sections[-1] if t.critical_sections else None


async def begin(t: "ThreadState", op: int) -> CriticalSection:
    """`Py_BEGIN_CRITICAL_SECTION(op)`: lock `op->ob_mutex`."""
    return await begin_mutex(t, op + OB_MUTEX)


async def begin_mutex(t: "ThreadState", m: int) -> CriticalSection:
    """`_PyCriticalSection_BeginMutex`: the fast path pushes after one CAS; `BeginSlow` makes a
    no-op section if the top-most active section already holds `m`, else pushes first (mutex
    cleared) and locks, which may detach and suspend the sections below."""
    c = CriticalSection()
    if await mutex_lock_fast(t, m):
        c.mutex = m
        _push(t, c)
        return c
    top = _top(t)
    if top is not None and not top.inactive and m in (top.mutex, top.mutex2):
        return c                        # re-entrant: mutex None, not pushed
    _push(t, c)
    await mutex_lock(t, m)
    c.mutex = m
    return c


async def begin2(t: "ThreadState", a: int, b: int) -> CriticalSection:
    """`Py_BEGIN_CRITICAL_SECTION2(a, b)`: both objects' mutexes, the lower address first."""
    return await begin2_mutex(t, a + OB_MUTEX, b + OB_MUTEX)


async def begin2_mutex(t: "ThreadState", m1: int, m2: int) -> CriticalSection:
    """`_PyCriticalSection2_BeginMutex` / `BeginSlow`."""
    if m1 == m2:
        return await begin_mutex(t, m1)
    if m1 > m2:
        m1, m2 = m2, m1             # lock order: address order, as in C
    c = CriticalSection()
    if await mutex_lock_fast(t, m1):
        if await mutex_lock_fast(t, m2):
            c.mutex, c.mutex2 = m1, m2
            _push(t, c)
            return c
        await mutex_unlock(t, m1)
    _push(t, c)
    await mutex_lock(t, m1)
    await mutex_lock(t, m2)
    c.mutex, c.mutex2 = m1, m2
    return c


def _push(t: "ThreadState", c: CriticalSection) -> None:
    c.pushed = True
    t.critical_sections.append(c)


async def end(t: "ThreadState", c: CriticalSection) -> None:
    """`Py_END_CRITICAL_SECTION()` (one or two mutexes): unlock (`mutex2` first), pop; if the
    new top-most section is inactive, resume it."""
    if not c.pushed:
        return                          # re-entrant no-op section
    if _top(t) is not c:
        raise AssertionError(f"{t.name} ends a critical section that is not its top-most one")
    if c.inactive:
        raise AssertionError(f"{t.name} ends a critical section that is suspended")
    if c.mutex2 is not None:
        await mutex_unlock(t, c.mutex2)
    if c.mutex is not None:
        await mutex_unlock(t, c.mutex)
    t.critical_sections.pop()
    top = _top(t)
    if top is not None and top.inactive:
        await resume(t)


async def suspend_all(t: "ThreadState") -> None:
    """`_PyCriticalSection_SuspendAll` (from `_PyThreadState_Detach` and `_Suspend`): unlock
    every active section, top first, and mark it inactive."""
    if t.rt.mutated("critical-section-no-suspend"):
        return
    for c in reversed(t.critical_sections):
        if c.inactive:
            continue
        if c.mutex2 is not None:
            await mutex_unlock(t, c.mutex2)
        if c.mutex is not None:
            await mutex_unlock(t, c.mutex)
        c.inactive = True


async def resume(t: "ThreadState") -> None:
    """`_PyCriticalSection_Resume` (from `_PyThreadState_Attach`): re-lock the top-most
    section. Its mutexes are cleared while locking, so a nested detach/attach inside
    `mutex_lock` neither unlocks nor re-locks them."""
    c = _top(t)
    if c is None or not c.inactive:
        return
    m1, m2 = c.mutex, c.mutex2
    c.mutex = c.mutex2 = None
    if m1 is not None:
        await mutex_lock(t, m1)
    if m2 is not None:
        await mutex_lock(t, m2)
    c.mutex, c.mutex2 = m1, m2
    c.inactive = False
