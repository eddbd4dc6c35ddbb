"""The `refcount`, `resurrection`, object `use-after-free` and `leak` oracles (DESIGN §5.1,
§5.2, §5.4, §5.7) over a ghost record of every object and of the strong references to it.

The ghost is kept from the runtime's object events (`ftlab.runtime.observer`), never from the
runtime's own data: each object has a count of the strong references that threads, containers
and BRC queues hold (one at creation; +1 for every incref or successful try-incref; -1 for
every decref; a decref that queues the object hands its reference to the queue, and the
queue's reference is given up by the merge with -1), and a life cycle

    live --(_Py_Dealloc)--> dying --(PyObject_Free)--> freed

Invariants, checked at every event of the object (each event follows its access in the same
step, so the fields and the ghost agree):

- `refcount`: ob_ref_local + (ob_ref_shared >> 2) equals the ghost count, except while a merge
  moves the local count into the shared field; ob_tid 0 implies MERGED (or immortal); MERGED is
  terminal; only the owner writes ob_ref_local, unless the owner has left the BRC table; the
  count never goes negative; an object is deallocated once, with no reference left.
- `use-after-free`: no thread touches an object that is dying (except the thread deallocating
  it) or freed; the only accesses allowed on a freed object are the header reads and the
  failing CAS of try-incref, which the runtime does not report.
- `resurrection`: try-incref never succeeds on a dying or freed object.
- `leak` (at the end of the run): every object created during the run has been freed; one
  whose count reached 0 without a deallocation is reported as such.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from ftlab.runtime import object as obj
from ftlab.runtime.observer import Observer
from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.runtime.pystate import Runtime, ThreadState

LIVE, DYING, FREED = "live", "dying", "freed"
# The reference events whose path writes ob_ref_local (Py_INCREF/Py_DECREF's owner path,
# _Py_TryIncrefFast): only the owner may take them.
_LOCAL_REF_PATHS = frozenset({"incref", "decref", "try-incref (owner)"})


class GhostObject:
    __slots__ = ("op", "size", "type_name", "immortal", "owner", "owner_tid", "count",
                 "queued", "state", "dealloc_by", "merging", "merged", "history", "created")

    def __init__(self, op: int, size: int, type_name: str, immortal: bool, owner: str,
                 owner_tid: int) -> None:
        self.op = op
        self.size = size
        self.type_name = type_name
        self.immortal = immortal
        self.owner = owner
        self.owner_tid = owner_tid
        self.count = 0 if immortal else 1
        self.queued = 0          # references held by BRC queues
        self.state = LIVE
        self.dealloc_by: str | None = None
        self.merging = 0         # merges in progress
        self.merged = False      # MERGED seen
        self.history: deque[str] = deque(maxlen=8)
        self.created = ""        # the creation note, kept when the history window moves on

    def describe(self) -> str:
        return f"{self.type_name} object at {self.op:#x} ({self.size} bytes, owner {self.owner})"


class RefcountOracle(Observer):
    """The ghost objects of one run and the oracles over them (see the module docstring)."""

    def __init__(self, rt: "Runtime") -> None:
        self.rt = rt
        self.mem = rt.mem
        self.machine = rt.machine
        self.live: dict[int, GhostObject] = {}
        self.freed: dict[int, GhostObject] = {}     # the last object freed at each address

    # -----------------------------------------------------------------------------------------
    # Installation

    @classmethod
    def install(cls, rt: "Runtime") -> "RefcountOracle":
        """Add the oracle to `rt` unless it is there already."""
        found = cls.find(rt)
        if found is None:
            found = cls(rt)
            rt.add_observer(found)
        return found

    @classmethod
    def find(cls, rt: "Runtime") -> "RefcountOracle | None":
        return rt.find_observer(cls)

    # -----------------------------------------------------------------------------------------
    # Events

    def object_created(self, t, op, size, type_name, immortal) -> None:
        old = self.live.get(op)
        if old is not None:
            self._fail("refcount", f"a new object at {op:#x} overlaps the live {old.describe()}",
                       old)
        g = GhostObject(op, size, type_name, immortal, self._who(t), t.tid if t else 0)
        self._note(g, t, "created" + (" (immortal)" if immortal else ""))
        g.created = g.history[0]
        self.live[op] = g

    def _owner_only(self, t, g, what: str) -> None:
        """Only the owner writes ob_ref_local while it is in the BRC table."""
        if (t.tid != g.owner_tid and not g.immortal
                and not self.rt.world_stopped       # the GC merges for suspended owners
                and self.rt.brc.find_thread_state(g.owner_tid) is not None):
            self._fail("refcount", f"{t.vt.label} writes ob_ref_local of the "
                       f"{g.describe()} while its owner is still running ({what})", g)

    def object_accessed(self, t, op, field) -> None:
        g = self._alive(t, op, field)
        if field.startswith("ob_ref_local"):
            self._owner_only(t, g, field)
        self._note(g, t, field)
        self._check(g)

    def ref_added(self, t, op, how) -> None:
        g = self.live.get(op)
        if g is None or (g.state == DYING and g.dealloc_by != t.vt.label):
            if how == "try-incref":
                self._resurrection(t, op, g)
            self._alive(t, op, how)                 # raises use-after-free
        if g.immortal:
            return
        if how in _LOCAL_REF_PATHS:
            self._owner_only(t, g, how)
        g.count += 1
        self._note(g, t, how)
        self._check(g)

    def ref_dropped(self, t, op, how) -> None:
        g = self._alive(t, op, how)
        if g.immortal:
            return
        if how in _LOCAL_REF_PATHS:
            self._owner_only(t, g, how)
        g.count -= 1
        self._note(g, t, how)
        if g.count < 0:
            self._fail("refcount", f"{t.vt.label} drops a reference to the {g.describe()} "
                       "that nobody holds (negative refcount)", g)
        self._check(g)

    def merge_started(self, t, op) -> None:
        g = self._alive(t, op, "merge")
        g.merging += 1
        self._note(g, t, "merge started")

    def object_queued(self, t, op) -> None:
        g = self._alive(t, op, "queue")
        g.queued += 1
        self._note(g, t, "queued to its owner's BRC queue")

    def merge_finished(self, t, op, extra) -> None:
        g = self._alive(t, op, "merge")
        g.merging -= 1
        g.count += extra
        if extra < 0:
            g.queued -= 1
        self._note(g, t, f"merged ({extra:+d})")
        if g.count < 0:
            self._fail("refcount", f"{t.vt.label} merges away a reference to the "
                       f"{g.describe()} that nobody holds (negative refcount)", g)
        self._check(g)

    def object_deallocating(self, t, op) -> None:
        g = self.live.get(op)
        if g is None:
            old = self.freed.get(op)
            what = f"the already freed {old.describe()}" if old else f"{op:#x}, not an object"
            self._fail("refcount", f"{t.vt.label} deallocates {what}", old)
        if g.state == DYING:
            self._fail("refcount", f"{t.vt.label} deallocates the {g.describe()}, which "
                       f"{g.dealloc_by} is already deallocating (deallocated twice)", g)
        if g.immortal:
            self._fail("refcount", f"{t.vt.label} deallocates the immortal {g.describe()}", g)
        if g.count != 0:
            self._fail("refcount", f"{t.vt.label} deallocates the {g.describe()} while "
                       f"{g.count} reference(s) to it are held", g)
        g.state = DYING
        g.dealloc_by = t.vt.label
        self._note(g, t, "dealloc")

    def object_freeing(self, t, op) -> None:
        g = self.live.get(op)
        if g is None or g.state != DYING or g.dealloc_by != t.vt.label:
            self._fail("refcount", f"{t.vt.label} frees the object at {op:#x} without "
                       "deallocating it first", g)
        self._note(g, t, "freed")
        g.state = FREED
        del self.live[op]
        self.freed[op] = g

    def run_finished(self, rt) -> None:
        for g in self.live.values():
            if not g.immortal:
                self._check(g)
        for g in self.live.values():
            if g.immortal:
                continue
            if g.count == 0:
                self._fail("leak", f"the {g.describe()} has no reference left but was never "
                           "deallocated", g)
            where = f" ({g.queued} in a BRC queue)" if g.queued else ""
            self._fail("leak", f"the {g.describe()} is still alive at the end of the run with "
                       f"{g.count} reference(s){where}", g)

    # -----------------------------------------------------------------------------------------
    # The checks

    def _alive(self, t: "ThreadState", op: int, what: str) -> GhostObject:
        """The ghost of the object `t` touches; a `use-after-free` violation if it is freed,
        or dying in another thread's deallocation, or no object at all."""
        g = self.live.get(op)
        if g is not None and (g.state == LIVE or g.dealloc_by == t.vt.label):
            return g
        who = t.vt.label
        if g is not None:
            self._fail("use-after-free", f"{who}: {what} of the {g.describe()}, which "
                       f"{g.dealloc_by} is deallocating", g)
        old = self.freed.get(op)
        if old is not None:
            self._fail("use-after-free", f"{who}: {what} of the freed {old.describe()}; "
                       f"{self._word(op)}", old)
        self._fail("use-after-free", f"{who}: {what} of {op:#x}, which is not an object; "
                   f"{self._word(op)}", None)

    def _resurrection(self, t: "ThreadState", op: int, g: GhostObject | None) -> None:
        g = g or self.freed.get(op)
        if g is None:
            self._fail("resurrection", f"{t.vt.label}: try-incref succeeded on {op:#x}, which "
                       f"is not an object; {self._word(op)}", None)
        state = "being deallocated" if g.state == DYING else "freed"
        _, local, shared = obj.header(self.mem, op) if self.mem.is_committed(op) else (0, 0, 0)
        self._fail("resurrection", f"{t.vt.label}: try-incref succeeded on the {g.describe()}, "
                   f"which is {state} by {g.dealloc_by} (ob_ref_local {local:#x}, "
                   f"ob_ref_shared {shared:#x} before the increment)", g)

    def _check(self, g: GhostObject) -> None:
        """Fields against the ghost (skipped while a merge moves the counts)."""
        if g.immortal or g.merging or g.state != LIVE:
            return
        tid, local, shared = obj.header(self.mem, g.op)
        state = shared & obj.REF_SHARED_FLAG_MASK
        true = local + obj.shared_count(shared)
        if true != g.count:
            self._fail("refcount", f"the {g.describe()} has refcount {true} (ob_ref_local "
                       f"{local}, ob_ref_shared {obj.shared_count(shared)}<<2|"
                       f"{obj.STATE_NAMES[state]}) but {g.count} reference(s) are held", g)
        if state == obj.REF_MERGED:
            g.merged = True
        elif g.merged:
            self._fail("refcount", f"the {g.describe()} left the MERGED state for "
                       f"{obj.STATE_NAMES[state]}", g)
        if tid == obj.UNOWNED_TID and state != obj.REF_MERGED:
            self._fail("refcount", f"the {g.describe()} has ob_tid 0 but is "
                       f"{obj.STATE_NAMES[state]}, not MERGED", g)

    # -----------------------------------------------------------------------------------------
    # Messages

    def _who(self, t: "ThreadState | None") -> str:
        return t.vt.label if t is not None else "set-up"

    def _note(self, g: GhostObject, t: "ThreadState | None", what: str) -> None:
        g.history.append(f"step {self.machine.steps} {self._who(t)}: {what}")

    def _word(self, addr: int) -> str:
        return f"the word there last held {self.mem.tag_of(addr).name}"

    def _fail(self, kind: str, message: str, g: GhostObject | None) -> None:
        details = tuple(g.history) if g is not None else ()
        if g is not None and g.created and g.created not in details:
            # the timeline's block story starts from the creation (report/timeline.py)
            details = (g.created, "…") + details
        raise ViolationError(kind, message, details)


def install(rt: "Runtime") -> RefcountOracle:
    return RefcountOracle.install(rt)
