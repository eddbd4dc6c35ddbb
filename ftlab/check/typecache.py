"""Oracle `type-cache` (DESIGN §5.9): a type attribute lookup never returns a value that was
not the attribute's value at some moment during the lookup (no torn cache entry).

Ghost state: each type's own attributes and its MRO, as the runtime reports them
(`type_attr_set`, `type_mro_set`). The attribute's value at a moment is the first definition
along the MRO then. A lookup in progress (`type_lookup_started`) collects the values its
(type, name) takes from its start to its end: the value at the start, and the value after
every change reported while it runs. `type_lookup_finished` checks the result is one of them.

Under the c11 memory model (ftlab/sim/c11.py) a reader with no happens-before edge to a
change may still read the value before it, so there the admissible values also include every
earlier value of the (type, name) pair: a stale value is allowed, a torn one (a value the
attribute never had, such as another entry's) is not.

The message says which wrong value came back, since the bugs differ: an earlier value of this
attribute (stale: e.g. a cache entry validated by a version published before its value,
`type-cache-version-first`), another attribute's value (a torn entry: one entry's name and
version with another's value, `type-cache-no-seqlock`), "not found" while the attribute was
defined, or a value no attribute ever had.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ftlab.runtime.observer import Observer
from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.runtime.pystate import Runtime, ThreadState


class TypeCacheOracle(Observer):
    def __init__(self) -> None:
        self.attrs: dict[int, dict[int, int]] = {}
        self.mro: dict[int, list[int]] = {}
        # thread -> (type, name, admissible values)
        self.active: dict[object, tuple[int, int, set[int]]] = {}
        self.lookups_checked = 0
        # c11 memory model: (type, name) -> every value it has had (None under SC)
        self.history: dict[tuple[int, int], set[int]] | None = None
        # value -> the (type, name) pairs it was ever assigned to, to explain a violation
        self.assigned: dict[int, set[tuple[int, int]]] = {}

    @classmethod
    def install(cls, rt: "Runtime") -> "TypeCacheOracle":
        found = rt.find_observer(cls)
        if found is not None:
            return found
        oracle = cls()
        if rt.config.memory_model == "c11":
            oracle.history = {}
        rt.add_observer(oracle)
        return oracle

    def value(self, tp: int, name: int) -> int:
        for base in self.mro.get(tp, [tp]):
            v = self.attrs.get(base, {}).get(name, 0)
            if v:
                return v
        return 0

    def _changed(self) -> None:
        for tp, name, seen in self.active.values():
            seen.add(self.value(tp, name))
        if self.history is not None:
            for (tp, name), had in self.history.items():
                had.add(self.value(tp, name))

    def type_attr_set(self, t, tp: int, name: int, value: int) -> None:
        self.attrs.setdefault(tp, {})[name] = value
        if value:
            self.assigned.setdefault(value, set()).add((tp, name))
        self._changed()

    def type_mro_set(self, t, tp: int, mro: list[int]) -> None:
        self.mro[tp] = list(mro)
        self._changed()

    def type_lookup_started(self, t: "ThreadState", tp: int, name: int) -> None:
        if self.history is not None:
            had = self.history.setdefault((tp, name), {self.value(tp, name)})
            self.active[t] = (tp, name, set(had))
            return
        self.active[t] = (tp, name, {self.value(tp, name)})

    def type_lookup_finished(self, t: "ThreadState", tp: int, name: int, value: int) -> None:
        _, _, seen = self.active.pop(t)
        self.lookups_checked += 1
        if value not in seen:
            was = ", ".join(f"{v:#x}" for v in sorted(seen))
            raise ViolationError(
                "type-cache",
                f"{t.name} looked up attribute {name:#x} of type {tp:#x} and got {value:#x}, "
                f"which it never held during the lookup (it held: {was}): "
                f"{self._explain(tp, name, value)}")

    def _explain(self, tp: int, name: int, value: int) -> str:
        if value == 0:
            return "the lookup said not found while the attribute was defined"
        pairs = sorted(self.assigned.get(value, ()))
        mro = self.mro.get(tp, [tp])
        same = [owner for owner, n in pairs if n == name and owner in mro]
        if same:
            return (f"a stale value, this attribute's value (defined on type {same[0]:#x}) "
                    f"before it was replaced or shadowed, which happened before the lookup "
                    f"started")
        if pairs:
            owner, other = pairs[0]
            return (f"the value of attribute {other:#x} of type {owner:#x}: a torn cache "
                    f"entry (one attribute's name and version paired with another's value)")
        return "a value no type attribute was ever assigned"


def install(rt: "Runtime") -> None:
    TypeCacheOracle.install(rt)
