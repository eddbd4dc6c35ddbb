"""The `block-count` and `ref-total` oracles: the two counters of a regrtest `-R` leak hunt,
`sys.getallocatedblocks()` and `sys.gettotalrefcount()`, are exact (DESIGN §5.7, gh-115184).

When `get_num_global_allocated_blocks` returns its count (the `blocks_counted` event, sent
with the world still stopped), the count must equal the blocks the heap oracle's ghost holds
live at that moment: every block mimalloc handed out and nobody has started to free. Blocks
waiting in a delayed-free queue or on a QSBR page list are live in both. A count taken
without stopping the world (other threads allocate and free while their pages are walked),
without the abandoned pool (a dead thread's blocks missing) or from `used` before the
cross-thread frees are collected (freed blocks counted) differs from the ghost.

`ref-total`: at the same moment (the world stopped: every other thread is between two
operations), the total refcount (`rt.objects.reftotal` plus every linked thread's `reftotal`,
what `sys.gettotalrefcount()` sums) must equal the refcount oracle's ghost total, the strong
references held to non-immortal live objects, a BRC queue's reference included. Without
gh-115184's fix 3 (`reftotal-untracked-brc`) the total is one short for each queued object.

The ghosts are `ftlab.check.heap.HeapChecker.live` and the `RefcountOracle`'s objects; these
oracles add no state of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ftlab.check.heap import HeapChecker
from ftlab.check.refcount import LIVE, RefcountOracle
from ftlab.runtime.observer import Observer
from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.runtime.pystate import Runtime


class BlockCountOracle(Observer):
    """Compares each block count with the heap ghost, and the ref total with the refcount
    ghost (module docstring)."""

    def __init__(self, rt: "Runtime", heap: HeapChecker) -> None:
        self.rt = rt
        self.heap = heap
        self.counts: list[int] = []         # every count checked, in order (for tests)
        self.totals: list[int] = []         # every ref total checked, in order (for tests)

    def blocks_counted(self, t: Any, count: int) -> None:
        live = len(self.heap.live)
        self.counts.append(count)
        who = t.vt.label if t is not None else "set-up"
        if count != live:
            raise ViolationError(
                "block-count",
                f"sys.getallocatedblocks() by {who} returned {count}, but {live} block(s) are "
                f"live ({'more' if count > live else 'fewer'} than allocated: "
                f"{abs(count - live)})")
        refs = RefcountOracle.find(self.rt)
        if refs is None or not self.rt.world_stopped:
            return
        rt = self.rt
        total = rt.objects.reftotal + sum(p.reftotal for p in rt.threads_head)
        ghost = sum(g.count for g in refs.live.values() if not g.immortal and g.state == LIVE)
        self.totals.append(total)
        if total != ghost:
            raise ViolationError(
                "ref-total",
                f"the total refcount is {total} when {who} counts blocks with the world "
                f"stopped, but {ghost} strong reference(s) to live objects exist")


def install(rt: "Runtime") -> BlockCountOracle:
    """Add the oracle to `rt` (once), with the heap oracle whose ghost it reads."""
    found = rt.find_observer(BlockCountOracle)
    if found is not None:
        return found
    from ftlab.check import heap
    oracle = BlockCountOracle(rt, heap.install(rt))
    rt.add_observer(oracle)
    return oracle
