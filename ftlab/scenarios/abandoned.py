"""Abandoned pages emptied by cross-thread frees (issue 12 item 4,
docs/findings/abandoned-page-goal.md).

- `abandoned-page-goal`: the owner allocates a 48-byte object (with `_Py_SetMaybeWeakref`, so
  a reader may try-incref it) in a fresh page of its OBJECT heap, publishes it in a slot and
  exits while the object is live: its segment is abandoned with the page in use and the page
  has no QSBR goal. A reader loads the pointer without a lock and stays attached, without a
  quiescent state, until the end (it may still try-incref it). A writer joins the owner, takes
  the slot and drops the last reference: a cross-thread free into the abandoned page (no QSBR
  hook runs on that path). Its next allocation of another size class finds no free span of its
  own and reclaims the abandoned segment: `mi_segment_check_free`/`mi_segment_reclaim` collect
  the page, find it all free with goal 0, ask `_PyMem_mi_page_is_safe_to_free`, which says yes,
  and clear it, so its memory starts a page of 112-byte blocks while the reader holds the old
  pointer. The faithful model shows the gap CPython 3.13/3.14/main have: the row's expectation
  is `known_gap=("premature-reuse",)`.
- `abandoned-page-goal-fixed`: the same program under the proposed fix
  (`Config.abandoned_page_goal`): the reclaim gives such a page a goal and keeps it (on the
  reclaiming thread's QSBR page list) until every reader has passed a quiescent state; clean.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftlab.runtime.object import PyType
from ftlab.scenarios import Scenario
from ftlab.sim.atomics import SEQ_CST
from ftlab.sim.sync import Event

ITEM = PyType("Item", basicsize=48)
OTHER = PyType("Other", basicsize=112)


@dataclass
class _Shared:
    slot: int           # the published object (the owner's reference), 0 once taken
    published: Event    # the owner has stored the object in the slot
    loaded: Event       # the reader has loaded the pointer
    done: Event         # the writer has allocated after the reclaim
    owner: object = None


def _setup(rt) -> None:
    m = rt.machine
    rt.shared = _Shared(slot=rt.raw_calloc(8), published=Event(m, "published"),
                        loaded=Event(m, "loaded"), done=Event(m, "done"))


async def _owner(t) -> None:
    s = t.shared
    s.owner = t
    x = await t.new_object(ITEM)
    await t.set_maybe_weakref(x)
    await t.mem.store(s.slot, x, 8, SEQ_CST)      # the slot holds the owner's reference
    await s.published.set()
    await t.wait(s.loaded)                        # then exits: the page is abandoned in use


async def _reader(t) -> None:
    s = t.shared
    await t.wait(s.published)
    await t.mem.load(s.slot, 8, SEQ_CST)          # loads the pointer without a lock ...
    await s.loaded.set()
    await s.done.wait()                           # ... and is preempted before its try-incref
    # (attached all along: no quiescent state while it may hold the pointer)


async def _writer(t) -> None:
    s = t.shared
    await t.wait(s.loaded)
    await t.join(s.owner)                         # the owner has exited: its segment abandoned
    x = await t.mem.exchange(s.slot, 0, 8, SEQ_CST)
    await t.decref(x)                             # the last reference: a cross-thread free
    y = await t.new_object(OTHER)                 # a fresh page: reclaims the segment
    await s.done.set()
    await t.decref(y)


_THREADS = (("owner", _owner), ("reader", _reader), ("writer", _writer))

SCENARIOS = [
    Scenario(
        name="abandoned-page-goal",
        description="a page abandoned in use, emptied by a cross-thread free, reclaimed with "
                    "goal 0 while a reader holds a pointer into it (known gap in CPython)",
        threads=_THREADS,
        setup=_setup,
        known_gap=("premature-reuse",),
        pct_steps=60,
        dfs_bound=1,            # DFS(1) is exhausted in 3,903 schedules; DFS(2) is not in 20,000
    ),
    Scenario(
        name="abandoned-page-goal-fixed",
        description="abandoned-page-goal under the proposed fix: the reclaim gives the page a "
                    "QSBR goal",
        threads=_THREADS,
        setup=_setup,
        config={"abandoned_page_goal": True},
        pct_steps=60,
        dfs_bound=1,            # DFS(1) is exhausted in 3,903 schedules; DFS(2) is not in 20,000
    ),
]
