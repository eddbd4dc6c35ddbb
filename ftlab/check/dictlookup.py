"""Oracle `dict-lookup` (DESIGN §5.9, the type-cache invariant for a dict's lock-free read): a
lookup (`getitem_ref`, `_Py_dict_lookup_threadsafe` and its locked fallback) never returns an
object that was not the key's value at some moment during the lookup.

Values are compared as objects, not addresses: a value freed during the lookup and whose
address a new object then took is another object. Ghost state: each dict's values as the
runtime reports them under the dict's critical section (`dict_value_set`, `dict_emptied`) and,
per address, how many objects were created there (`object_created`): an object is (address,
incarnation). A lookup in progress (`dict_lookup_started`) collects the objects its key holds
from its start to its end; `dict_lookup_finished` checks that the object at the returned
address now is one of them. This is what `dict-lookup-no-keys-recheck` breaks: the try-incref
on a stale table's slot succeeds on a new object at the old value's address.

Under the c11 memory model a reader with no happens-before edge to a store may still see the
value before it, so there every earlier value of the key is admissible too (stale is allowed,
another object is not).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ftlab.runtime.observer import Observer
from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.runtime.pystate import Runtime, ThreadState

Obj = tuple[int, int]           # (address, incarnation); (0, 0) for "absent"


class DictLookupOracle(Observer):
    def __init__(self) -> None:
        self.born: dict[int, int] = {}
        self.values: dict[int, dict[int, Obj]] = {}
        # thread -> (dict, key, admissible objects)
        self.active: dict[object, tuple[int, int, set[Obj]]] = {}
        self.lookups_checked = 0
        # c11 memory model: (dict, key) -> every object it has held (None under SC)
        self.history: dict[tuple[int, int], set[Obj]] | None = None

    @classmethod
    def install(cls, rt: "Runtime") -> "DictLookupOracle":
        found = rt.find_observer(cls)
        if found is not None:
            return found
        oracle = cls()
        if rt.config.memory_model == "c11":
            oracle.history = {}
        rt.add_observer(oracle)
        return oracle

    def _obj(self, op: int) -> Obj:
        return (op, self.born.get(op, 0)) if op else (0, 0)

    def _value(self, mp: int, key: int) -> Obj:
        return self.values.get(mp, {}).get(key, (0, 0))

    def _changed(self, mp: int) -> None:
        for d, key, seen in self.active.values():
            if d == mp:
                seen.add(self._value(d, key))
        if self.history is not None:
            for (d, key), had in self.history.items():
                if d == mp:
                    had.add(self._value(d, key))

    def object_created(self, t, op: int, size: int, type_name: str, immortal: bool) -> None:
        self.born[op] = self.born.get(op, 0) + 1
        if op in self.values:           # a new dict at a dead one's address starts empty
            self.dict_emptied(t, op)

    def dict_value_set(self, t, mp: int, key: int, value: int) -> None:
        self.values.setdefault(mp, {})[key] = self._obj(value)
        self._changed(mp)

    def dict_emptied(self, t, mp: int) -> None:
        self.values.pop(mp, None)
        self._changed(mp)

    def dict_lookup_started(self, t: "ThreadState", mp: int, key: int) -> None:
        now = self._value(mp, key)
        if self.history is not None:
            had = self.history.setdefault((mp, key), {now})
            self.active[t] = (mp, key, set(had))
            return
        self.active[t] = (mp, key, {now})

    def dict_lookup_finished(self, t: "ThreadState", mp: int, key: int, value: int) -> None:
        _, _, seen = self.active.pop(t)
        self.lookups_checked += 1
        got = self._obj(value)
        if got in seen:
            return
        if value == 0:
            what = "not found, although the key was present throughout the lookup"
        elif any(addr == value for addr, _ in seen):
            what = (f"an object created at {value:#x} after the key's value there was freed "
                    f"(the same address, another object)")
        else:
            what = "an object that was never the key's value during the lookup"
        raise ViolationError(
            "dict-lookup",
            f"{t.name} looked up key {key:#x} of dict {mp:#x} and got {value:#x}: {what}")


def install(rt: "Runtime") -> None:
    DictLookupOracle.install(rt)
