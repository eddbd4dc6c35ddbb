"""Atomic operations on simulated memory; each one is a scheduling point.

`Memory` is the address space of one machine with C11-style atomics on top: `load`, `store`,
`exchange`, `cas` (compare-exchange), `fetch_add`, `fetch_or`, `fetch_and`, each with a width
and a memory order. The operation happens after the scheduler has chosen the thread, so the
value an atomic returns is the value in memory at the moment the thread runs. Execution is
sequentially consistent at these points; the order is still recorded, because the race
detector derives happens-before from it (release publishes, acquire joins) and a later
weak-memory mode will need it.

Every atomic access except `peek` is reported, before it happens, to `on_atomic_access(addr,
width, is_write)` if one is set (a failed CAS as a read), the atomic counterpart of the address
space's `on_plain_access`; checked mode's use-after-free oracle sets it.

Values are unsigned; `as_signed` converts. Stores mask to the width, so a negative delta or a
negative value stores its two's complement, as C does with `Py_ssize_t` fields.
"""

from __future__ import annotations

import enum
import types
from functools import partialmethod
from typing import TYPE_CHECKING, Callable

from ftlab.sim.memory import (
    _MASK, _PACK, _UNPACK, OS_PAGE_MASK, OS_PAGE_SHIFT, RMW_ADD, RMW_AND, RMW_OR, RMW_SET, TAGS_AT,
    WORD_SHIFT, AddressSpace, Tag,
)

if TYPE_CHECKING:
    from ftlab.sim.machine import Machine


class Order(enum.IntEnum):
    RELAXED = 0
    ACQUIRE = 1
    RELEASE = 2
    ACQ_REL = 3
    SEQ_CST = 7

    def __str__(self) -> str:
        return _SHORT[self]


_SHORT = {Order.RELAXED: "rlx", Order.ACQUIRE: "acq", Order.RELEASE: "rel",
          Order.ACQ_REL: "acq_rel", Order.SEQ_CST: "sc"}

RELAXED, ACQUIRE, RELEASE, ACQ_REL, SEQ_CST = (
    Order.RELAXED, Order.ACQUIRE, Order.RELEASE, Order.ACQ_REL, Order.SEQ_CST)

_MASKS = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFF_FFFF, 8: 0xFFFF_FFFF_FFFF_FFFF}


def as_signed(value: int, width: int = 8) -> int:
    bits = width * 8
    return value - (1 << bits) if value >> (bits - 1) else value


