"""Per-object critical sections (`ftlab.runtime.critical_section`): lock order and suspension.

- `critical-section-abba`: two objects A and B, each with a counter in its payload. Thread
  "ab" enters A's section, then B's inside it; thread "ba" enters B's, then A's. Each bumps a
  counter with plain (racy-if-unlocked) loads and stores only where it holds that object's
  section: the outer one before entering the inner section and again after ending it (once the
  outer section has been resumed), the inner one inside it — not the outer one there, since a
  block on the inner mutex suspended the outer section and only the top-most is resumed. Blocking on the inner mutex detaches the thread, which suspends the outer
  section, so the pair never deadlocks; the race detector checks that every counter update
  happens under its object's mutex (a suspended section that was not re-locked would race).
  Mutation `critical-section-no-suspend`: detaching leaves the outer section locked, the
  classic ABBA `deadlock`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftlab.runtime import critical_section as cs
from ftlab.scenarios import Scenario
from ftlab.sim.memory import Tag

COUNTER = 32                    # a word of payload after the PyObject header


@dataclass
class _Pair:
    a: int
    b: int


def _setup(rt) -> None:
    objects = rt.objects
    rt.shared = _Pair(objects.immortal_object(None, 40, "A"),
                      objects.immortal_object(None, 40, "B"))


def _bump(t, op: int) -> None:
    t.mem.store_u64(op + COUNTER, t.mem.load_u64(op + COUNTER) + 1, Tag.PAYLOAD)


async def nested(t, outer: int, inner: int) -> None:
    c1 = await cs.begin(t, outer)
    _bump(t, outer)
    c2 = await cs.begin(t, inner)
    # Not the outer object here: blocking on the inner mutex may have suspended the outer
    # section, and only the top-most one is resumed (CPython's semantics too).
    _bump(t, inner)
    await cs.end(t, c2)
    _bump(t, outer)             # the outer section has been resumed if it was suspended
    await cs.end(t, c1)


async def _ab(t) -> None:
    await nested(t, t.shared.a, t.shared.b)


async def _ba(t) -> None:
    await nested(t, t.shared.b, t.shared.a)


def _check(rt) -> None:
    p = rt.shared
    for op, want in ((p.a, 3), (p.b, 3)):
        got = rt.mem.load_u64(op + COUNTER)
        if got != want:
            raise AssertionError(f"a counter updated under its critical section is {got}, "
                                 f"not {want}: an update was lost")
    if rt.parking_lot and any(rt.parking_lot.values()):
        raise AssertionError("a thread is still parked on a PyMutex after every thread ended")


CRITICAL_SECTION_ABBA = Scenario(
    name="critical-section-abba",
    description="two threads nest the critical sections of A and B in opposite orders; "
                "blocking on the inner one suspends the outer one",
    threads=(("ab", _ab), ("ba", _ba)),
    setup=_setup,
    check=_check,
    mutations={"critical-section-no-suspend": ("deadlock",)},
    dfs_bound=2,
    pct_steps=40,
)

SCENARIOS = (CRITICAL_SECTION_ABBA,)
