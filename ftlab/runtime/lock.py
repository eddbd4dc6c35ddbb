"""The sequence lock of `Python/lock.c` (`_PySeqLock_*`, `Include/internal/pycore_lock.h`).

A `_PySeqLock` is one uint32 `sequence`: even = stable, odd = a writer is active. Writers
serialise on it (`lock_write`: spin while odd, CAS even -> odd, then a release fence, gh-121368)
and finish with `unlock_write` (store +1: even again, a new value) or `abandon_write` (store -1:
the previous even value, so readers see "unchanged"). Readers never write: `begin_read` waits
for an even value (acquire); `end_read(prev)` issues an acquire fence and reloads; equal means
no writer ran in between and the fields read in between form one consistent snapshot.

Invariant (what the type cache relies on): a reader whose `end_read` succeeds read every field
while no writer was between `lock_write` and `unlock_write`. In the model execution is
sequentially consistent at scheduling points, so the fences are recorded as the orders of the
accesses they strengthen (the CAS is acq_rel, the reload acquire).

Mutation `type-cache-no-seqlock`: every operation is a no-op and `end_read` always succeeds
(the type cache before gh-113743 made it thread-safe).
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING

from ftlab.sim.atomics import ACQUIRE, RELAXED, RELEASE, SEQ_CST
from ftlab.sim.memory import Tag

if TYPE_CHECKING:
    from ftlab.runtime.pystate import ThreadState

MUTATION = "type-cache-no-seqlock"


@types.coroutine
def _spin_until_changed(t: "ThreadState", seq: int, seen: int):
    """A `_Py_yield` spin on an odd sequence, modelled as a wait until the word changes: the
    spinner is not runnable while the writer has not finished, so an explorer cannot spin in
    it forever (the check and the enqueue are one step, as in the parking lot)."""
    yield
    t.rt.machine.note_access(seq, 4, True)     # the check and the enqueue on its word
    if t.mem.raw_load(seq, 4) == seen:
        t.rt.parking_lot.setdefault(seq, []).append(t.vt)
        t.rt.machine.block(t.vt, f"seqlock at {seq:#x} (a writer is active)")
        yield


def _wake_spinners(t: "ThreadState", seq: int) -> None:
    for w in t.rt.parking_lot.pop(seq, []):
        t.rt.machine.wake(w)


async def seqlock_lock_write(t: "ThreadState", seq: int) -> None:
    """`_PySeqLock_LockWrite`: wait for an even value and CAS it to odd."""
    if t.rt.mutated(MUTATION):
        return
    mem = t.mem
    prev = await mem.load(seq, 4, RELAXED)
    while True:
        if prev & 1:
            await _spin_until_changed(t, seq, prev)     # another writer is active
            prev = await mem.load_newest(seq, 4, RELAXED)  # a spin's reload (c11: newest)
            continue
        # The CAS and the release fence after it (gh-121368): the field stores that follow
        # cannot be seen before the odd value (pairs with `end_read`'s acquire fence).
        ok, prev = await mem.cas(seq, prev, prev + 1, 4, SEQ_CST, Tag.META)
        if ok:
            if not t.rt.mutated("seqlock-lock-write-no-fence"):
                mem.fence_now(RELEASE)
            return


async def seqlock_unlock_write(t: "ThreadState", seq: int) -> None:
    """`_PySeqLock_UnlockWrite`: +1, even again; pairs with `begin_read`'s acquire. C loads
    the sequence relaxed and stores it back seq_cst (`_Py_atomic_store_uint32`); only the
    writer changes it while it is odd, so one seq_cst add is the same."""
    if t.rt.mutated(MUTATION):
        return
    await t.mem.fetch_add(seq, 1, 4, SEQ_CST, Tag.META)
    _wake_spinners(t, seq)


async def seqlock_abandon_write(t: "ThreadState", seq: int) -> None:
    """`_PySeqLock_AbandonWrite`: back to the previous even value (nothing was written); a
    relaxed load and a seq_cst store in C, as in `seqlock_unlock_write`."""
    if t.rt.mutated(MUTATION):
        return
    await t.mem.fetch_add(seq, -1 & 0xFFFF_FFFF, 4, SEQ_CST, Tag.META)
    _wake_spinners(t, seq)


async def seqlock_begin_read(t: "ThreadState", seq: int) -> int:
    """`_PySeqLock_BeginRead`: an even sequence value (spins while a writer is active)."""
    if t.rt.mutated(MUTATION):
        return 0
    value = await t.mem.load(seq, 4, ACQUIRE)
    while value & 1:
        await _spin_until_changed(t, seq, value)
        value = await t.mem.load_newest(seq, 4, ACQUIRE)  # a spin's reload (c11: newest)
    return value


async def seqlock_end_read(t: "ThreadState", seq: int, previous: int) -> bool:
    """`_PySeqLock_EndRead`: True if no write happened since `begin_read` returned `previous`
    (the acquire fence before the reload: the field loads are not moved after it)."""
    if t.rt.mutated(MUTATION):
        return True
    if t.rt.mutated("seqlock-end-read-no-fence"):
        # Before gh-121368: an acquire load orders the loads after it, not the field loads
        # before it, so a reader can see a new field and the old sequence.
        if await t.mem.load(seq, 4, ACQUIRE) == previous:
            return True
    else:
        t.mem.fence_now(ACQUIRE)
        if await t.mem.load(seq, 4, RELAXED) == previous:
            return True
    await t.yield_now()
    return False
