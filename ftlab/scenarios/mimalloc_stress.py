"""mimalloc under stress, in the style of mimalloc's `test/test-stress.c`.

- `mimalloc-stress`: two workers allocate blocks of mixed sizes (small, medium, large) from
  their MEM, OBJECT and GC heaps, keep a few, free some of their own (local frees), and hand
  blocks to each other through a shared array of transfer slots with atomic exchanges; what
  comes out of a slot is a foreign block, freed by the receiver (cross-thread frees: the
  `xthread_free` and `thread_delayed_free` paths). Each worker exits after its rounds and is
  replaced by a successor (two generations), so threads abandon their segments while blocks in
  them are still live or in flight, and the successors reclaim them (by tag: a GC page must go
  to a GC heap) or free into them. The last generation drains the slots.

  Every block carries a payload word that encodes its address and heap tag; the receiver checks
  it before freeing (a block handed out twice, or overwritten while live, would show) and checks
  that the block's page still has the tag it was allocated with. At the end, the slots are
  empty and the allocator holds no block in use (`stats.snapshot`, after the last collect).
  The heap oracles (`heap-integrity`, `double-free`, `invalid-free`) and the race detector run
  throughout.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ftlab.runtime.mimalloc import block_info
from ftlab.runtime.mimalloc.stats import snapshot
from ftlab.runtime.mimalloc.types import HeapTag
from ftlab.scenarios import Scenario
from ftlab.sim.atomics import ACQ_REL
from ftlab.sim.memory import Tag
from ftlab.sim.violation import ViolationError

MAGIC = 0x5EED_F00D_0000_0000
TRANSFERS = 6
ROUNDS = 10
KEEP = 3
GENERATIONS = 2
# request sizes: mostly small, some medium, a rare large block (a page of its own)
SIZES = (16, 24, 40, 64, 100, 128, 256, 500, 1000, 3000, 20000, 150000)
WEIGHTS = (10, 8, 8, 8, 6, 6, 5, 4, 4, 3, 2, 1)
TAGS = (HeapTag.MEM, HeapTag.OBJECT, HeapTag.GC)


@dataclass
class _Stress:
    slots: int          # address of TRANSFERS pointer words


def _setup(rt) -> None:
    base = rt.mem.reserve(1 << 16)
    rt.mem.commit(base, 4096)
    rt.shared = _Stress(slots=base)


async def _alloc(t, rng: random.Random) -> int:
    size = rng.choices(SIZES, WEIGHTS)[0]
    tag = rng.choice(TAGS)
    p = await t.mimalloc.heaps[tag].malloc(size)
    t.mem.store_u64(p + 8, (p ^ MAGIC) | tag, Tag.PAYLOAD)
    return p


async def _free_checked(t, p: int) -> None:
    """Check the block's payload and page tag, then free it."""
    word = t.mem.load_u64(p + 8)
    tag = word & 3
    if word & ~3 != (p ^ MAGIC) & ~3:
        raise ViolationError("check", f"block {p:#x} was overwritten while live "
                                      f"(payload {word:#x})")
    page_tag = block_info(t.rt, p).tag
    if page_tag != tag:
        raise ViolationError("check", f"block {p:#x} allocated from heap tag {tag} is now in "
                                      f"a page of tag {page_tag}")
    await t.free(p)


async def _worker(t, generation: int = 0) -> None:
    s = t.shared
    rng = random.Random(f"mimalloc-stress/{t.name}")
    mine: list[int] = []
    for _ in range(ROUNDS):
        p = await _alloc(t, rng)
        if rng.random() < 0.5:
            mine.append(p)
            if len(mine) > KEEP:
                await _free_checked(t, mine.pop(rng.randrange(len(mine))))   # a local free
        else:
            slot = s.slots + 8 * rng.randrange(TRANSFERS)
            q = await t.mem.exchange(slot, p, order=ACQ_REL, tag=Tag.PAYLOAD)
            if q:
                await _free_checked(t, q)    # a foreign block (or one of ours, come back)
    # hand what we kept to the others, through the slots
    for p in mine:
        slot = s.slots + 8 * rng.randrange(TRANSFERS)
        q = await t.mem.exchange(slot, p, order=ACQ_REL, tag=Tag.PAYLOAD)
        if q:
            await _free_checked(t, q)
    if generation + 1 < GENERATIONS:
        await t.spawn(_worker, generation + 1, name=f"{t.name}'")
    else:
        for i in range(TRANSFERS):
            q = await t.mem.exchange(s.slots + 8 * i, 0, order=ACQ_REL, tag=Tag.PAYLOAD)
            if q:
                await _free_checked(t, q)


def _check(rt) -> None:
    s = rt.shared
    left = [rt.mem.raw_load(s.slots + 8 * i, 8) for i in range(TRANSFERS)]
    if any(left):
        raise ViolationError("check", f"transfer slots not drained: {[hex(x) for x in left]}")
    st = snapshot(rt.mimalloc)
    if st.blocks_live:
        raise ViolationError("check", f"{st.blocks_live} blocks still in use after every "
                                      f"block was freed ({st.pages} pages, "
                                      f"{st.segments_abandoned} abandoned segments)")


MIMALLOC_STRESS = Scenario(
    name="mimalloc-stress",
    description="two generations of two threads allocate, swap blocks through atomic slots and "
                "free foreign blocks, then exit and are replaced (mimalloc's test-stress)",
    threads=(("w0", _worker), ("w1", _worker)),
    setup=_setup,
    check=_check,
    dfs=False,   # hundreds of decisions per run: far beyond exhaustive search
    pct_steps=400,
)

SCENARIOS = (MIMALLOC_STRESS,)
