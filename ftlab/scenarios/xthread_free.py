"""Cross-thread frees racing the owner's collection (issue 12 item 2): mimalloc's
`xthread_free` list, small enough that a wrong atomic on it shows within tens of schedules.

- `xthread-free`: the owner makes a heap of its own (`mi_heap_new`), allocates four 32-byte
  blocks from one page and publishes them in four slots. Two freers each take two slots with an
  atomic exchange and free the blocks: each free is a cross-thread free, a CAS push on the
  page's `xthread_free` (`_mi_free_block_mt`). Meanwhile the owner collects its heap twice
  (`mi_heap_collect(heap, false)`: `_mi_page_free_collect` takes the list with an atomic
  exchange, `_mi_page_thread_free_collect`, and moves it to `local_free`), then waits for both
  freers, collects with force and deletes the heap (`mi_heap_delete`: its pages go to the
  backing heap, `mi_heap_absorb` then `mi_heap_reset_pages`, since one more block of the page
  is still in use; the owner frees it last). Checked at the end: no block is in use (a push lost or a block collected
  twice shows as a used count that is too high, or as heap-integrity).
  Mutations: `mi-thread-free-collect-store` (the owner's exchange is a load and a store: a push
  between them is lost), `mi-free-mt-plain-store` (the push is a plain store: a concurrent push,
  or the owner's collect, is overwritten).
"""

from __future__ import annotations

from dataclasses import dataclass

from ftlab.runtime.mimalloc.stats import snapshot
from ftlab.scenarios import Scenario
from ftlab.sim.atomics import ACQ_REL, SEQ_CST
from ftlab.sim.memory import Tag
from ftlab.sim.sync import Event
from ftlab.sim.violation import ViolationError

BLOCKS = 4
SIZE = 32


@dataclass
class _Shared:
    slots: int
    published: Event
    freed: list[Event]


def _setup(rt) -> None:
    m = rt.machine
    rt.shared = _Shared(slots=rt.raw_calloc(8 * BLOCKS), published=Event(m, "published"),
                        freed=[Event(m, "freed0"), Event(m, "freed1")])


async def _owner(t) -> None:
    s = t.shared
    heap = await t.heap_new()
    keep = await heap.malloc(SIZE)     # still in use at the delete: its page is absorbed
    for i in range(BLOCKS):
        p = await heap.malloc(SIZE)
        await t.mem.store(s.slots + 8 * i, p, 8, SEQ_CST)
    await s.published.set()
    await heap.collect(False)          # races the freers' pushes
    await heap.collect(False)
    for ev in s.freed:
        await t.wait(ev)
    await heap.collect(True)
    await heap.delete()                # `keep`'s page goes to the backing heap (mi_heap_absorb)
    await t.free(keep)


def _freer(k: int):
    async def freer(t) -> None:
        s = t.shared
        await t.wait(s.published)
        for i in (k, k + 2):
            p = await t.mem.exchange(s.slots + 8 * i, 0, order=ACQ_REL, tag=Tag.PAYLOAD)
            await t.free(p)            # a cross-thread free: a push on xthread_free
        await s.freed[k].set()
    freer.__name__ = f"freer{k}"
    return freer


def _check(rt) -> None:
    st = snapshot(rt.mimalloc)
    if st.blocks_live:
        raise ViolationError("check", f"{st.blocks_live} blocks still in use after every block "
                                      f"was freed by another thread and the owner collected "
                                      f"({st.pages} pages)")


# what a lost or doubled push shows as: a used count too high at the end (the check, or the
# block-count ghost's leak), a block on two lists, or a heap teardown that waits forever for a
# delayed-freeing state a lost push left behind
_LOST = ("check", "leak", "heap-integrity", "double-free", "deadlock")

SCENARIOS = [
    Scenario(
        name="xthread-free",
        description="two threads free an owner's blocks (xthread_free pushes) while the owner "
                    "collects its heap",
        threads=(("owner", _owner), ("freer0", _freer(0)), ("freer1", _freer(1))),
        setup=_setup,
        check=_check,
        mutations={"mi-thread-free-collect-store": _LOST,
                   "mi-free-mt-plain-store": _LOST},
        pct_steps=120,
    ),
]
