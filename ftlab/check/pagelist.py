"""The `page-list` oracle: the QSBR page lists (`tstate->mimalloc.page_list`, linked through
each page's `qsbr_node`) are consistent with the pages (reference §1.3 I3, issue 12 item 5,
gh-145615).

Ghost state: the list each page is on, built from the `qsbr_page_linked` and
`qsbr_page_unlinked` events (not read back from the runtime's lists). Checked:

- when a page is linked: it is on no list already (a page is on at most one list) and it has a
  goal (`qsbr_goal != 0`);
- under CPython main (gh-145615) also: the list is the page's owner's (the thread of the
  page's heap: only the owner walks its list and frees the pages on it, so a page on another
  thread's list would be freed by a thread that does not own its heap) and the page is not in
  the full queue (a page left there is never searched by allocation: stranded). 3.13 and
  3.14 before the fix break both, which is what the fix repaired, so they are not checked
  there;
- when a thread completes a mimalloc operation, for every page of its own heaps: a page on a
  list has a goal; an all-free page with a goal is on a list (only abandoned pages keep a goal
  off every list, and they are in no heap). A page on a list that is no longer all free is
  allowed: allocation through the heap's direct page pointers does not clear the goal, and
  `_PyMem_mi_heap_collect_qsbr` drops such a page when it meets it. Under main, a page on a
  list is not in the full queue (whatever its `in_full` flag says).

Only the pages of the thread whose operation completed are swept: another thread may be in
the middle of an operation on its own pages (between `_PyMem_mi_page_clear_qsbr` and the
new link, for instance).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ftlab.runtime.mimalloc.page_queue import IN_FULL
from ftlab.runtime.mimalloc.types import MI_BIN_FULL
from ftlab.runtime.observer import Observer
from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.runtime.pystate import Runtime


class PageListOracle(Observer):
    """The `page-list` oracle (module docstring). One per runtime; `install` adds it."""

    def __init__(self, rt: "Runtime") -> None:
        self.rt = rt
        self.mi = rt.mimalloc
        # page -> the thread state whose list holds it (the ghost of the `qsbr_node` links)
        self.on_list: dict[Any, Any] = {}
        self.main = rt.config.version == "main"

    @classmethod
    def find(cls, rt: "Runtime") -> "PageListOracle | None":
        return rt.find_observer(cls)

    def _fail(self, msg: str) -> None:
        raise ViolationError("page-list", msg)

    @staticmethod
    def _who(t: Any) -> str:
        return t.vt.label if t is not None and t.vt is not None else "set-up"

    def qsbr_page_linked(self, t: Any, page: Any) -> None:
        if page in self.on_list:
            self._fail(f"page {page!r} linked on {self._who(t)}'s QSBR page list while it is on "
                       f"{self._who(self.on_list[page])}'s")
        if page.qsbr_goal == 0:
            self._fail(f"page {page!r} linked on {self._who(t)}'s QSBR page list without a goal")
        if self.main:
            heap = page.heap
            owner = heap.tld.tstate if heap is not None else None
            if owner is not t:
                self._fail(f"page {page!r} of {self._who(owner)}'s heap put on "
                           f"{self._who(t)}'s QSBR page list, not its owner's (gh-145615)")
            if page.flags & IN_FULL:
                self._fail(f"page {page!r} deferred for QSBR while in the full queue, where "
                           f"allocation never finds it (stranded, gh-145615)")
        self.on_list[page] = t

    def qsbr_page_unlinked(self, page: Any) -> None:
        if self.on_list.pop(page, None) is None:
            self._fail(f"page {page!r} unlinked from a QSBR page list it is not on")

    def mi_op_done(self, t: Any) -> None:
        if t is None or t.mimalloc is None:
            return
        self.sweep(t)

    def sweep(self, t: Any) -> None:
        """The pages of `t`'s heaps against the ghost lists."""
        on_list = self.on_list
        for heap in t.mimalloc.heaps:
            if heap is None or heap.deleted:
                continue
            for b, pq in enumerate(heap.pages):
                page = pq.first
                while page is not None:
                    listed = on_list.get(page)
                    if listed is not None and self.main and b == MI_BIN_FULL:
                        self._fail(f"page {page!r} waits for QSBR in the full queue, where "
                                   "allocation never finds it (stranded, gh-145615)")
                    if listed is not None and page.qsbr_goal == 0:
                        self._fail(f"page {page!r} is on {self._who(listed)}'s QSBR page list "
                                   "without a goal")
                    if listed is None and page.used == 0 and page.qsbr_goal != 0:
                        self._fail(f"all-free page {page!r} of {self._who(t)}'s heap has QSBR "
                                   f"goal {page.qsbr_goal} but is on no page list")
                    page = page.next


def install(rt: "Runtime") -> PageListOracle:
    """Add the page-list oracle to `rt` (once)."""
    found = PageListOracle.find(rt)
    if found is not None:
        return found
    oracle = PageListOracle(rt)
    rt.add_observer(oracle)
    return oracle
