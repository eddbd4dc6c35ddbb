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

`qsbr-page-reuse`: a writer fills a page of a medium class and starts a second one, frees one
block of the first (so the second is not the only page of its queue and is not kept by
`retire_expire`), publishes an item from the second page in a slot a lock-free reader reads,
replaces it and drops it: the page empties and waits on the writer's list. The writer then
allocates a second item of that class and drops it too, then allocates another size class.
The second allocation reuses the listed page through `_mi_page_free_collect` (which clears its
QSBR state) or finds it freed by `_PyMem_mi_heap_collect_qsbr`. Mutation `no-page-delay`: the
page is freed while the reader may hold the item. A listed page allocated from again is
`qsbr-page-small-reuse`'s.

`qsbr-page-small-reuse`: as `qsbr-page-reuse` with 1 KiB items (the largest class with a
direct page pointer, 64 to a small page; the page is filled with bare blocks): the writer's
second item is taken from the listed page through `heap->pages_free_direct`
(`_mi_page_malloc`), which neither collects nor clears the goal, so the page stays listed with
a block in use; the writer then allocates a class with no page, and the fresh-page path walks
its list (`_PyMem_mi_heap_collect_qsbr`), which must drop the reused page (the `page-list`
oracle checks the walk's result). Mutation `no-page-delay`: the emptied page is freed at once
and the filler's page is carved over the reader's item.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ftlab.runtime.mimalloc.types import HeapTag
from ftlab.runtime.object import PyType, object_free, object_malloc
from ftlab.scenarios import Scenario
from ftlab.sim.atomics import SEQ_CST
from ftlab.sim.sync import Event
from ftlab.scenarios.refcount import FILLER

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
    dpor=True,      # every trace in 140 executions: verified by the default explore
)


# ---------------------------------------------------------------------------------------------
# qsbr-page-reuse (pages area)

REUSE_ITEM = PyType("ReuseItem", basicsize=BLOCK)   # a medium class: four per page


async def _reuse_reader(t) -> None:
    from ftlab.scenarios.refcount import _use
    s = t.shared
    for _ in range(3):
        o = await t.xget_ref(s.addr)
        if o:
            _use(t, o)
            await t.decref(o)
        await t.periodic_check()


async def _reuse_writer(t) -> None:
    from ftlab.scenarios.refcount import _new_item, _replace
    s = t.shared
    # fill a page and start a second one, then free one block of the first: two pages in the
    # class's queue, so an emptied page is not kept as the queue's only page (`retire_expire`)
    keep = [await t.new_object(REUSE_ITEM) for _ in range(PER_PAGE)]
    s.old = await _new_item(t, REUSE_ITEM, 1)
    await t.decref(keep.pop())
    await t.mem.store(s.addr, s.old, 8, SEQ_CST)
    reader = await t.spawn(_reuse_reader, name="reader")
    await t.decref(await _replace(t, s, 0))     # the page empties: it waits on our list
    await t.periodic_check()
    # a second item of the class reuses the listed page
    s.new = await _new_item(t, REUSE_ITEM, 2)
    await _replace(t, s, s.new)                 # the slot was empty: nothing to drop
    await t.decref(await _replace(t, s, 0))
    await t.periodic_check()
    filler = await t.new_object(FILLER)
    await t.decref(filler)
    await t.join(reader)
    for o in keep:
        await t.decref(o)


def _reuse_setup(rt) -> None:
    from ftlab.scenarios.refcount import _slot_setup
    _slot_setup(REUSE_ITEM, REUSE_ITEM)(rt)


QSBR_PAGE_REUSE = Scenario(
    name="qsbr-page-reuse",
    description="a page waiting on a QSBR list is allocated from again and emptied again "
                "while a lock-free reader may hold its last item",
    threads=(("writer", _reuse_writer),),
    setup=_reuse_setup,
    mutations={"no-page-delay": ("premature-reuse", "use-after-free", "resurrection")},
    config={"version": "main"},
    versions=("main",),
    pct_steps=60,
)


# ---------------------------------------------------------------------------------------------
# qsbr-page-small-reuse (issue 9 item 5): a listed page allocated from again, met by the walk

SMALL_ITEM = PyType("SmallItem", basicsize=1024)    # the largest class with a direct page
SMALL_PER_PAGE = (64 << 10) // 1024                 # a 64 KiB small page


async def _small_reuse_writer(t) -> None:
    from ftlab.scenarios.refcount import _new_item, _replace
    s = t.shared
    # fill a page and start a second one, then free one block of the first (which leaves the
    # full queue): two pages in the class's queue, so the second, once empty, is not kept as
    # the queue's only page (`retire_expire`) but waits for a goal on our list
    # (bare blocks of the OBJECT heap, where the items go: cheaper than objects)
    keep = [await object_malloc(t, SMALL_ITEM.basicsize, HeapTag.OBJECT)
            for _ in range(SMALL_PER_PAGE)]
    s.old = await _new_item(t, SMALL_ITEM, 1)
    await object_free(t, keep.pop())
    await t.mem.store(s.addr, s.old, 8, SEQ_CST)
    reader = await t.spawn(_reuse_reader, name="reader")
    await t.decref(await _replace(t, s, 0))     # the page empties: it waits on our list
    # the next item of the class comes from the listed page through the heap's direct page
    # pointer (`_mi_page_malloc`): no collect, so the page stays listed with its goal
    s.new = await _new_item(t, SMALL_ITEM, 2)
    # a class with no page yet: a fresh page is needed, so `_PyMem_mi_heap_collect_qsbr` walks
    # our list and meets the listed page with a block in use (it drops it from the list)
    filler = await t.new_object(FILLER)
    await _replace(t, s, s.new)                 # the slot was empty: nothing to drop
    await t.decref(await _replace(t, s, 0))
    await t.periodic_check()
    await t.decref(filler)
    await t.join(reader)
    for p in keep:
        await object_free(t, p)


def _small_reuse_setup(rt) -> None:
    from ftlab.scenarios.refcount import _slot_setup
    _slot_setup(SMALL_ITEM, SMALL_ITEM)(rt)


QSBR_PAGE_SMALL_REUSE = Scenario(
    name="qsbr-page-small-reuse",
    description="a small page waiting on a QSBR list is allocated from again through the "
                "heap's direct page pointer and met by the list walk with a block in use, "
                "while a lock-free reader may hold its first item",
    threads=(("writer", _small_reuse_writer),),
    setup=_small_reuse_setup,
    mutations={"no-page-delay": ("premature-reuse", "use-after-free", "resurrection")},
    config={"version": "main"},
    versions=("main",),
    pct_steps=60,
)


SCENARIOS = (QSBR_PAGE_FOREIGN, QSBR_PAGE_REUSE, QSBR_PAGE_SMALL_REUSE)
