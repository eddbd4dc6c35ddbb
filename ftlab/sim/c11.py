"""C11 weak memory for the model's atomics (`Config(memory_model="c11")`).

An operational, view-based model in the style of loom and CDSChecker, sound for RC11 (Lahav et
al., PLDI 2017) in the cases the litmus tests pin down (tests/sim/test_c11_litmus.py):

- Every atomic location keeps its modification order `mo`, a list of `_Store` records (value,
  the storing thread, the message it carries). Memory holds the value of the mo-last store, so
  `peek` and plain reads see the newest value.
- Every thread has a view: per location the mo-latest store it has observed (read, written, or
  learnt through synchronisation). A load may read any *already executed* store at or after its
  view of the location (coherence: CoRR, CoWR, CoRW, CoWW); which one is a scheduling decision
  (`Machine.decide`), candidate 0 being the newest, so the first DFS branch is the SC one.
  Reading only executed stores makes po ∪ rf acyclic: no load buffering, no out-of-thin-air.
- A non-SC plain store may be placed anywhere in `mo` after the thread's view of the location
  (another decision, candidate 0 = the end) but never between an RMW and the store it read.
  SC stores and RMWs go to the end; an RMW reads the mo-last store (atomicity).
- Messages: a release store carries the thread's view and vector clock; a relaxed store after a
  release fence carries the fence's; an RMW also carries the message of the store it read (a
  release sequence continues through RMWs, and, as in RC11, not through plain stores of the
  same thread). An acquire load joins the message; a relaxed load keeps it for a later acquire
  fence. The vector clocks feed the race detector, which in this mode gets its atomic
  happens-before edges only from here (the store actually read, not the newest one).
- SC: an SC load reads at or after the newest SC store to the location; an SC fence joins and
  then publishes a global fence view, which a later SC store or RMW joins (psc follows the
  order in which SC events run). Stronger than RC11 only for programs mixing SC and non-SC
  accesses to one location across SC fences, and in that an SC write after an SC fence always
  sees what the fence saw, even where RC11 could order it before the fence (documented
  limitation: the model may miss such an outcome, never invents one; no litmus test depends
  on it).

A plain (non-atomic) write to an atomic location (initialisation, `store_unpublished`) is seen
on the next atomic access as a new mo baseline visible to every thread; the race detector
checks those accesses as before.
"""

from __future__ import annotations

import bisect
import types
from functools import partialmethod
from typing import TYPE_CHECKING

from ftlab.sim.atomics import (
    _MASKS, ACQUIRE, RELAXED, RELEASE, SEQ_CST, Memory, Order,
)
from ftlab.sim.memory import RMW_ADD, RMW_AND, RMW_OR, RMW_SET, Tag
from ftlab.sim.race import vc_join

if TYPE_CHECKING:
    from ftlab.sim.machine import Machine, VThread

_GAP = 1 << 16


class _Store:
    __slots__ = ("value", "key", "tid", "view", "vc", "rmw")

    def __init__(self, value: int, key: int, tid: int, view: dict | None, vc: list[int] | None,
                 rmw: bool) -> None:
        self.value = value
        self.key = key          # position in mo: keys strictly increase along mo
        self.tid = tid
        self.view = view        # the message's view (addr -> _Store), None: no message
        self.vc = vc            # the message's vector clock for the race detector
        self.rmw = rmw          # read its immediate mo-predecessor


def _by_key(s: _Store) -> int:
    return s.key


def view_join(into: dict, other: dict) -> None:
    for a, s in other.items():
        mine = into.get(a)
        if mine is None or mine.key < s.key:
            into[a] = s


