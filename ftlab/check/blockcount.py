"""The `block-count` oracle: `sys.getallocatedblocks()` is exact (DESIGN §5.7, gh-115184).

When `get_num_global_allocated_blocks` returns its count (the `blocks_counted` event, sent
with the world still stopped), the count must equal the blocks the heap oracle's ghost holds
live at that moment: every block mimalloc handed out and nobody has started to free. Blocks
waiting in a delayed-free queue or on a QSBR page list are live in both. A count taken
without stopping the world (other threads allocate and free while their pages are walked),
without the abandoned pool (a dead thread's blocks missing) or from `used` before the
cross-thread frees are collected (freed blocks counted) differs from the ghost.

The ghost is `ftlab.check.heap.HeapChecker.live`; this oracle adds no state of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ftlab.check.heap import HeapChecker
from ftlab.runtime.observer import Observer
from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.runtime.pystate import Runtime


class BlockCountOracle(Observer):
    """Compares each block count with the heap ghost (module docstring)."""

    def __init__(self, heap: HeapChecker) -> None:
        self.heap = heap
        self.counts: list[int] = []         # every count checked, in order (for tests)

    def blocks_counted(self, t: Any, count: int) -> None:
        live = len(self.heap.live)
        self.counts.append(count)
        if count != live:
            who = t.vt.label if t is not None else "set-up"
            raise ViolationError(
                "block-count",
                f"sys.getallocatedblocks() by {who} returned {count}, but {live} block(s) are "
                f"live ({'more' if count > live else 'fewer'} than allocated: "
                f"{abs(count - live)})")


def install(rt: "Runtime") -> BlockCountOracle:
    """Add the oracle to `rt` (once), with the heap oracle whose ghost it reads."""
    found = rt.find_observer(BlockCountOracle)
    if found is not None:
        return found
    from ftlab.check import heap
    oracle = BlockCountOracle(heap.install(rt))
    rt.add_observer(oracle)
    return oracle
