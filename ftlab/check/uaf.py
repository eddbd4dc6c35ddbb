"""The `use-after-free` oracle on memory (DESIGN §5.1): no thread reads or writes a block that
is not live, except the header reads and the failing CAS of try-incref.

`ftlab.check.refcount` already reports a freed *object* touched through the object API
(`object_accessed`). This oracle covers everything else: every plain access (the address
space's `on_plain_access`) and every atomic one (`Memory.on_atomic_access`, reported at the
same points as to the race detector) that a model thread makes to an address inside a block
that has been freed and not handed out again. A violation names the block (base, size, heap
tag, the offset reached), the access (thread, plain or atomic, read or write, width, step, the
model code that made it) and the block's history (allocated, passed to `_PyMem_FreeDelayed`,
freed: by whom, at which step).

Ghost state, from the runtime's events only (`block_allocated`, `mem_free_delayed`,
`block_freeing`), never from the allocator's data: the live blocks (base -> history), and the
*freed extents*: disjoint intervals of memory whose last block was freed, each with the history
of that block. A free turns the block's [base, base + size) into a freed extent; an allocation
cuts whatever it overlaps out of the freed extents (the memory is a live block again: a new
object of the same size class at the same address is what type-stable memory allows). The
extents are indexed by 64 KiB granule (a mimalloc slice): `granule -> sorted starts` of the
extents that meet it. The hot path is one dict lookup on the granule of the access; only an
access into a granule that holds a freed extent pays a bisect, and only an access that really
meets a freed extent pays for the classification below. Set-up code and end-of-run checks
(no current thread) are not checked, as for the race detector.

Whose accesses are uses. The allocator owns a free block: mimalloc writes and reads free-list
links in it (the local and thread-free lists, the heaps' delayed lists, a new page threaded
over memory freed earlier), fills it (0xDD at free, 0xCD at malloc in MI_DEBUG builds) and
checks its padding. Those are not uses. They are told apart by the code that makes the access:
the innermost frame outside `ftlab/sim` is in `ftlab/runtime/mimalloc/`. This is checked only
on the slow path, when an access meets a freed extent, so it costs nothing on the accesses that
matter for speed. The alternatives were weighed against the code and rejected:

- Tags (the allocator writes FREE_LINK/META/DEBUG_*, users PAYLOAD/HEADER) say nothing about
  reads, which carry no tag, and scenario code's atomic stores default to `Tag.META`.
- An "allocator depth" counter would have to be per thread, not per machine: mimalloc's
  operations are coroutines that yield at their atomics (a remote free's CAS loop, a reclaim),
  so another thread's scenario code runs while one thread is inside the allocator. Per thread
  it would need increments at every mimalloc entry point (malloc, free, collect, delete,
  abandon at thread exit, reclaim, visiting, usable size), costs in unchecked runs too, and
  would exempt everything the allocator calls back (a heap visitor's callback, which is a user
  of the blocks it is shown). The code location has none of these problems.

Allowed accesses to freed memory (DESIGN §5.1):

- try-incref's reads of a stale object's header: its relaxed load of `ob_ref_shared` and its
  CAS (`_Py_TryIncRefShared`; the innermost frame is `try_incref_shared`). A failing CAS only
  reads; a CAS that succeeds on a freed object is a `resurrection`, which the refcount oracle
  reports right after it. The ownership and immortality tests read `ob_tid` and
  `ob_ref_local` with `Memory.peek`, which is not reported at all.
- Nothing else, and in particular not a lock-free reader's read of a block freed while it may
  still hold a pointer. CPython's lock-free readers do read memory their writer has unlinked,
  and QSBR makes that safe, but not by letting them read freed memory: `_PyMem_FreeDelayed`
  keeps the block *allocated* until every thread attached at the unlink has passed a quiescent
  state (the reader drops its pointer there), so with the fix such a read is a read of a live
  block. With `no-free-delayed` the block is freed at once and the reader's read is this
  oracle's violation. Freed objects are the one case where CPython relies on reads of freed
  memory (delayed page reuse keeps the header of a freed object readable and dead for
  try-incref), and that is exactly the exception above.
"""

from __future__ import annotations

import os
import sys
from bisect import bisect_left, insort
from typing import TYPE_CHECKING, Any, Callable

