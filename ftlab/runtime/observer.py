"""What the runtime tells the oracles (DESIGN §1): the runtime never imports `ftlab.check`.

The runtime calls these methods at the points where its ghost-relevant state changes; the
default does nothing, so an unchecked run pays one no-op call. `ftlab.check` subclasses
`Observer` and installs instances with `Runtime.add_observer`. A hook reports a broken
invariant by raising `ViolationError`. Each mechanism adds the events it needs here, with
no-op defaults, next to the others of its source file.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ftlab.runtime.pystate import ThreadState


class Observer:
    # -- threads (pystate.c) --
    def thread_started(self, t: "ThreadState") -> None: ...
    def thread_exited(self, t: "ThreadState") -> None: ...

    # -- QSBR (qsbr.c); each event follows the atomic it reports --
    def qsbr_attach(self, t: "ThreadState", seq: int) -> None: ...       # seq stored
    def qsbr_detach(self, t: "ThreadState") -> None: ...                 # OFFLINE stored
    def qsbr_quiescent(self, t: "ThreadState", seq: int) -> None: ...    # seq stored
    # a goal handed out: advance, deferred_advance or shared_next (advanced or not)
    def qsbr_advance(self, t: "ThreadState", goal: int) -> None: ...
    # goal_reached or poll answered True: what has `goal` may now be freed
    def qsbr_goal_reached(self, t: "ThreadState", goal: int) -> None: ...

    # -- mimalloc (alloc.c, free.c) --
    def block_allocated(self, t: "ThreadState", ptr: int, size: int, heap: Any) -> None: ...
    def block_freeing(self, t: "ThreadState", ptr: int) -> None: ...  # before the free runs
    def block_freed(self, t: "ThreadState", ptr: int) -> None: ...
    # slow-path changes (page.c, segment.c): what: "init", "cleared"; "allocated", "freed",
    # "abandoned", "reclaimed"; memory given back by a purge; the end of an operation of `t`
    # that has no block event (heap collect, delete)
    def mi_page_event(self, page: Any, what: str) -> None: ...
    def mi_segment_event(self, segment: Any, what: str) -> None: ...
    def mi_decommitted(self, addr: int, size: int) -> None: ...
    def mi_op_done(self, t: "ThreadState") -> None: ...

    # -- obmalloc.c (FT) --
    # `ptr` (`size` bytes) was unlinked from a lock-free-readable structure and handed to
    # `_PyMem_FreeDelayed` (or 3.13's `_PyObject_FreeDelayed`): before it is queued or freed
    def mem_free_delayed(self, t: "ThreadState", ptr: int, size: int) -> None: ...
    # block counting (sys.getallocatedblocks): `count` was just computed by `t`, with the world
    # still stopped (unless finalizing, or mutated): it must be exact now
    def blocks_counted(self, t: "ThreadState", count: int) -> None: ...

    # -- objects and reference counts (object.c, brc.c), in the step of the access they
    # report: `object_accessed` just before an access that needs a live object, the others
    # after theirs. `t` is None for static objects made in set-up. --
    def object_created(self, t: "ThreadState | None", op: int, size: int, type_name: str,
                       immortal: bool) -> None: ...             # one reference, held by t
    def object_accessed(self, t: "ThreadState", op: int, field: str) -> None: ...
    def ref_added(self, t: "ThreadState", op: int, how: str) -> None: ...     # how: "try-incref"...
    def ref_dropped(self, t: "ThreadState", op: int, how: str) -> None: ...
    # between these two the count is in flux (an explicit merge moves the local count);
    # `extra` is what the merge adds (-1: the caller's reference is given up)
    def merge_started(self, t: "ThreadState", op: int) -> None: ...
    def object_queued(self, t: "ThreadState", op: int) -> None: ...  # marked QUEUED, to a BRC queue
    def merge_finished(self, t: "ThreadState", op: int, extra: int) -> None: ...
    def object_deallocating(self, t: "ThreadState", op: int) -> None: ...    # _Py_Dealloc
    def object_freeing(self, t: "ThreadState", op: int) -> None: ...         # before the free

    # -- the free-threaded GC (gc_free_threading.c) --
    # a GC object allocated (gc_alloc) / about to be freed (PyObject_GC_Del), before the count
    # is recorded; the gc-count oracle's ghost counts these
    def gc_object_allocated(self, t: "ThreadState", op: int) -> None: ...
    def gc_object_freed(self, t: "ThreadState", op: int) -> None: ...
    # a collection with the world stopped: started (before anything changed), young.count
    # just reset to 0; between these and gc_collection_finished ob_tid of tracked objects may
    # hold gc_refs or worklist links, and the GC merges refcounts with plain stores (each
    # merge reported with merge_started/merge_finished)
    def gc_collection_started(self, t: "ThreadState") -> None: ...
    def gc_count_reset(self, t: "ThreadState") -> None: ...
    def gc_object_unreachable(self, t: "ThreadState", op: int) -> None: ...   # worklisted
    def gc_object_resurrected(self, t: "ThreadState", op: int) -> None: ...
    def gc_collection_finished(self, t: "ThreadState", collected: int) -> None: ...
    # -- types (typeobject.py): attribute values and MROs as they change; lookups --
    def type_attr_set(self, t: "ThreadState | None", tp: int, name: int, value: int) -> None: ...
    def type_mro_set(self, t: "ThreadState | None", tp: int, mro: list[int]) -> None: ...
    def type_lookup_started(self, t: "ThreadState", tp: int, name: int) -> None: ...
    def type_lookup_finished(self, t: "ThreadState", tp: int, name: int, value: int) -> None: ...
    # -- dict lookups (dictobject.c; the dict-lookup oracle): values stored and tables emptied
    # under the dict's critical section, in the step of the store --
    def dict_value_set(self, t: "ThreadState", mp: int, key: int, value: int) -> None: ...
    def dict_emptied(self, t: "ThreadState", mp: int) -> None: ...
    def dict_lookup_started(self, t: "ThreadState", mp: int, key: int) -> None: ...
    def dict_lookup_finished(self, t: "ThreadState", mp: int, key: int, value: int) -> None: ...

    # -- pagelist: QSBR page lists (obmalloc.py QsbrPageHooks, C's `qsbr_node` links) --
    # `t`'s list gained `page` (llist_insert_tail); `page` left the list it was on
    def qsbr_page_linked(self, t: "ThreadState", page: Any) -> None: ...
    def qsbr_page_unlinked(self, page: Any) -> None: ...
    # `_PyMem_mi_heap_collect_qsbr` finished walking `t`'s (non-empty) list
    def qsbr_page_list_walked(self, t: "ThreadState") -> None: ...

    # -- thread lifecycle at finalization (issue 11; pystate.py `attach`, `finalize_ex`) --
    # `t` just won its status CAS DETACHED -> ATTACHED (it may run Python from here)
    def thread_attached(self, t: "ThreadState") -> None: ...

    # -- timeline names (issue 16): the heap block at `ptr` is what the field `field` of the
    # object at `owner` points to (a list's `_PyListArray`, a dict's `PyDictKeysObject`), laid
    # out as `layout`: (offset, name, stride, item fields) from the lowest offset, each up to
    # the next; a stride > 0 makes it an array of such items ("" names the block's own items:
    # `list#1.ob_item[2]`). Reported once per block, at its allocation, never per access --
    def block_layout(self, ptr: int, owner: int, field: str,
                     layout: tuple[tuple[int, str, int, dict[int, str]], ...]) -> None: ...

    # -- end of a run: every thread has finished (end-of-run oracles: leaks) --
    def run_finished(self, rt: Any) -> None: ...


class Observers(Observer):
    """Fans each event out to several observers, in the order they were added. The dispatch
    functions are built when an observer is added, not on every event."""

    def __init__(self, observers: list[Observer]) -> None:
        self.observers: list[Observer] = []
        # event -> the bound methods of the observers that override it, in order added
        self._methods: dict[str, list[Any]] = {}
        for o in observers:
            self.add(o)

    def add(self, observer: Observer) -> None:
        # Only the events this observer overrides change (an execution installs a dozen
        # oracles, so rebuilding every event for each one was a tenth of a short run: issue 13).
        # A fan-out is made once per event, when its second observer comes: it iterates the
        # event's list, which later observers join in place (issue 13: a run installs a dozen).
        self.observers.append(observer)
        by_event = self._methods
        for name in _overridden(type(observer)):
            method = getattr(observer, name)
            methods = by_event.get(name)
            if methods is None:
                by_event[name] = [method]
                setattr(self, name, method)
            else:
                methods.append(method)
                if len(methods) == 2:
                    setattr(self, name, _fan_out(methods))


@functools.cache
def _overridden(cls: type) -> tuple[str, ...]:
    """The events `cls` overrides (a pure function of the class, so memoised)."""
    return tuple(n for n in _EVENTS if getattr(cls, n) is not getattr(Observer, n))


def _fan_out(methods):
    if not methods:
        return _ignore
    if len(methods) == 1:
        return methods[0]

    def fan_out(*args, **kwargs):
        for m in methods:
            m(*args, **kwargs)
    return fan_out


def _ignore(*args, **kwargs) -> None:
    pass


# Every event name: the public methods of Observer (computed when the module is imported,
# after every mechanism has added its methods above).
_EVENTS = tuple(n for n in vars(Observer) if not n.startswith("_"))
