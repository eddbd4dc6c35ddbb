"""The `page-list` oracle: the QSBR page lists (`tstate->mimalloc.page_list`, linked through
each page's `qsbr_node`) are consistent with the pages (reference §1.3 I3, issue 9 item 5,
gh-145615).

The lists live in simulated memory (`ftlab.runtime.llist`); the oracle walks them there, with
raw loads (not accesses of the run), from the sentinel in every linked thread state. Checked on
every link and unlink and whenever a thread completes a mimalloc operation:

- each list is well formed: following `next` comes back to the sentinel, reaching only page
  records' `qsbr_node`s, and the links are symmetric (`node.next.prev == node`, the sentinel's
  `prev` is the last node);
- a page is on at most one list, and a page on a list has a goal (`qsbr_goal != 0`, the same in
  memory as in the model's mirror) and a heap;
- under CPython main (gh-145615) also: a page is only on its owner's list (the thread of the
  page's heap: only the owner walks its list and frees the pages on it, so a page on another
  thread's list would be freed by a thread that does not own its heap), and an all-free page
  on a list is not in its heap's full queue (allocation never searches that queue: the page
  would be stranded until its goal frees it), whatever its `in_full` flag says. 3.13 and 3.14
  before the fix break both, which is what the fix repaired, so they are not checked there;
- for every page of the heaps of the thread whose operation completed: an all-free page with a
  goal is on a list (only abandoned pages keep a goal off every list, and they are in no heap);
- after a thread walks its list (`_PyMem_mi_heap_collect_qsbr`), the list is empty or its
  first page is all free: the walk drops each page it meets that was allocated from again and
  stops only at an all-free page whose goal is not reached.

A page on a list that is no longer all free is allowed (also in the full queue, once it filled
up): allocation through the heap's direct page pointers does not clear the goal, and
`_PyMem_mi_heap_collect_qsbr` drops such a page when it meets it. Only the pages of the thread
whose operation completed are swept for the last check: another thread may be in the middle of
an operation on its own pages (between `_PyMem_mi_page_clear_qsbr` and the new link, for
instance). The list operations themselves contain no scheduling point, so every list is whole
whenever the oracle runs.
"""

from __future__ import annotations

from operator import attrgetter
from typing import TYPE_CHECKING, Any

from ftlab.runtime.llist import LLIST_NEXT, LLIST_PREV
from ftlab.runtime.mimalloc.types import MI_BIN_FULL
from ftlab.runtime.observer import Observer
from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.runtime.pystate import Runtime

# A list longer than this is taken to be a cycle that skips its sentinel.
MAX_LIST = 1 << 14

_first = attrgetter("first")    # a page queue's first page (Page has no __bool__/__len__)


