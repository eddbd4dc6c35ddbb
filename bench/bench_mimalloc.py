"""Issue 3: simulated malloc+free pairs per second of the mimalloc model, single thread, sizes
16-1024, against a minimal Python free-list allocator over the same simulated address space.

Both run the same program inside a machine thread: a ring of 64 live blocks; each pair frees
the oldest block and allocates one of a size drawn (once, up front) uniformly from 16..1024.
The baseline keeps one free list per 16-byte size class, with the links in the freed blocks'
first words (as the model does) and bump allocation from committed 64 KiB pages; its `malloc`
and `free` are coroutines awaited the same way, so the figure compares the allocators, not the
call protocol. The model runs with oracles off (the goal: within 3x), with the heap oracles,
and with the heap oracles and the race detector (checked mode as the explorer runs it).
"""

from __future__ import annotations

import random

from common import Figure, paired_rates

from ftlab.check import heap as heap_check
from ftlab.config import Config
from ftlab.runtime.pystate import Runtime
from ftlab.sim import Machine, RoundRobin
from ftlab.sim.memory import Tag

RING = 64
PAIRS = 20_000
SIZES = [random.Random(3).randint(16, 1024) for _ in range(4096)]


def _model(config: Config, oracles: bool):
    def go() -> int:
        rt = Runtime(config)
        if oracles:
            heap_check.install(rt)

        async def main(t):
            malloc, free = t.malloc, t.free
            ring = [await malloc(16) for _ in range(RING)]
            sizes = SIZES
            n = len(sizes)
            for i in range(PAIRS):
                j = i % RING
                await free(ring[j])
                ring[j] = await malloc(sizes[i % n])
            for p in ring:
                await free(p)

        rt.run_main(main)
        return PAIRS
    return go


class FreeListAllocator:
    """The baseline: per-class free lists in simulated memory, bump allocation."""

    PAGE = 1 << 16

    def __init__(self, mem) -> None:
        self.mem = mem
        self.heads = [0] * 65
        self.region = mem.reserve(1 << 28)
        self.next = self.region
        self.page_class: dict[int, int] = {}
        self.bump = [0] * 65
        self.limit = [0] * 65

    async def malloc(self, size: int) -> int:
        c = (size + 15) >> 4
        p = self.heads[c]
        if p:
            self.heads[c] = self.mem.load_u64(p)
            return p
        return self._bump(c)

    def _bump(self, c: int) -> int:
        p = self.bump[c]
        if p + 16 * c > self.limit[c]:
            p = self.next
            self.next += self.PAGE
            self.mem.commit(p, self.PAGE)
            self.page_class[p >> 16] = c
            self.limit[c] = p + self.PAGE
        self.bump[c] = p + 16 * c
        return p

    async def free(self, p: int) -> None:
        c = self.page_class[p >> 16]
        self.mem.store_u64(p, self.heads[c], Tag.FREE_LINK)
        self.heads[c] = p


def _baseline() -> int:
    m = Machine(max_steps=10**9)
    alloc = FreeListAllocator(m.mem)

    async def main(t):
        malloc, free = alloc.malloc, alloc.free
        ring = [await malloc(16) for _ in range(RING)]
        sizes = SIZES
        n = len(sizes)
        for i in range(PAIRS):
            j = i % RING
            await free(ring[j])
            ring[j] = await malloc(sizes[i % n])

    m.spawn(main)
    m.run(RoundRobin().execution(0))
    return PAIRS


def run(quick: bool = False) -> list[Figure]:
    seconds = 3.0 if quick else 12.0
    variants = [
        ("oracles off", Config(checked=False, race_detection=False, max_steps=10**9), False,
         "<= 3x"),
        ("heap oracles on", Config(checked=True, race_detection=False, max_steps=10**9), True, ""),
        ("heap oracles + race detector", Config(checked=True, max_steps=10**9), True, ""),
    ]
    figures = []
    for name, config, oracles, goal in variants:
        m, b = paired_rates(_model(config, oracles), _baseline, seconds)
        figures.append(Figure(
            name=f"mimalloc: malloc+free pairs, {name}", value=m, baseline=b,
            baseline_name="python free-list allocator", unit="pairs/s", goal=goal))
    return figures


if __name__ == "__main__":
    for f in run(quick=False):
        print(f.row())
