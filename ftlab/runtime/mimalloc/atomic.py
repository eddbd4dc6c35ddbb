"""The model's `include/mimalloc/atomic.h`: yielding, and spin loops as parked waits.

The atomics themselves are the machine's (`ftlab.sim.atomics`): every `await mem.load(...)`,
`mem.cas(...)` ... is a scheduling point with its C11 order recorded. Two things are added here.

`atomic_yield` is `mi_atomic_yield`: a bare scheduling point (the thread stays runnable). It is
used where mimalloc spins a bounded number of times (`_mi_page_try_use_delayed_free` gives up
after four yields).

`spin_until` replaces an *unbounded* spin loop, `while (!done(load(x))) mi_atomic_yield();`.
A thread spinning on a word that only another thread will change never makes progress by itself;
under a priority scheduler (PCT) the spinning thread could even starve the thread it waits for
and turn a correct program into a reported livelock. So the model parks the spinning thread
until some thread writes the word again (`notify`), then reloads it. Every interleaving of the
real loop that can end is kept: the reload happens at a scheduling point after every write of
the word. A missing `notify` would show up as a reported deadlock, never as a silent hang.
The words waited on are few and written only by the allocator: a page's `xthread_free` (left in
`MI_DELAYED_FREEING` by a cross-thread free, `_mi_page_use_delayed_free`) and the pool's
`abandoned_readers` (`_mi_abandoned_await_readers`).
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Callable

from ftlab.sim.atomics import ACQUIRE

if TYPE_CHECKING:
    from ftlab.runtime.mimalloc.init import MiRuntime


def atomic_yield(mi: "MiRuntime"):
    """`mi_atomic_yield()`: a scheduling point where the thread stays runnable."""
    return mi.machine.current.yield_now()


@types.coroutine
def _park(mi: "MiRuntime", addr: int, what: str):
    m = mi.machine
    t = m.current
    mi.waiters.setdefault(addr, []).append(t)
    m.block(t, what)
    yield


async def spin_until(mi: "MiRuntime", addr: int, done: Callable[[int], bool], what: str) -> int:
    """`do { v = load_acquire(addr); if (!done(v)) mi_atomic_yield(); } while (!done(v));`
    with the yield modelled as parking until `addr` is written (module docstring)."""
    while True:
        # c11 memory model: the newest store, as the real loop reads eventually (ftlab/sim/c11.py).
        v = await mi.mem.load_newest(addr, 8, ACQUIRE)
        if done(v):
            return v
        mi.counters["spin_parks"] += 1
        await _park(mi, addr, what)


def notify(mi: "MiRuntime", addr: int) -> None:
    """Wake the threads parked on `addr` (called right after the allocator writes it)."""
    waiting = mi.waiters.pop(addr, None)
    if waiting:
        wake = mi.machine.wake
        for t in waiting:
            wake(t)