import ftlab.runtime.mimalloc as _mimalloc
from ftlab.runtime import object as _object
from ftlab.runtime.mimalloc.types import HeapTag
from ftlab.runtime.observer import Observer
from ftlab.sim import memory as _memory
from ftlab.sim.memory import chain_access_hooks
from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.runtime.pystate import Runtime, ThreadState

GRANULE_SHIFT = 16                      # 64 KiB, mimalloc's MI_SEGMENT_SLICE_SIZE

_SIM_DIR = os.path.dirname(os.path.abspath(_memory.__file__)) + os.sep
_ALLOCATOR_DIR = os.path.dirname(os.path.abspath(_mimalloc.__file__)) + os.sep
# Source locations are named relative to the directory that holds the `ftlab` package (as the
# race detector names them).
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The code whose accesses to a freed object's header are allowed (module docstring).
_ALLOWED_CODE = frozenset({_object.try_incref_shared.__code__})


def _tag_name(tag: int) -> str:
    try:
        return HeapTag(tag).name
    except ValueError:
        return f"tag {tag}"


class Block:
    """The ghost of one block: where it came from and where it went."""

    __slots__ = ("base", "size", "tag", "history", "freed_by", "freed_at")

    def __init__(self, base: int, size: int, tag: int, history: list[str]) -> None:
        self.base = base
        self.size = size
        self.tag = tag
        self.history = history
        self.freed_by = ""
        self.freed_at = -1

    def describe(self) -> str:
        return f"{self.size:,}-byte block at {self.base:#x} (heap {_tag_name(self.tag)})"


