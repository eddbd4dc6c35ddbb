"""Engine scenarios: the scheduler and the race detector on their own, with no runtime model.

- `lost-update`: two threads increment one counter. Fixed with `fetch_add`; the mutation
  `unsync-rmw` splits it into a load and a store, so one increment can be lost.
- `lock-order`: two threads take two mutexes. Fixed with one global order; the mutation
  `lock-order-inversion` reverses it in the second thread, a classic deadlock.
- `message-passing`: a producer writes a payload with plain stores and raises a flag; a
  consumer reads the payload once it sees the flag. Fixed with release/acquire on the flag;
  the mutation `relaxed-message` makes both relaxed, so the payload accesses race.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftlab.scenarios import Scenario
from ftlab.sim.atomics import ACQUIRE, RELAXED, RELEASE
from ftlab.sim.memory import Tag
from ftlab.sim.violation import ViolationError


def _scratch(rt, size: int = 4096) -> int:
    base = rt.mem.reserve(1 << 16)
    rt.mem.commit(base, size)
    return base


# ---------------------------------------------------------------------------------------------
# lost-update

@dataclass
class _Counter:
    addr: int
    increments: int


def _lost_update_setup(rt) -> None:
    rt.shared = _Counter(_scratch(rt), increments=2)


async def _incrementer(t) -> None:
    s = t.shared
    for _ in range(s.increments):
        if t.rt.mutated("unsync-rmw"):
            v = await t.mem.load(s.addr)
            await t.mem.store(s.addr, v + 1)
        else:
            await t.mem.fetch_add(s.addr, 1)


def _lost_update_check(rt) -> None:
    s = rt.shared
    got = rt.mem.load_u64(s.addr)
    want = 2 * s.increments
    if got != want:
        raise ViolationError("check", f"lost update: the counter is {got} after {want} increments")


LOST_UPDATE = Scenario(
    name="lost-update",
    description="two threads increment one counter; an unsynchronised read-modify-write loses one",
    threads=(("inc0", _incrementer), ("inc1", _incrementer)),
    setup=_lost_update_setup,
    check=_lost_update_check,
    mutations={"unsync-rmw": ("check",)},
    dfs_bound=None,
    dpor=True,
    pct_steps=8,
    interpreter=False,
)


# ---------------------------------------------------------------------------------------------
# lock-order

def _lock_order_setup(rt) -> None:
    rt.shared = (rt.mutex("A"), rt.mutex("B"))


async def _locker(t, reverse: bool) -> None:
    a, b = t.shared
    first, second = (b, a) if reverse and t.rt.mutated("lock-order-inversion") else (a, b)
    await first.lock()
    await second.lock()
    await second.unlock()
    await first.unlock()


async def _locker_ab(t) -> None:
    await _locker(t, reverse=False)


async def _locker_ba(t) -> None:
    await _locker(t, reverse=True)


LOCK_ORDER = Scenario(
    name="lock-order",
    description="two threads take two mutexes; taking them in opposite orders deadlocks",
    threads=(("ab", _locker_ab), ("ba", _locker_ba)),
    setup=_lock_order_setup,
    mutations={"lock-order-inversion": ("deadlock",)},
    dfs_bound=None,
    dpor=True,
    pct_steps=8,
    interpreter=False,
)


# ---------------------------------------------------------------------------------------------
# message-passing

@dataclass
class _Mailbox:
    payload: int
    flag: int
    attempts: int


def _message_setup(rt) -> None:
    base = _scratch(rt)
    rt.shared = _Mailbox(payload=base, flag=base + 64, attempts=3)


async def _producer(t) -> None:
    s = t.shared
    t.mem.store_u64(s.payload, 42, Tag.PAYLOAD)
    t.mem.store_u64(s.payload + 8, 43, Tag.PAYLOAD)
    order = RELAXED if t.rt.mutated("relaxed-message") else RELEASE
    await t.mem.store(s.flag, 1, order=order)


async def _consumer(t) -> None:
    s = t.shared
    order = RELAXED if t.rt.mutated("relaxed-message") else ACQUIRE
    for _ in range(s.attempts):
        if await t.mem.load(s.flag, order=order):
            a = t.mem.load_u64(s.payload)
            b = t.mem.load_u64(s.payload + 8)
            if (a, b) != (42, 43):
                raise ViolationError("check", f"consumer saw the flag but payload ({a}, {b})")
            return


MESSAGE_PASSING = Scenario(
    name="message-passing",
    description="a payload published through a flag; relaxed atomics on the flag make it a data race",
    threads=(("producer", _producer), ("consumer", _consumer)),
    setup=_message_setup,
    mutations={"relaxed-message": ("data-race",)},
    dfs_bound=None,
    dpor=True,
    pct_steps=6,
    interpreter=False,
)


SCENARIOS = (LOST_UPDATE, LOCK_ORDER, MESSAGE_PASSING)
