"""Oracles (DESIGN §5): ghost state and invariants, observing the runtime through its events.

`install(rt)` adds the oracles of checked mode (`Config.checked`) to a runtime; the explorer
calls it for every execution. Each oracle module has its own `install`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ftlab.runtime.pystate import Runtime


def install(rt: "Runtime") -> None:
    """Install the oracles of checked mode on `rt` (nothing if `rt.config.checked` is off)."""
    if not rt.config.checked:
        return
    # The refcount oracle before the heap's: at the end of a run a leaked object is reported
    # as the object it is (with its references), not as the block under it.
    from ftlab.check import refcount
    refcount.install(rt)
    from ftlab.check import heap
    heap.install(rt)
    from ftlab.check import reuse
    reuse.install(rt)
    from ftlab.check.qsbr import QsbrOracle
    QsbrOracle.install(rt)
    from ftlab.check import uaf
    uaf.install(rt)
    # the free-threaded GC (gc-count)
    from ftlab.check import gc
    gc.install(rt)
    from ftlab.check import typecache      # types
    typecache.install(rt)
    from ftlab.check import dictlookup     # dicts (dict-lookup)
    dictlookup.install(rt)
    # block counting (block-count)
    from ftlab.check import blockcount
    blockcount.install(rt)
    # QSBR page lists (page-list)
    from ftlab.check import pagelist
    pagelist.install(rt)
    # thread lifecycle at finalization (lifecycle, issue 11)
    from ftlab.check import lifecycle
    lifecycle.install(rt)
