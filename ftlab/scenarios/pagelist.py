"""QSBR page lists under CPython main (gh-145615): a page another thread empties with the world
stopped.

`qsbr-page-foreign`: thread b fills a page of its GC heap (four 100 KiB blocks: a medium page
holds four) and allocates once more, so the filled page moves to the full queue and its
cross-thread frees go through b's heap's delayed-free list. Thread a frees the four blocks
(the first is pushed on b's `thread_delayed_free`, the others on the page's `xthread_free`)
while b waits, then collects: with the world stopped, `gc_visit_heaps` visits b's GC heap,
which first processes its delayed frees (`_mi_heap_delayed_free_partial`); the delayed block
is the last one in use, so b's page empties on thread a and is retired through
`_PyMem_mi_page_maybe_free` from the full queue. CPython main puts it on b's list (its
owner's) and moves it out of the full queue; before gh-145615 it went on a's list
(`qsbr-page-list-current-thread`) and stayed in the full queue (`qsbr-page-stranded`). b then
allocates again and exits; a joins. The scenario runs the "main" version policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ftlab.runtime.mimalloc.types import HeapTag
from ftlab.runtime.object import object_free, object_malloc
from ftlab.scenarios import Scenario
from ftlab.sim.sync import Event

BLOCK = 100 << 10               # a medium block: four per 512 KiB medium page
PER_PAGE = 4


@dataclass
class _Shared:
    ready: Event
    done: Event
    blocks: list[int] = field(default_factory=list)


def _setup(rt) -> None:
    rt.shared = _Shared(rt.event("b filled its page"), rt.event("a collected"))


async def _foreign_b(t) -> None:
    s = t.shared
    for _ in range(PER_PAGE):
        s.blocks.append(await object_malloc(t, BLOCK, HeapTag.GC))
    # the next allocation finds the first page full and moves it to the full queue
    extra = await object_malloc(t, BLOCK, HeapTag.GC)
    await object_free(t, extra)
    await s.ready.set()
    await t.wait(s.done)
    again = await object_malloc(t, BLOCK, HeapTag.GC)
    await object_free(t, again)


async def _foreign_a(t) -> None:
    s = t.shared
    b = await t.spawn(_foreign_b, name="b")
    await t.wait(s.ready)
    for p in s.blocks:                  # cross-thread frees into b's full page
        await object_free(t, p)
    await t.gc_collect()                # world stopped: b's delayed frees processed by a
    await s.done.set()
    await t.join(b)


QSBR_PAGE_FOREIGN = Scenario(
    name="qsbr-page-foreign",
    description="a collection with the world stopped empties another thread's full page "
                "(its delayed frees): the page waits for QSBR on its owner's list, out of "
                "the full queue (CPython main, gh-145615)",
    threads=(("a", _foreign_a),),
    setup=_setup,
    mutations={"qsbr-page-list-current-thread": ("page-list",),
               "qsbr-page-stranded": ("page-list",)},
    config={"version": "main"},
    versions=("main",),
    pct_steps=40,
)


SCENARIOS = (QSBR_PAGE_FOREIGN,)
