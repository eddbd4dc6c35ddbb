"""The `gc-count` oracle (DESIGN §5.8, first half): the GC's allocation count loses nothing.

Ghost state, kept from the runtime's GC events only: `net`, the GC objects allocated minus
those freed since the last reset of `young.count` (`gc_object_allocated`, `gc_object_freed`,
`gc_count_reset`), and `at_reset`, every thread's buffered `alloc_count` at that reset (a
collection zeroes the interpreter's count but not the buffers: what a buffer held then was
counted before the reset).

Invariant: `young.count + sum(alloc_count - at_reset) == net`, over every thread state the run
created (an exited thread's buffer is simply never flushed, in CPython as here).

When it is checked: where no count update is in flight, i.e. at the start of a collection (the
world is stopped, and no thread stops between its `gc_object_allocated`/`gc_object_freed`
event and the buffer update that follows it) and at the end of the run. (A flush's atomic add
and the reset of the buffer happen in one step, after the add's scheduling point.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ftlab.runtime.observer import Observer
from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.runtime.pystate import Runtime


class GcCountOracle(Observer):
    """Install with `GcCountOracle.install(rt)`."""

    def __init__(self, rt: "Runtime") -> None:
        self.rt = rt
        self.net = 0
        self.at_reset: dict[int, int] = {}      # thread id -> its buffer at the last reset

    @classmethod
    def install(cls, rt: "Runtime") -> "GcCountOracle":
        found = rt.find_observer(cls)
        if found is None:
            found = cls(rt)
            rt.add_observer(found)
        return found

    def gc_object_allocated(self, t, op) -> None:
        self.net += 1

    def gc_object_freed(self, t, op) -> None:
        self.net -= 1

    def gc_collection_started(self, t) -> None:
        self.check(f"at the start of {t.vt.label}'s collection")

    def gc_count_reset(self, t) -> None:
        self.net = 0
        self.at_reset = {p.tid: p.gc.alloc_count for p in self.rt.tstates}

    def run_finished(self, rt) -> None:
        self.check("at the end of the run")

    def check(self, when: str) -> None:
        count = self.rt.gc.peek_count()
        buffered = sum(p.gc.alloc_count - self.at_reset.get(p.tid, 0) for p in self.rt.tstates)
        if count + buffered != self.net:
            bufs = ", ".join(f"{p.vt.label}: {p.gc.alloc_count}" for p in self.rt.tstates
                             if p.vt is not None)
            raise ViolationError(
                "gc-count", f"{when}, the interpreter's GC count is {count} and the threads "
                f"buffer {buffered} more since the last reset ({bufs}), but "
                f"{self.net} GC objects were allocated net since then "
                f"({count + buffered - self.net:+d} lost or invented)")


def install(rt: "Runtime") -> GcCountOracle:
    return GcCountOracle.install(rt)
