"""The `premature-reuse` oracle (DESIGN §5.3): memory a thread may still read without a lock is
not reused for another size class or heap tag, nor decommitted, before every thread attached
when it was unlinked has passed a quiescent state.

Ghost state, kept from the runtime's events only (never from goals, `rd_seq` or the page lists,
so that a wrong goal, a wrong poll or a missing delay in `ftlab.runtime.obmalloc` cannot hide
itself):

- which threads are online in QSBR (`qsbr_attach` .. `qsbr_detach`), and how many quiescent
  states (a periodic check's, or a detach) each has passed;
- every live block: who allocated it, when, its size and heap tag (`block_allocated`);
- a *guard* on every block that may still be read through a pointer obtained without a lock:
  its history and the threads that may hold such a pointer, with their count of quiescent
  states at that moment. A thread drops out once it passes a quiescent state (or detaches);
  a guard with nobody left is dropped. Guards come from two places:

  * `_PyMem_FreeDelayed` (`mem_free_delayed`): the caller has just unlinked the block (a list's
    old item array, a dict's old keys). Any reuse of its memory is premature while the guard
    holds: handing any part of it out again, a new page over it, decommitting it, giving its
    segment back to the OS.
  * the free of an object from a QSBR heap (OBJECT, GC, GC_PRE; `object_freeing`): a lock-free
    reader may still try-incref it. Its block may hold a new object of the same size class in
    a heap of the same tag (same block boundaries: the header fields stay where they were), and
    nothing else, while the guard holds: a page of another block size or tag over it,
    decommitting it, giving its segment back to the OS. (Raw blocks of those heaps that never
    held an object, as in the mimalloc stress scenario, have no lock-free readers.)

  The thread that unlinks or frees the block is not in the set: it is the one that made the
  block unreachable. Threads that attach later cannot hold a pointer to it.

A violation names the memory, what reused it, the block's history (allocated, unlinked, freed)
and the threads still in its set.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from typing import TYPE_CHECKING, Any

from ftlab.runtime.mimalloc import block_info
from ftlab.runtime.mimalloc.page import page_block_size
from ftlab.runtime.mimalloc.segment import segment_page_start, segment_size
from ftlab.runtime.mimalloc.types import HeapTag
from ftlab.runtime.observer import Observer
from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.runtime.pystate import Runtime, ThreadState

DELAYED, OBJECT = "delayed", "object"


def _tag_name(tag: int) -> str:
    try:
        return HeapTag(tag).name
    except ValueError:
        return f"tag {tag}"


class Guard:
    """The ghost of one block that may still be read through a pointer loaded without a lock."""

    __slots__ = ("ptr", "size", "bsize", "tag", "kind", "waiting", "history")

    def __init__(self, ptr: int, size: int, bsize: int, tag: int, kind: str,
                 waiting: dict["ThreadState", int], history: list[str]) -> None:
        self.ptr = ptr
        self.size = size            # the bytes a reader may read: [ptr, ptr + size)
        self.bsize = bsize          # the block size of its page (OBJECT guards)
        self.tag = tag
        self.kind = kind
        self.waiting = waiting      # thread -> its count of quiescent states at the unlink
        self.history = history

    def describe(self) -> str:
        what = "block passed to _PyMem_FreeDelayed" if self.kind == DELAYED else "freed object"
        return (f"{self.size:,}-byte {what} at {self.ptr:#x} (heap {_tag_name(self.tag)})")


class ReuseOracle(Observer):
    """One per runtime; `install` adds it (module docstring)."""

    def __init__(self, rt: "Runtime") -> None:
        self.rt = rt
        self.machine = rt.machine
        self.attached: dict[ThreadState, None] = {}     # insertion-ordered set
        self.quiescent: dict[ThreadState, int] = {}
        self.allocs: dict[int, tuple[str, int, int, int]] = {}  # ptr -> (who, step, size, tag)
        self.objects: dict[int, tuple[str, int, int, str]] = {}  # op -> (who, step, size, type)
        self.guards: dict[int, Guard] = {}
        self.starts: list[int] = []                     # sorted keys of `guards`
        self.fifo: deque[Guard] = deque()               # guards, oldest first, for pruning
        self.max_size = 0
        self.guards_made = 0

    @classmethod
    def find(cls, rt: "Runtime") -> "ReuseOracle | None":
        return rt.find_observer(cls)

    # -----------------------------------------------------------------------------------------
    # QSBR events: who may still hold a pointer

    def qsbr_attach(self, t: "ThreadState", seq: int) -> None:
        self.attached[t] = None

    def qsbr_detach(self, t: "ThreadState") -> None:
        self.attached.pop(t, None)
        self.quiescent[t] = self.quiescent.get(t, 0) + 1
        self._prune()

    def qsbr_quiescent(self, t: "ThreadState", seq: int) -> None:
        self.quiescent[t] = self.quiescent.get(t, 0) + 1
        self._prune()

    def _snapshot(self, t: "ThreadState | None") -> dict["ThreadState", int]:
        q = self.quiescent
        return {u: q.get(u, 0) for u in self.attached if u is not t}

    def _pending(self, g: Guard) -> list["ThreadState"]:
        q = self.quiescent
        return [u for u, n in g.waiting.items() if q.get(u, 0) == n]

    # -----------------------------------------------------------------------------------------
    # Guards

    def _who(self, t: Any) -> str:
        return t.vt.label if t is not None and t.vt is not None else "set-up"

    def _add(self, g: Guard) -> None:
        old = self.guards.get(g.ptr)
        if old is None:
            insort(self.starts, g.ptr)
        self.guards[g.ptr] = g
        self.fifo.append(g)
        self.guards_made += 1
        if g.size > self.max_size:
            self.max_size = g.size

    def _drop(self, g: Guard) -> None:
        if self.guards.get(g.ptr) is g:
            del self.guards[g.ptr]
            i = bisect_left(self.starts, g.ptr)
            del self.starts[i]

    def _prune(self) -> None:
        fifo = self.fifo
        while fifo and (self.guards.get(fifo[0].ptr) is not fifo[0] or not self._pending(fifo[0])):
            self._drop(fifo.popleft())

    def _overlapping(self, addr: int, n: int) -> list[Guard]:
        """The guards on memory that meets [addr, addr + n), still held by some thread (the
        others are dropped on the way)."""
        starts = self.starts
        out = []
        j = bisect_left(starts, addr + n) - 1
        low = addr - self.max_size
        while j >= 0 and starts[j] > low:
            g = self.guards[starts[j]]
            if g.ptr + g.size > addr:
                if self._pending(g):
                    out.append(g)
                else:
                    self._drop(g)
            j -= 1
        return out

    def _history(self, ptr: int) -> list[str]:
        rec = self.allocs.get(ptr)
        if rec is None:
            return []
        who, step, size, tag = rec
        return [f"allocated ({size:,} bytes, heap {_tag_name(tag)}) by {who} at step {step}"]

    # -----------------------------------------------------------------------------------------
    # Allocator events

    def mem_free_delayed(self, t: "ThreadState", ptr: int, size: int) -> None:
        waiting = self._snapshot(t)
        if not waiting:
            return
        rec = self.allocs.get(ptr)
        nbytes = max(size, rec[2] if rec is not None else 0, 1)
        tag = rec[3] if rec is not None else HeapTag.MEM
        history = self._history(ptr)
        history.append(f"unlinked and passed to _PyMem_FreeDelayed by {self._who(t)} at step "
                       f"{self.machine.steps}")
        self._add(Guard(ptr, nbytes, nbytes, tag, DELAYED, waiting, history))

    def block_freeing(self, t: "ThreadState", ptr: int) -> None:
        if self.allocs.pop(ptr, None) is None:
            return                              # not a live block: the heap oracles report it
        g = self.guards.get(ptr)
        if g is not None and g.kind == DELAYED and self._pending(g):
            g.history.append(f"freed by {self._who(t)} at step {self.machine.steps}")

    def object_created(self, t: "ThreadState | None", op: int, size: int, type_name: str,
                       immortal: bool) -> None:
        if not immortal:
            self.objects[op] = (self._who(t), self.machine.steps, size, type_name)

    def object_freeing(self, t: "ThreadState", op: int) -> None:
        rec = self.objects.pop(op, None)
        if rec is None:
            return
        try:
            info = block_info(self.rt, op)
        except ValueError:
            return                              # not in a page: the heap oracles report it
        if info.tag == HeapTag.MEM:
            return
        start = info.block_start
        for g in self._overlapping(start, info.block_size):
            if g.kind == DELAYED:
                return                          # already guarded from its unlink on
        waiting = self._snapshot(t)
        if not waiting:
            return
        who, step, size, type_name = rec
        history = [f"created as a {size:,}-byte {type_name} object at {op:#x} by {who} at step "
                   f"{step}",
                   f"freed by {self._who(t)} at step {self.machine.steps}"]
        self._add(Guard(start, info.block_size, info.block_size, info.tag, OBJECT, waiting,
                        history))

    def block_allocated(self, t: "ThreadState", ptr: int, size: int, heap: Any) -> None:
        tag = heap.tag if heap is not None else 0
        if self.starts:
            for g in self._overlapping(ptr, max(size, 1)):
                if g.kind == OBJECT and g.ptr == ptr and g.tag == tag:
                    try:
                        bsize = block_info(self.rt, ptr).block_size
                    except ValueError:
                        bsize = -1
                    if bsize == g.bsize:
                        continue    # a new object of the same size class: type-stable memory
                self._violation(g, f"{self._who(t)} is handed a {size:,}-byte block at "
                                   f"{ptr:#x} (heap {_tag_name(tag)}) out of its memory")
        self.allocs[ptr] = (self._who(t), self.machine.steps, size, tag)

    def mi_page_event(self, page: Any, what: str) -> None:
        if what != "init" or not self.starts:
            return
        start, psize = segment_page_start(page.segment, page)
        bsize = page_block_size(page)
        for g in self._overlapping(start, psize):
            if (g.kind == OBJECT and g.tag == page.tag and g.bsize == bsize
                    and (g.ptr - start) % bsize == 0):
                continue        # the same size class and tag, the same block boundaries
            self._violation(g, f"{self._who(self._current())} starts a page of {bsize:,}-byte "
                               f"blocks (heap {_tag_name(page.tag)}) at {start:#x} over it")

    def mi_decommitted(self, addr: int, size: int) -> None:
        if not self.starts:
            return
        for g in self._overlapping(addr, size):
            self._violation(g, f"{self._who(self._current())} decommits "
                               f"[{addr:#x}, {addr + size:#x}), which holds it")

    def mi_segment_event(self, segment: Any, what: str) -> None:
        # A segment given back to an arena stays committed until the arena purges it (reported
        # as a decommit) or a new segment's pages are made over it (reported as page inits); a
        # segment that did not come from an arena goes straight back to the OS.
        if what != "freed" or not self.starts:
            return
        memid = segment.memid
        if memid is None or memid.arena is not None:
            return
        for g in self._overlapping(segment.base, segment_size(segment)):
            self._violation(g, f"{self._who(self._current())} gives its segment at "
                               f"{segment.base:#x} back to the OS")

    def _current(self) -> Any:
        vt = self.machine.current
        if vt is None:
            return None
        for t in self.rt.tstates:
            if t.vt is vt:
                return t
        return None

    # -----------------------------------------------------------------------------------------

    def _violation(self, g: Guard, what: str) -> None:
        pending = self._pending(g)
        names = ", ".join(u.name for u in pending)
        verb = "has" if len(pending) == 1 else "have"
        raise ViolationError(
            "premature-reuse",
            f"{what}: the {g.describe()} is reused, but {names} {verb} passed no quiescent "
            f"state since it was {'unlinked' if g.kind == DELAYED else 'freed'}, so "
            f"{'it' if len(pending) == 1 else 'they'} may still read it through a pointer "
            f"loaded without a lock",
            tuple(g.history) + tuple(
                f"{u.name}: {'attached' if u in self.attached else 'detached'} now, "
                f"{self.quiescent.get(u, 0)} quiescent states so far, "
                f"{g.waiting[u]} when the block was {'unlinked' if g.kind == DELAYED else 'freed'}"
                for u in pending))


def install(rt: "Runtime") -> ReuseOracle:
    """Add the oracle to `rt` (once)."""
    found = ReuseOracle.find(rt)
    if found is not None:
        return found
    oracle = ReuseOracle(rt)
    rt.add_observer(oracle)
    return oracle
