"""Happens-before race detection with vector clocks (FastTrack-style epochs).

Every thread carries a vector clock `vc` (a list indexed by thread index; a missing entry is 0).
Happens-before edges come from thread start (parent -> child), join (child's exit -> joiner),
mutexes and events (release -> acquire), and atomics: a release store or RMW publishes the
thread's clock on the location; an acquire load or RMW joins it. A relaxed store ends the
location's release sequence; a relaxed RMW continues it. Sequential consistency at the
scheduling points does not create happens-before by itself, as in C11.

Each access is kept as an epoch (thread, that thread's clock at the access). Two accesses to the
same address race when they come from different threads, neither happens before the other, at
least one writes and at least one is plain (non-atomic). Accesses are keyed by start address, so
a u32 field and the u64 around it are different locations (no false alarms between neighbouring
header fields; overlapping accesses of different widths are not compared).

With `locations=True` each access also keeps the file, line and function of the first frame
outside `ftlab/sim`; exploration leaves it off for speed and a failing run is replayed with it on.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.sim.machine import Machine, VThread

_SIM_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# Source locations are named relative to the directory that holds the `ftlab` package, so a
# stored report does not depend on where ftlab was run from.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def vc_join(into: list[int], other: list[int]) -> None:
    n = len(other)
    if len(into) < n:
        into.extend([0] * (n - len(into)))
    for i in range(n):
        if other[i] > into[i]:
            into[i] = other[i]


def _tick(t: "VThread") -> None:
    vc = t.vc
    i = t.index
    if len(vc) <= i:
        vc.extend([0] * (i + 1 - len(vc)))
    vc[i] += 1


class RaceDetector:
    __slots__ = ("machine", "locations", "_writes", "_reads", "_sync", "checks")

    def __init__(self, locations: bool = False) -> None:
        self.machine: Machine | None = None
        self.locations = locations
        # addr -> (thread, clock, step, atomic, location) of the last write
        self._writes: dict[int, tuple] = {}
        # addr -> {thread * 2 + atomic: (clock, step, location)} of the last reads
        self._reads: dict[int, dict[int, tuple]] = {}
        # addr -> (publisher, clock) of the release sequence on that atomic location
        self._sync: dict[int, tuple[int, list[int]]] = {}
        self.checks = 0

    # -----------------------------------------------------------------------------------------
    # Happens-before edges

    def on_spawn(self, parent: "VThread | None", child: "VThread") -> None:
        child.vc = list(parent.vc) if parent is not None else []
        _tick(child)
        if parent is not None:
            _tick(parent)

    def on_exit(self, t: "VThread") -> None:
        pass  # joiners acquire t.vc, which no longer changes

    def acquire(self, t: "VThread", clock: list[int] | None) -> None:
        if clock:
            vc_join(t.vc, clock)

    def release(self, t: "VThread") -> list[int]:
        """The clock to publish on a sync object; the thread's own clock moves on."""
        published = list(t.vc)
        _tick(t)
        return published

    def atomic_sync(self, t: "VThread", addr: int, acquire: bool, release: bool,
                    write: bool, rmw: bool) -> None:
        # _sync[addr] = (publisher, clock): publisher is the thread whose clock was copied, or
        # -1 when the clock joins several. A thread's own clock only grows, so it dominates
        # any clock it published itself: joining that again is skipped.
        sync = self._sync
        entry = sync.get(addr)
        ti = t.index
        if acquire and entry is not None and entry[0] != ti:
            vc_join(t.vc, entry[1])
        if write:
            if release:
                c = list(t.vc)
                publisher = ti
                if rmw and not acquire and entry is not None and entry[0] != ti:
                    vc_join(c, entry[1])  # a release RMW continues the release sequence
                    publisher = -1
                sync[addr] = (publisher, c)
                _tick(t)
            elif not rmw:
                sync.pop(addr, None)  # a relaxed store ends the release sequence

    # -----------------------------------------------------------------------------------------
    # Accesses

    def _where(self) -> tuple[str, int, str] | None:
        f = sys._getframe(2)
        while f is not None and f.f_code.co_filename.startswith(_SIM_DIR):
            f = f.f_back
        if f is None:
            return None
        path = f.f_code.co_filename
        if path.startswith(_ROOT + os.sep):
            path = path[len(_ROOT) + 1:]
        return (path, f.f_lineno, f.f_code.co_name)

    def plain(self, addr: int, width: int, is_write: bool) -> None:
        """The AddressSpace hook for plain loads and stores: `access` with atomic=False,
        written out because it runs for every plain access of every execution (issue 13)."""
        m = self.machine
        t = m.current
        if t is None:
            return  # set-up code, before any thread: ordered before everything
        self.checks += 1
        ti = t.index
        vc = t.vc
        nvc = len(vc)
        loc = self._where() if self.locations else None
        w = self._writes.get(addr)
        if w is not None and w[0] != ti:
            u = w[0]
            if w[1] > (vc[u] if u < nvc else 0):
                self._report(addr, width, is_write, False, t, loc, u, w[2], True, w[3], w[4])
        if is_write:
            reads = self._reads.get(addr)
            if reads:
                for key, r in reads.items():
                    u = key >> 1
                    if u != ti and r[0] > (vc[u] if u < nvc else 0):
                        self._report(addr, width, True, False, t, loc, u, r[1], False, key & 1, r[2])
                reads.clear()
            self._writes[addr] = (ti, vc[ti], m.steps, False, loc)
        else:
            reads = self._reads.get(addr)
            if reads is None:
                self._reads[addr] = {ti * 2: (vc[ti], m.steps, loc)}
            else:
                reads[ti * 2] = (vc[ti], m.steps, loc)

    def access(self, addr: int, width: int, is_write: bool, atomic: bool) -> None:
        m = self.machine
        t = m.current
        if t is None:
            return  # set-up code, before any thread: ordered before everything
        self.checks += 1
        ti = t.index
        vc = t.vc
        nvc = len(vc)
        loc = self._where() if self.locations else None
        w = self._writes.get(addr)
        if w is not None and w[0] != ti and not (atomic and w[3]):
            u = w[0]
            if w[1] > (vc[u] if u < nvc else 0):
                self._report(addr, width, is_write, atomic, t, loc, u, w[2], True, w[3], w[4])
        reads = self._reads.get(addr)
        if is_write:
            if reads:
                for key, r in reads.items():
                    u, r_atomic = key >> 1, key & 1
                    if u != ti and not (atomic and r_atomic) and r[0] > (vc[u] if u < nvc else 0):
                        self._report(addr, width, True, atomic, t, loc, u, r[1], False, r_atomic, r[2])
                if atomic:
                    # keep the atomic reads this write is not ordered after
                    for key in [k for k, r in reads.items()
                                if (k >> 1) == ti or r[0] <= (vc[k >> 1] if (k >> 1) < nvc else 0)]:
                        del reads[key]
                else:
                    reads.clear()
            self._writes[addr] = (ti, vc[ti], m.steps, atomic, loc)
        else:
            if reads is None:
                reads = self._reads[addr] = {}
            reads[ti * 2 + atomic] = (vc[ti], m.steps, loc)

    def _report(self, addr, width, is_write, atomic, t, loc, u, ustep, u_write, u_atomic, uloc):
        m = self.machine
        def kind(write, atom):
            return f"{'atomic' if atom else 'plain'} {'write' if write else 'read'}"
        other = m.threads[u]
        msg = (f"{kind(is_write, atomic)} of {width} bytes at {addr:#x} by {t.label} at step "
               f"{m.steps} races with the {kind(u_write, u_atomic)} by {other.label} at step "
               f"{ustep}: neither happens before the other")
        details = []
        for who, step, where in ((t.label, m.steps, loc), (other.label, ustep, uloc)):
            if where is not None:
                details.append(f"{who} step {step}: {where[0]}:{where[1]} in {where[2]}")
        raise ViolationError("data-race", msg, tuple(details))