class C11Memory(Memory):
    """`Memory` whose atomics follow the C11 model above."""

    __slots__ = ("_mo", "_views", "_acq", "_rel", "_sc_last", "_sc_fence", "_joined",
                 "_sc_joined")

    def __init__(self, machine: "Machine", base: int = 0x7F00_0000_0000) -> None:
        super().__init__(machine, base)
        self.unobserved = False  # no fast paths: every atomic goes through the model
        self._mo: dict[int, list[_Store]] = {}
        self._views: list[dict] = []          # thread index -> view
        self._acq: list[tuple[dict, list[int]]] = []   # pending for an acquire fence
        self._rel: list[tuple[dict, list[int]] | None] = []  # last release fence's message
        self._sc_last: dict[int, _Store] = {}
        self._sc_fence: dict = {}
        # Joins that are known no-ops, skipped (cost only, never a result): a thread's view and
        # clock only grow, and a message (a store's view and clock) and a published SC fence
        # view never change once made, so joining the same one again adds nothing.
        self._joined: list[_Store | None] = []   # thread index -> last store it acquired
        self._sc_joined: list[dict | None] = []  # thread index -> last SC fence view joined

    # -----------------------------------------------------------------------------------------
    # Thread views and the synchronisation of threads, locks and events

    def _view(self, ti: int) -> dict:
        views = self._views
        while len(views) <= ti:
            views.append({})
            self._acq.append(({}, []))
            self._rel.append(None)
            self._joined.append(None)
            self._sc_joined.append(None)
        return views[ti]

    def on_spawn(self, parent: "VThread | None", child: "VThread", after_all: bool) -> None:
        v = self._view(child.index)
        if parent is not None:
            view_join(v, self._view(parent.index))
        if after_all:
            for u in self.machine.threads[:-1]:
                view_join(v, self._view(u.index))

    def release_view(self, t: "VThread") -> dict:
        """The view a lock release or an event set publishes."""
        return dict(self._view(t.index))

    def acquire_view(self, t: "VThread", view: dict | None) -> None:
        if view:
            view_join(self._view(t.index), view)

    @staticmethod
    def acquire_view_into(into: dict, view: dict) -> None:
        view_join(into, view)

    # -----------------------------------------------------------------------------------------
    # Locations

    def _c11_loc(self, addr: int, width: int) -> list[_Store]:
        raw = self.raw_load(addr, width)
        mo = self._mo.get(addr)
        if mo is None:
            mo = self._mo[addr] = [_Store(raw, 0, -1, None, None, False)]
        elif mo[-1].value != raw:
            # A plain write since the last atomic one: a baseline every thread sees.
            mo[:] = [_Store(raw, mo[-1].key + _GAP, -1, None, None, False)]
        return mo

    def _first_allowed(self, mo: list[_Store], floor: _Store | None) -> int:
        if floor is None:
            return 0
        return max(0, bisect.bisect_left(mo, floor.key, key=_by_key))

    def _c11_read(self, t: "VThread", addr: int, mo: list[_Store], order: Order, last: bool) -> _Store:
        view = self._view(t.index)
        if last:
            s = mo[-1]
        else:
            lo = self._first_allowed(mo, view.get(addr))
            if order == SEQ_CST:
                sc = self._sc_last.get(addr)
                if sc is not None:
                    lo = max(lo, self._first_allowed(mo, sc))
            n = len(mo) - lo
            s = mo[-1 - self.machine.decide(n)] if n > 1 else mo[-1]
        mine = view.get(addr)
        if mine is None or mine.key < s.key:
            view[addr] = s
        if s.view is not None:
            if order & ACQUIRE:
                if self._joined[t.index] is not s:
                    self._joined[t.index] = s
                    view_join(view, s.view)
                    if self.machine.race is not None and s.vc:
                        vc_join(t.vc, s.vc)
            else:
                pv, pc = self._acq[t.index]
                view_join(pv, s.view)
                if s.vc:
                    vc_join(pc, s.vc)
        return s

    def _c11_write(self, t: "VThread", addr: int, width: int, value: int, order: Order,
               mo: list[_Store], read: _Store | None, tag: Tag) -> None:
        ti = t.index
        view = self._view(ti)
        race = self.machine.race
        msg_view: dict | None = None
        msg_vc: list[int] | None = None
        if order & RELEASE:
            msg_view = dict(view)
            if race is not None:
                msg_vc = race.release(t)
        elif self._rel[ti] is not None:
            msg_view, msg_vc = dict(self._rel[ti][0]), list(self._rel[ti][1])
        if read is not None and read.view is not None:
            # A release sequence continues through an RMW.
            msg_view = dict(read.view) if msg_view is None else msg_view
            if msg_view is not read.view:
                view_join(msg_view, read.view)
            if read.vc:
                msg_vc = list(read.vc) if msg_vc is None else msg_vc
                vc_join(msg_vc, read.vc)
        if order == SEQ_CST:
            # An SC write after an SC fence (in the order the two ran) is psc-after it: it sees
            # what the fence saw. This is what makes `F_sc; R(y)` in one thread and
            # `W_sc(y); R(x)` in another a store-buffering pair that cannot both read old
            # values (qsbr_poll_scan's fence against _Py_qsbr_attach's seq_cst store).
            if self._sc_joined[ti] is not self._sc_fence:
                self._sc_joined[ti] = self._sc_fence
                view_join(view, self._sc_fence)
        if read is not None or order == SEQ_CST:
            pos = len(mo)
        else:
            lo = self._first_allowed(mo, view.get(addr))
            if lo < len(mo) and mo[lo] is view.get(addr):
                lo += 1
            slots = [j for j in range(len(mo), lo - 1, -1)
                     if j == len(mo) or (not mo[j].rmw and j > 0)]
            pos = slots[self.machine.decide(len(slots))] if len(slots) > 1 else len(mo)
        if pos == len(mo):
            key = mo[-1].key + _GAP
        else:
            key = (mo[pos - 1].key + mo[pos].key) // 2
            if key == mo[pos - 1].key:
                for i, s in enumerate(mo):
                    s.key = mo[0].key + i * _GAP * 2
                key = mo[pos - 1].key + _GAP
        s = _Store(value & _MASKS[width], key, ti, msg_view, msg_vc, read is not None)
        mo.insert(pos, s)
        if msg_view is not None:
            msg_view[addr] = s
        view[addr] = s
        if order == SEQ_CST:
            self._sc_last[addr] = s
        if pos == len(mo) - 1:
            self.raw_store(addr, width, value, tag)

    def _c11_access(self, addr: int, width: int, is_write: bool) -> None:
        if self.on_atomic_access is not None:
            self.on_atomic_access(addr, width, is_write)
        if self.machine.race is not None:
            self.machine.race.access(addr, width, is_write, True)

    # -----------------------------------------------------------------------------------------
    # The atomics

    @types.coroutine
    def load(self, addr: int, width: int = 8, order: Order = SEQ_CST):
        yield
        m = self.machine
        self._c11_access(addr, width, False)
        v = self._c11_read(m.current, addr, self._c11_loc(addr, width), order, False).value
        if m.trace is not None:
            self._note("load", addr, order, f"-> {v:#x}")
        return v

    @types.coroutine
    def load_newest(self, addr: int, width: int = 8, order: Order = SEQ_CST):
        """The load of a spin loop that waits for a value (`spin_until`): a real loop reloads
        until the store it waits for becomes visible, which C11 guarantees eventually; the
        model reads the mo-newest store at once instead of exploring every stale retry."""
        yield
        m = self.machine
        self._c11_access(addr, width, False)
        v = self._c11_read(m.current, addr, self._c11_loc(addr, width), order, True).value
        if m.trace is not None:
            self._note("load", addr, order, f"-> {v:#x}")
        return v

    @types.coroutine
    def store(self, addr: int, value: int, width: int = 8, order: Order = SEQ_CST,
              tag: Tag = Tag.META):
        yield
        m = self.machine
        self._c11_access(addr, width, True)
        self._c11_write(m.current, addr, width, value, order, self._c11_loc(addr, width), None, tag)
        if m.trace is not None:
            self._note("store", addr, order, f"<- {value & _MASKS[width]:#x}")

    def _rmw(self, addr: int, width: int, order: Order, op: int, operand: int, tag: Tag,
             what: str) -> int:
        """Every successful read-modify-write (fetch_add, a successful cas): it reads the
        mo-last store and writes right after it (atomicity), continuing its release sequence."""
        m = self.machine
        t = m.current
        self._c11_access(addr, width, True)
        mo = self._c11_loc(addr, width)
        read = self._c11_read(t, addr, mo, order, True)
        old = read.value
        mask = _MASKS[width]
        if op == RMW_SET:
            new = operand
        elif op == RMW_ADD:
            new = old + operand
        elif op == RMW_OR:
            new = old | operand
        elif op == RMW_AND:
            new = old & operand
        else:
            raise ValueError(f"unknown read-modify-write operation {op}")
        self._c11_write(t, addr, width, new & mask, order, mo, read, tag)
        if m.trace is not None:
            self._note(what, addr, order, f"{old:#x} -> {new & mask:#x}")
        return old

    @types.coroutine
    def fetch_add(self, addr: int, delta: int, width: int = 8, order: Order = SEQ_CST,
                  tag: Tag = Tag.META):
        yield
        return self._rmw(addr, width, order, RMW_ADD, delta, tag, "fetch_add")

    @types.coroutine
    def cas(self, addr: int, expected: int, desired: int, width: int = 8,
            order: Order = SEQ_CST, tag: Tag = Tag.META):
        """A strong compare-exchange reads the mo-last store (RMW atomicity); a failed one is
        a load of it with the acquire part of `order`."""
        yield
        m = self.machine
        t = m.current
        mask = _MASKS[width]
        mo = self._c11_loc(addr, width)
        old = mo[-1].value
        if old != expected & mask:
            self._c11_access(addr, width, False)
            self._c11_read(t, addr, mo, Order(order & ACQUIRE) if order != SEQ_CST else order, True)
            if m.trace is not None:
                self._note("cas-fail", addr, order, f"saw {old:#x}, wanted {expected & mask:#x}")
            return False, old
        return True, self._rmw(addr, width, order, RMW_SET, desired, tag, "cas")

    @types.coroutine
    def fence(self, order: Order = SEQ_CST):
        """`atomic_thread_fence(order)`."""
        yield
        self.fence_now(order)

    def fence_now(self, order: Order) -> None:
        m = self.machine
        t = m.current
        view = self._view(t.index)
        if order & ACQUIRE:
            pv, pc = self._acq[t.index]
            view_join(view, pv)
            if m.race is not None and pc:
                vc_join(t.vc, pc)
        if order == SEQ_CST:
            view_join(view, self._sc_fence)
            self._sc_fence = self._sc_joined[t.index] = dict(view)
        if order & RELEASE:
            self._rel[t.index] = (dict(view), m.race.release(t) if m.race is not None else [])
        if m.trace is not None:
            m.record(t, f"fence ({order})")

    load_relaxed = partialmethod(load, order=RELAXED)
    load_acquire = partialmethod(load, order=ACQUIRE)
    store_relaxed = partialmethod(store, order=RELAXED)
    store_release = partialmethod(store, order=RELEASE)
