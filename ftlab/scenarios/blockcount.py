"""Scenarios of block counting for leak hunts (`sys.getallocatedblocks()`,
`get_num_global_allocated_blocks` in `ftlab.runtime.obmalloc`, gh-115184).

- `blockcount`: thread b allocates two PyMem blocks and exits, so its MEM segment goes to the
  interpreter's abandoned pool with two live blocks. Thread c frees one of them (a
  cross-thread free into an abandoned page: the block waits on the page's `xthread_free`),
  then allocates and frees object blocks from a page it made before b ran (so it never needs
  a fresh page, which would reclaim b's segment), with periodic checks between, while thread
  a counts the allocated blocks; c holds a PyMem block throughout (a count that skipped the
  live threads' MEM heaps would miss it). The count must
  equal the live blocks at that moment (`block-count`); a then frees b's other two blocks.
  `blockcount-skips-abandoned`: b's live block is missing; `blockcount-no-collect`: the
  block c freed is counted; `blockcount-no-stw`: c allocates or frees between a's walk of
  c's heaps and the end of the count. c also drops an object a handed it (its shared field is
  0, so the reference goes to a's BRC queue, merged at a's next periodic check, after the
  count): the total refcount must count the queue's reference (`ref-total`);
  `reftotal-untracked-brc` leaves it one short.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ftlab.runtime.object import PyType
from ftlab.scenarios import Scenario
from ftlab.sim.sync import Event

BLOCKS = 2              # b's blocks, left live in its abandoned segment
THING = PyType("Thing", basicsize=32)
C_ALLOCS = 1            # more object blocks of c, allocated while a may be counting


@dataclass
class _Shared:
    c_ready: Event
    b_gone: Event
    freed: Event
    blocks: list[int] = field(default_factory=list)
    X: int = 0
    count: int = -1


def _setup(rt) -> None:
    rt.shared = _Shared(rt.event("c ready"), rt.event("b gone"), rt.event("c freed b's block"))


async def _b(t) -> None:
    s = t.shared
    for _ in range(BLOCKS):
        s.blocks.append(await t.malloc(32))


async def _c(t) -> None:
    s = t.shared
    # Pages for c's blocks first: later ones come from them, so c never needs a fresh page,
    # which would make it reclaim b's abandoned segment.
    mine = [await t.object_malloc(32)]
    pymem = await t.malloc(32)          # live in c's MEM heap while a counts
    await s.c_ready.set()
    await t.wait(s.b_gone)
    await t.free(s.blocks[0])           # into b's abandoned page: its xthread_free
    await t.decref(s.X)                 # a's object, shared field 0: queued to a's BRC queue
    await s.freed.set()
    for _ in range(C_ALLOCS):
        mine.append(await t.object_malloc(32))
        await t.periodic_check()
    for p in mine:
        await t.object_free(p)
        await t.periodic_check()
    await t.free(pymem)


async def _a(t) -> None:
    s = t.shared
    # Before b runs (a fresh page later would reclaim b's segment); a's reference goes to c.
    s.X = await t.new_object(THING)
    await t.wait(s.c_ready)
    b = await t.spawn(_b, name="b")
    await t.join(b)                     # b's segment is abandoned with its two blocks
    await s.b_gone.set()
    await t.wait(s.freed)
    s.count = await t.get_allocated_blocks()
    await t.periodic_check()            # merges X (queued by c) and frees it
    for p in s.blocks[1:]:
        await t.free(p)


BLOCKCOUNT = Scenario(
    name="blockcount",
    description="sys.getallocatedblocks() with a dead thread's blocks in the abandoned pool, "
                "one of them freed cross-thread, while another thread allocates",
    threads=(("a", _a), ("c", _c)),
    setup=_setup,
    mutations={"blockcount-skips-abandoned": ("block-count",),
               "blockcount-no-collect": ("block-count",),
               "blockcount-no-stw": ("block-count", "data-race", "heap-integrity"),
               "reftotal-untracked-brc": ("ref-total",)},
    pct_steps=60,
)

SCENARIOS = (BLOCKCOUNT,)
