"""Reclaim of an abandoned segment by a third thread while a reader holds a pointer into one of
its pages (issue 12 item 2; the goal-0 case is `abandoned-page-goal`, this is the case CPython
handles: the page was emptied by its owner and has a goal).

- `abandoned-reclaim-reader`: the owner allocates a 48-byte object `x` (with
  `_Py_SetMaybeWeakref`, so a reader may try-incref it) in a fresh page of its OBJECT heap and
  publishes it in a slot. A reader loads the pointer without a lock and then stays attached,
  with no quiescent state, until the reclaimer is done; it then try-increfs it (a header read:
  the page must still hold 48-byte blocks or nothing). The owner takes `x` out of the slot and
  drops the last reference: a local free that empties the page. Being its size class's only
  page it is kept as retired; at the owner's exit `_mi_heap_collect_abandon` collects retired
  pages (`_PyMem_mi_page_maybe_free`: the page gets a QSBR goal the reader has not reached) and
  abandons the page with its goal (`_mi_page_abandon` keeps it), and the segment with it. The
  reclaimer joins the owner and allocates a 112-byte object: no span of its own, so
  `mi_segment_try_reclaim` pops the abandoned segment and `mi_segment_reclaim` collects the page
  (`_mi_page_free_collect`), finds it all free and asks `_PyMem_mi_page_is_safe_to_free`: the
  goal is not reached, so the page is reclaimed (`_PyMem_mi_page_reclaimed` puts it on the
  reclaimer's QSBR page list) instead of being cleared; the new object's page is carved from
  the segment's free span. At the reclaimer's exit `_mi_abandoned_collect` visits the
  abandoned segments again (`mi_segment_check_free`).
  Mutation `reclaim-ignores-goal`: `_PyMem_mi_page_is_safe_to_free` returns true without
  reading the goal, the page is cleared and its slices coalesce with the free span, and the
  112-byte page starts over `x` while the reader holds it (`premature-reuse`).
"""

from __future__ import annotations

from ftlab.runtime.object import PyType
from ftlab.scenarios import Scenario
# the same published slot and hand-shake events as the goal-0 case
from ftlab.scenarios.abandoned import _setup
from ftlab.sim.atomics import SEQ_CST

ITEM = PyType("Item", basicsize=48)
OTHER = PyType("Other", basicsize=112)


async def _owner(t) -> None:
    s = t.shared
    s.owner = t
    x = await t.new_object(ITEM)
    await t.set_maybe_weakref(x)
    await t.mem.store(s.slot, x, 8, SEQ_CST)      # the slot holds the owner's reference
    await s.published.set()
    await t.wait(s.loaded)
    x = await t.mem.exchange(s.slot, 0, 8, SEQ_CST)
    await t.decref(x)                             # a local free: the page is all free
    # exits: the retired page gets a goal and is abandoned with it


async def _reader(t) -> None:
    s = t.shared
    await t.wait(s.published)
    x = await t.mem.load(s.slot, 8, SEQ_CST)      # loads the pointer without a lock ...
    await s.loaded.set()
    await s.done.wait()                           # ... and stays attached, no quiescent state
    if await t.try_incref(x):                     # _Py_TryIncref on a freed object: must fail
        await t.decref(x)


async def _reclaimer(t) -> None:
    s = t.shared
    await t.wait(s.loaded)
    await t.join(s.owner)                         # the owner's segment is abandoned
    y = await t.new_object(OTHER)                 # no span of its own: reclaims the segment
    await s.done.set()
    await t.decref(y)
    await t.periodic_check()


SCENARIOS = [
    Scenario(
        name="abandoned-reclaim-reader",
        description="a third thread reclaims an abandoned segment whose emptied page still "
                    "waits for its QSBR goal while a reader holds a pointer into it",
        threads=(("owner", _owner), ("reader", _reader), ("reclaimer", _reclaimer)),
        setup=_setup,
        mutations={"reclaim-ignores-goal": ("premature-reuse", "use-after-free",
                                             "resurrection")},
        pct_steps=60,
        dfs_bound=1,
    ),
]
