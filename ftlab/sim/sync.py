"""Blocking synchronisation for model threads: a mutex in the manner of PyMutex, and an event.

Waiters park: a thread that cannot proceed leaves the runnable set and is woken by the
operation that may let it proceed, so there is no busy loop for the explorer to spin in.
Unlock wakes one waiter, which retries (another thread may take the lock first, as with
PyMutex's barging). Every operation is a scheduling point. Unlock and set publish the thread's
clock; lock and a successful wait acquire it (the race detector's happens-before edges).
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING

from ftlab.sim.dpor import event_key, mutex_key
from ftlab.sim.race import vc_join
from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.sim.machine import Machine, VThread


class Mutex:
    __slots__ = ("machine", "name", "owner", "waiters", "clock", "view", "serial")

    def __init__(self, machine: "Machine", name: str = "mutex") -> None:
        self.machine = machine
        self.serial = machine.serials     # its DPOR key (creation order, a function of the run)
        machine.serials += 1
        self.name = name
        self.owner: VThread | None = None
        self.waiters: list[VThread] = []
        self.clock: list[int] | None = None
        self.view: dict | None = None  # c11 memory model: the view the release publishes

    def locked(self) -> bool:
        m = self.machine
        m.note_sync(mutex_key(self.serial), False)
        return self.owner is not None

    def _take(self, t: "VThread") -> None:
        m = self.machine
        self.owner = t
        if m.race is not None:
            m.race.acquire(t, self.clock)
        if m.c11 is not None:
            m.c11.acquire_view(t, self.view)
        if m.trace is not None:
            m.record(t, f"lock {self.name}")

    @types.coroutine
    def lock(self):
        yield
        m = self.machine
        t = m.current
        m.note_sync(mutex_key(self.serial), True)
        if self.owner is t:
            raise ViolationError("deadlock", f"{t.label} locks {self.name}, which it already holds")
        while self.owner is not None:
            self.waiters.append(t)
            m.block(t, f"{self.name} (held by {self.owner.label})")
            yield
            m.note_sync(mutex_key(self.serial), True)
        self._take(t)

    @types.coroutine
    def try_lock(self):
        """One step: take the mutex if it is free (`_PyMutex_TryLock`); never blocks."""
        yield
        m = self.machine
        m.note_sync(mutex_key(self.serial), True)
        if self.owner is not None:
            return False
        self._take(self.machine.current)
        return True

    @types.coroutine
    def unlock(self):
        yield
        m = self.machine
        t = m.current
        m.note_sync(mutex_key(self.serial), True)
        if self.owner is not t:
            raise ViolationError("crash", f"{t.label} unlocks {self.name}, which it does not hold")
        self.owner = None
        if m.race is not None:
            self.clock = m.race.release(t)
        if m.c11 is not None:
            self.view = m.c11.release_view(t)
        if m.trace is not None:
            m.record(t, f"unlock {self.name}")
        if self.waiters:
            m.wake(self.waiters.pop(0))

    def __aenter__(self):
        return self.lock()

    def __aexit__(self, *exc):
        return self._unlock_none()

    @types.coroutine
    def _unlock_none(self):
        yield from self.unlock()
        return None


class Event:
    """A one-shot event: `wait` blocks until some thread has called `set`."""

    __slots__ = ("machine", "name", "flag", "waiters", "clock", "view", "serial")

    def __init__(self, machine: "Machine", name: str = "event") -> None:
        self.machine = machine
        self.serial = machine.serials
        machine.serials += 1
        self.name = name
        self.flag = False
        self.waiters: list[VThread] = []
        self.clock: list[int] | None = None
        self.view: dict | None = None  # c11 memory model: the view the release publishes

    def is_set(self) -> bool:
        m = self.machine
        m.note_sync(event_key(self.serial), False)
        return self.flag

    @types.coroutine
    def set(self):
        yield
        m = self.machine
        m.note_sync(event_key(self.serial), True)
        self.flag = True
        if m.race is not None:
            clock = m.race.release(m.current)
            if self.clock is not None:
                vc_join(clock, self.clock)
            self.clock = clock
        if m.c11 is not None:
            view = m.c11.release_view(m.current)
            if self.view is not None:
                m.c11.acquire_view_into(view, self.view)
            self.view = view
        if m.trace is not None:
            m.record(m.current, f"set {self.name}")
        for w in self.waiters:
            m.wake(w)
        self.waiters.clear()

    @types.coroutine
    def wait(self):
        yield
        m = self.machine
        t = m.current
        m.note_sync(event_key(self.serial), False)
        while not self.flag:
            self.waiters.append(t)
            m.block(t, f"event {self.name}")
            yield
            m.note_sync(event_key(self.serial), False)
        if m.race is not None:
            m.race.acquire(t, self.clock)
        if m.c11 is not None:
            m.c11.acquire_view(t, self.view)
        if m.trace is not None:
            m.record(t, f"wait {self.name} done")