class PageListOracle(Observer):
    """The `page-list` oracle (module docstring). One per runtime; `install` adds it."""

    def __init__(self, rt: "Runtime") -> None:
        self.rt = rt
        self.mem = rt.mem
        self.main = rt.config.version == "main"

    @classmethod
    def find(cls, rt: "Runtime") -> "PageListOracle | None":
        return rt.find_observer(cls)

    def _fail(self, msg: str) -> None:
        raise ViolationError("page-list", msg)

    @staticmethod
    def _who(t: Any) -> str:
        return t.vt.label if t is not None and t.vt is not None else "set-up"

    def _load(self, addr: int, what: str, *args: Any) -> int:
        """The word at `addr`, read raw; `what.format(*args)` names it if it cannot be read
        (formatted only then: issue 13, a page's repr on every link of every walk was a
        tenth of the oracle)."""
        try:
            return self.mem.raw_load(addr, 8)
        except ViolationError as e:
            self._fail(f"{what.format(*args)} at {addr:#x} is not readable memory ({e})")
            raise   # not reached: _fail raises

    def _page_of(self, node: int, ts: Any) -> Any:
        from ftlab.runtime.mimalloc.segment import HeapIntegrityError
        from ftlab.runtime.obmalloc import page_of_qsbr_node
        try:
            return page_of_qsbr_node(self.rt.mimalloc, node)
        except HeapIntegrityError:
            self._fail(f"{self._who(ts)}'s QSBR page list links {node:#x}, which is not the "
                       "qsbr_node of a page record")

    # -- events --

    def qsbr_page_linked(self, t: Any, page: Any) -> None:
        self.check_lists()

    def qsbr_page_unlinked(self, page: Any) -> None:
        self.check_lists()

    def qsbr_page_list_walked(self, t: Any) -> None:
        """After `_PyMem_mi_heap_collect_qsbr`: the walk dropped every page it met that was
        allocated from again, and stopped only at an all-free page whose goal is not reached,
        so the list is empty or starts with an all-free page."""
        for ts, pages in self.lists():
            if ts is t and pages and pages[0].used != 0:
                self._fail(f"page {pages[0]!r} ({pages[0].used} blocks in use) is still first on "
                           f"{self._who(t)}'s QSBR page list after {self._who(t)} walked it: "
                           "_PyMem_mi_heap_collect_qsbr leaves a page allocated from again "
                           "on the list")

    def mi_op_done(self, t: Any) -> None:
        if t is None or t.mimalloc is None:
            return
        on_list = self.check_lists()
        self.sweep(t, on_list)

    # -- the checks --

    def lists(self) -> list[tuple[Any, list[Any]]]:
        """Every linked thread state with a page list, and the pages on it, first to last,
        after checking each list's links (module docstring)."""
        out = []
        for ts in self.rt.threads_head:
            mts = ts.mimalloc
            if mts is None or not mts.page_list or not ts.block:
                continue
            head = mts.page_list
            who = self._who(ts)
            pages = []
            prev = head
            node = self._load(head + LLIST_NEXT, "{}'s page_list.next", who)
            while node != head:
                if node == 0:
                    self._fail(f"{who}'s QSBR page list reaches a NULL next link after "
                               f"{len(pages)} pages")
                page = self._page_of(node, ts)
                back = self._load(node + LLIST_PREV, "qsbr_node.prev of {!r}", page)
                if back != prev:
                    self._fail(f"page {page!r} on {who}'s QSBR page list: its qsbr_node.prev is "
                               f"{back:#x}, not the node before it ({prev:#x})")
                pages.append(page)
                if len(pages) > MAX_LIST:
                    self._fail(f"{who}'s QSBR page list does not come back to its sentinel")
                prev = node
                node = self._load(node + LLIST_NEXT, "qsbr_node.next of {!r}", page)
            tail = self._load(head + LLIST_PREV, "{}'s page_list.prev", who)
            if tail != prev:
                self._fail(f"{who}'s QSBR page list: the sentinel's prev is {tail:#x}, not its "
                           f"last node ({prev:#x})")
            out.append((ts, pages))
        return out

    def check_lists(self) -> dict[Any, Any]:
        """Check every list (module docstring); returns page -> the thread state whose list
        holds it."""
        on_list: dict[Any, Any] = {}
        full: dict[Any, set[Any]] = {}      # heap -> the pages in its full queue
        for ts, pages in self.lists():
            who = self._who(ts)
            for page in pages:
                other = on_list.get(page)
                if other is not None:
                    self._fail(f"page {page!r} is on {who}'s QSBR page list and on "
                               f"{self._who(other)}'s")
                on_list[page] = ts
                if page.qsbr_goal == 0:
                    self._fail(f"page {page!r} is on {who}'s QSBR page list without a goal")
                goal = self._load(page.qsbr_node_addr + 16, "qsbr_goal of {!r}", page)
                if goal != page.qsbr_goal:
                    self._fail(f"page {page!r} on {who}'s QSBR page list: qsbr_goal in memory is "
                               f"{goal}, its mirror {page.qsbr_goal}")
                heap = page.heap
                if heap is None:
                    self._fail(f"page {page!r} is on {who}'s QSBR page list but in no heap")
                if not self.main:
                    continue
                owner = heap.tld.tstate
                if owner is not ts:
                    self._fail(f"page {page!r} of {self._who(owner)}'s heap is on {who}'s QSBR "
                               "page list, not its owner's (gh-145615)")
                if page.used == 0:
                    in_full = full.get(heap)
                    if in_full is None:
                        in_full = full[heap] = set()
                        p = heap.pages[MI_BIN_FULL].first
                        while p is not None:
                            in_full.add(p)
                            p = p.next
                    if page in in_full:
                        self._fail(f"all-free page {page!r} waits on {who}'s QSBR page list in "
                                   "the full queue, where allocation never finds it (stranded, "
                                   "gh-145615)")
        return on_list

    def sweep(self, t: Any, on_list: dict[Any, Any] | None = None) -> None:
        """The pages of `t`'s heaps against the lists: an all-free page with a goal is on one."""
        if on_list is None:
            on_list = self.check_lists()
        for heap in t.mimalloc.heaps:
            if heap is None or heap.deleted:
                continue
            # the non-empty queues, found in C (most of a heap's 75 queues are empty, and this
            # runs whenever a thread completes a mimalloc operation: issue 13)
            for page in filter(None, map(_first, heap.pages)):
                while page is not None:
                    if page.used == 0 and page.qsbr_goal != 0 and page not in on_list:
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
