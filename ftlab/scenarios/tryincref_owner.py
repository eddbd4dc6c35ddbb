"""The owner's fast path of try-incref raced with a free (issue 12 item 2): `_Py_TryIncrefFast`
inside `_Py_TryIncrefCompare`, when the thread reading a slot without a lock owns the object
(only its local count changes, non-atomically, and the slot is not re-checked).

- `tryincref-owner`: the owner makes an object `x` (`_Py_SetMaybeWeakref`) and publishes it in
  slot A (A's reference is the owner's local one). A second thread, the other, reads A without
  a lock (`_Py_XGetRef`: a shared reference) and publishes that reference in slot B. The owner
  takes A and drops its reference: its local count reaches 0 with the shared count at 1, so
  `_Py_MergeZeroLocalRefcount` gives up ownership (`ob_tid` = 0, then MERGED). The owner then
  reads B without a lock (`_Py_XGetRef`) and uses the object, while the other takes B and drops
  the last shared reference. (Before dropping its reference the owner reads A once: its own
  object, so `_Py_TryIncrefFast` succeeds on the local count.) Unmutated, the owner's `_Py_TryIncrefFast` fails (the object is no
  longer its own), `_Py_TryIncRefShared` counts the reference on the shared field, so whichever
  drop comes last deallocates; then the owner allocates an object of another size class.
  Mutation `merge-keeps-tid`: the merge does not clear `ob_tid`, the owner's fast path takes a
  local reference on a merged object, and the other's decrement to MERGED/0 frees it under the
  owner (`use-after-free`, or the refcount oracle's count mismatch).
"""

from __future__ import annotations

from dataclasses import dataclass

from ftlab.runtime.object import PyType, load_field, store_field
from ftlab.scenarios import Scenario
from ftlab.sim.atomics import SEQ_CST
from ftlab.sim.sync import Event
from ftlab.sim.violation import ViolationError

PAYLOAD = 32
ITEM = PyType("Item", basicsize=48)
OTHER = PyType("Other", basicsize=112)


@dataclass
class _Shared:
    slot_a: int
    slot_b: int
    published: Event    # the owner has stored x in A
    republished: Event  # the other has stored its reference in B
    merged: Event       # the owner has dropped its reference (x is merged)


def _setup(rt) -> None:
    m = rt.machine
    slots = rt.raw_calloc(16)
    rt.shared = _Shared(slot_a=slots, slot_b=slots + 8, published=Event(m, "published"),
                        republished=Event(m, "republished"), merged=Event(m, "merged"))


def _use(t, o: int) -> None:
    if load_field(t, o, PAYLOAD) != 1:
        raise ViolationError("check", f"{t.vt.label} reads an item at {o:#x} with no value")


async def _other(t) -> None:
    s = t.shared
    await t.wait(s.published)
    x = await t.xget_ref(s.slot_a)                 # a shared reference
    await t.mem.store(s.slot_b, x, 8, SEQ_CST)     # ... handed to slot B
    await s.republished.set()
    await t.wait(s.merged)
    x = await t.mem.exchange(s.slot_b, 0, 8, SEQ_CST)
    await t.decref(x)                              # the last shared reference, unless read


async def _owner(t) -> None:
    s = t.shared
    x = await t.new_object(ITEM)
    store_field(t, x, PAYLOAD, 1)
    await t.set_maybe_weakref(x)
    await t.mem.store(s.slot_a, x, 8, SEQ_CST)     # A holds the owner's (local) reference
    other = await t.spawn(_other, name="other")
    await s.published.set()
    await t.wait(s.republished)
    o = await t.xget_ref(s.slot_a)                 # its own object: the fast path, local + 1
    _use(t, o)
    await t.decref(o)
    await t.decref(await t.mem.exchange(s.slot_a, 0, 8, SEQ_CST))   # local 0: merged
    await s.merged.set()
    o = await t.xget_ref(s.slot_b)                 # the owner's fast path, if still its own
    if o:
        _use(t, o)
        await t.decref(o)
    y = await t.new_object(OTHER)                  # another size class: a fresh page
    await t.join(other)
    await t.decref(y)


SCENARIOS = [
    Scenario(
        name="tryincref-owner",
        description="the owner try-increfs its merged object through a slot while another "
                    "thread drops the last shared reference",
        threads=(("owner", _owner),),
        setup=_setup,
        mutations={"merge-keeps-tid": ("use-after-free", "refcount", "resurrection", "check",
                                       "data-race")},
        pct_steps=60,
        versions=("3.14",),     # reference counting is the same under every version policy
        # a Py_DEBUG build (mimalloc MI_DEBUG=2): its double-free and padding checks run on
        # every free here, with the other thread alive
        config={"pydebug": True},
    ),
]