class Memory(AddressSpace):
    """The address space of a machine, with atomics that are scheduling points."""

    __slots__ = ("machine", "unobserved", "on_atomic_access")

    def __init__(self, machine: "Machine", base: int = 0x7F00_0000_0000) -> None:
        super().__init__(base)
        self.machine = machine
        # True when neither a race detector nor a trace nor `on_atomic_access` watches: atomics
        # may take fast paths.
        self.unobserved = machine.race is None and machine.trace is None
        self.on_atomic_access: Callable[[int, int, bool], None] | None = None

    def watch_atomics(self, hook: Callable[[int, int, bool], None]) -> None:
        """Set `on_atomic_access` (the caller chains any hook that was there before)."""
        self.on_atomic_access = hook
        self.unobserved = False

    def _note(self, what: str, addr: int, order: Order, result: str) -> None:
        m = self.machine
        m.record(m.current, f"{what} {m.addr_words(addr)} {result} ({order})")

    # The body after `yield` runs when the scheduler has picked this thread.

    @types.coroutine
    def load(self, addr: int, width: int = 8, order: Order = SEQ_CST):
        yield
        m = self.machine
        if self.on_atomic_access is not None:
            self.on_atomic_access(addr, width, False)
        if m.race is not None:
            m.race.access(addr, width, False, True)
            if order & ACQUIRE:
                m.race.atomic_sync(m.current, addr, True, False, False, False)
        v = self.raw_load(addr, width)
        if m.trace is not None:
            self._note("load", addr, order, f"-> {v:#x}")
        return v

    @types.coroutine
    def store(self, addr: int, value: int, width: int = 8, order: Order = SEQ_CST,
              tag: Tag = Tag.META):
        yield
        m = self.machine
        if self.on_atomic_access is not None:
            self.on_atomic_access(addr, width, True)
        if m.race is not None:
            m.race.access(addr, width, True, True)
            m.race.atomic_sync(m.current, addr, False, bool(order & RELEASE), True, False)
        self.raw_store(addr, width, value, tag)
        if m.trace is not None:
            self._note("store", addr, order, f"<- {value & _MASKS[width]:#x}")

    def _rmw(self, addr: int, width: int, order: Order, op: int, operand: int, tag: Tag,
             what: str) -> int:
        m = self.machine
        if self.on_atomic_access is not None:
            self.on_atomic_access(addr, width, True)
        if m.race is not None:
            m.race.access(addr, width, True, True)
            m.race.atomic_sync(m.current, addr, bool(order & ACQUIRE), bool(order & RELEASE),
                               True, True)
        old = self.raw_update(addr, width, op, operand, tag)
        if m.trace is not None:
            self._note(what, addr, order, f"{old:#x} -> {self.raw_load(addr, width):#x}")
        return old

    @types.coroutine
    def exchange(self, addr: int, value: int, width: int = 8, order: Order = SEQ_CST,
                 tag: Tag = Tag.META):
        yield
        return self._rmw(addr, width, order, RMW_SET, value, tag, "exchange")

    @types.coroutine
    def fetch_add(self, addr: int, delta: int, width: int = 8, order: Order = SEQ_CST,
                  tag: Tag = Tag.META):
        yield
        if self.unobserved and not addr & (width - 1):
            # Fast path (no race detector, no trace): a naturally aligned atomic lies in one
            # backed page and one tag word.
            page = self._pages.get(addr >> OS_PAGE_SHIFT)
            if page is not None:
                off = addr & OS_PAGE_MASK
                old = _UNPACK[width](page, off)[0]
                _PACK[width](page, off, (old + delta) & _MASK[width])
                page[TAGS_AT + (off >> WORD_SHIFT)] = tag
                return old
        return self._rmw(addr, width, order, RMW_ADD, delta, tag, "fetch_add")

    @types.coroutine
    def fetch_or(self, addr: int, bits: int, width: int = 8, order: Order = SEQ_CST,
                 tag: Tag = Tag.META):
        yield
        return self._rmw(addr, width, order, RMW_OR, bits, tag, "fetch_or")

    @types.coroutine
    def fetch_and(self, addr: int, bits: int, width: int = 8, order: Order = SEQ_CST,
                  tag: Tag = Tag.META):
        yield
        return self._rmw(addr, width, order, RMW_AND, bits, tag, "fetch_and")

    @types.coroutine
    def cas(self, addr: int, expected: int, desired: int, width: int = 8,
            order: Order = SEQ_CST, tag: Tag = Tag.META):
        """Compare-exchange: (True, expected) if it stored `desired`, else (False, observed).
        A failed CAS is an atomic load with the acquire part of `order`."""
        yield
        m = self.machine
        mask = _MASKS[width]
        old = self.raw_load(addr, width)
        if old != expected & mask:
            if self.on_atomic_access is not None:
                self.on_atomic_access(addr, width, False)
            if m.race is not None:
                m.race.access(addr, width, False, True)
                if order & ACQUIRE:
                    m.race.atomic_sync(m.current, addr, True, False, False, False)
            if m.trace is not None:
                self._note("cas-fail", addr, order, f"saw {old:#x}, wanted {expected & mask:#x}")
            return False, old
        if self.on_atomic_access is not None:
            self.on_atomic_access(addr, width, True)
        if m.race is not None:
            m.race.access(addr, width, True, True)
            m.race.atomic_sync(m.current, addr, bool(order & ACQUIRE), bool(order & RELEASE),
                               True, True)
        self.raw_store(addr, width, desired, tag)
        if m.trace is not None:
            self._note("cas", addr, order, f"{old:#x} -> {desired & mask:#x}")
        return True, old

    @types.coroutine
    def fence(self, order: Order = SEQ_CST):
        """`atomic_thread_fence(order)`: a scheduling point that orders nothing more under
        sequential consistency (the c11 memory model gives it its meaning)."""
        yield

    def fence_now(self, order: Order) -> None:
        """A fence inside the current step (before the thread's next access): its effect is
        on the thread's own later accesses, so it needs no scheduling point of its own."""

    # Atomic accesses that are not scheduling points. Sound only where the moment of the access
    # cannot change what the program does; each caller says why in its own words.

    def peek(self, addr: int, width: int = 8) -> int:
        """A relaxed load whose timing does not matter: of a word only the loading thread
        writes, or one whose value a later CAS checks again. Not reported to the race
        detector (a stale peek of freed memory is what lock-free readers do by design)."""
        return self.raw_load(addr, width)

    def store_unpublished(self, addr: int, value: int, width: int = 8, tag: Tag = Tag.META,
                          release: bool = False) -> None:
        """A relaxed store into memory no other thread can reach yet (a new object before it
        is published): an atomic for the race detector, not a scheduling point. `release`:
        a flag a thread sets at the end of an atomic step of its own, which others read with
        acquire (the step's earlier writes happen before what they do next)."""
        m = self.machine
        if self.on_atomic_access is not None:
            self.on_atomic_access(addr, width, True)
        if m.race is not None:
            m.race.access(addr, width, True, True)
            m.race.atomic_sync(m.current, addr, False, release, True, False)
        self.raw_store(addr, width, value, tag)

    # The load of a spin loop's exit check: under SC every load reads the newest store already.
    load_newest = load

    load_relaxed = partialmethod(load, order=RELAXED)
    load_acquire = partialmethod(load, order=ACQUIRE)
    store_relaxed = partialmethod(store, order=RELAXED)
    store_release = partialmethod(store, order=RELEASE)