class UseAfterFreeOracle(Observer):
    """One per runtime; `install` adds it and sets the memory hooks (module docstring)."""

    def __init__(self, rt: "Runtime") -> None:
        self.rt = rt
        self.machine = rt.machine
        self.mem = rt.mem
        self.live: dict[int, Block] = {}
        # freed extents: start -> (end, block); granule -> sorted starts of the extents in it
        self.extents: dict[int, tuple[int, Block]] = {}
        self.granules: dict[int, list[int]] = {}
        self.slow_checks = 0            # accesses that met a freed extent (then classified)

    @classmethod
    def find(cls, rt: "Runtime") -> "UseAfterFreeOracle | None":
        return rt.find_observer(cls)

    # -----------------------------------------------------------------------------------------
    # The hooks: the fast path first (one dict lookup), `_check` beside it

    def hook(self, atomic: bool) -> Callable[[int, int, bool], None]:
        """The access hook for plain (`atomic` False) or atomic accesses."""
        get = self.granules.get
        check = self._check

        def on_access(addr: int, width: int, is_write: bool) -> None:
            g = addr >> GRANULE_SHIFT
            if get(g) is not None or (addr + width - 1) >> GRANULE_SHIFT != g:
                check(addr, width, is_write, atomic)
        return on_access

    def _check(self, addr: int, width: int, is_write: bool, atomic: bool) -> None:
        ext = self._meeting(addr, max(width, 1))
        if ext is None or self.machine.current is None:
            return
        self.slow_checks += 1
        f = sys._getframe(2)
        while f is not None and f.f_code.co_filename.startswith(_SIM_DIR):
            f = f.f_back
        if f is not None:
            if f.f_code.co_filename.startswith(_ALLOCATOR_DIR) or f.f_code in _ALLOWED_CODE:
                return
        self._violation(addr, width, is_write, atomic, ext, f)

    def _meeting(self, addr: int, n: int) -> tuple[int, int, Block] | None:
        """The first freed extent that meets [addr, addr + n), as (start, end, block)."""
        end = addr + n
        extents = self.extents
        for g in range(addr >> GRANULE_SHIFT, ((end - 1) >> GRANULE_SHIFT) + 1):
            starts = self.granules.get(g)
            if not starts:
                continue
            # extents are disjoint: only the last one starting before `end` can reach `addr`
            i = bisect_left(starts, end) - 1
            if i >= 0:
                s = starts[i]
                e, b = extents[s]
                if e > addr:
                    return s, e, b
        return None

    # -----------------------------------------------------------------------------------------
    # Freed extents

    def _add_extent(self, start: int, end: int, block: Block) -> None:
        self.extents[start] = (end, block)
        granules = self.granules
        for g in range(start >> GRANULE_SHIFT, ((end - 1) >> GRANULE_SHIFT) + 1):
            lst = granules.get(g)
            if lst is None:
                granules[g] = [start]
            else:
                insort(lst, start)

    def _remove_extent(self, start: int) -> tuple[int, Block]:
        end, block = self.extents.pop(start)
        granules = self.granules
        for g in range(start >> GRANULE_SHIFT, ((end - 1) >> GRANULE_SHIFT) + 1):
            lst = granules[g]
            del lst[bisect_left(lst, start)]
            if not lst:
                del granules[g]
        return end, block

    def _reuse(self, start: int, end: int) -> None:
        """[start, end) is a live block again: cut it out of the freed extents."""
        if not self.granules:
            return
        while True:
            ext = self._meeting(start, end - start)
            if ext is None:
                return
            s, e, b = ext
            self._remove_extent(s)
            if s < start:
                self._add_extent(s, start, b)
            if e > end:
                self._add_extent(end, e, b)

    # -----------------------------------------------------------------------------------------
    # Events

    def _who(self, t: Any) -> str:
        return t.vt.label if t is not None and t.vt is not None else "set-up"

    def block_allocated(self, t: "ThreadState", ptr: int, size: int, heap: Any) -> None:
        n = max(size, 1)
        self._reuse(ptr, ptr + n)
        tag = heap.tag if heap is not None else 0
        who = self._who(t)
        self.live[ptr] = Block(ptr, n, tag, [
            f"allocated ({size:,} bytes, heap {_tag_name(tag)}) by {who} at step "
            f"{self.machine.steps}"])

    def mem_free_delayed(self, t: "ThreadState", ptr: int, size: int) -> None:
        b = self.live.get(ptr)
        if b is not None:
            b.history.append(f"unlinked and passed to _PyMem_FreeDelayed by {self._who(t)} at "
                             f"step {self.machine.steps}")

    def block_freeing(self, t: "ThreadState", ptr: int) -> None:
        b = self.live.pop(ptr, None)
        if b is None:
            return                      # not a live block: the heap oracles report it
        b.freed_by = self._who(t)
        b.freed_at = self.machine.steps
        b.history.append(f"freed by {b.freed_by} at step {b.freed_at}")
        self._reuse(ptr, ptr + b.size)  # (defensive: a live block meets no freed extent)
        self._add_extent(ptr, ptr + b.size, b)

    # -----------------------------------------------------------------------------------------

    def _violation(self, addr: int, width: int, is_write: bool, atomic: bool,
                   ext: tuple[int, int, Block], frame: Any) -> None:
        m = self.machine
        _, _, b = ext
        kind = f"{'atomic' if atomic else 'plain'} {'write' if is_write else 'read'}"
        at = max(addr, b.base)
        where = (f"offset {at - b.base:,}" if at < b.base + b.size else "past the end")
        word = self.mem.tag_of(at).name
        details = list(b.history)
        details.append(f"the word at {at:#x} last held {word}")
        if frame is not None:
            path = os.path.relpath(frame.f_code.co_filename, _ROOT)
            details.append(f"{m.current.label} step {m.steps}: {path}:{frame.f_lineno} in "
                           f"{frame.f_code.co_name}")
        raise ViolationError(
            "use-after-free",
            f"{m.current.label}: {kind} of {width:,} byte{'s' if width != 1 else ''} at "
            f"{addr:#x} at step {m.steps}, {where} of the freed {b.describe()}, freed by "
            f"{b.freed_by} at step {b.freed_at}",
            tuple(details))


def install(rt: "Runtime") -> UseAfterFreeOracle:
    """Add the oracle to `rt` (once) and chain its hooks in front of the memory's."""
    found = UseAfterFreeOracle.find(rt)
    if found is not None:
        return found
    oracle = UseAfterFreeOracle(rt)
    rt.add_observer(oracle)
    mem = rt.mem
    # In front of the hooks already there (the race detector's, the trace's): an access that
    # is a use-after-free is reported as such, not as the data race it may also be.
    mem.on_plain_access = chain_access_hooks(oracle.hook(False), mem.on_plain_access)
    mem.watch_atomics(chain_access_hooks(oracle.hook(True), mem.on_atomic_access))
    return oracle
