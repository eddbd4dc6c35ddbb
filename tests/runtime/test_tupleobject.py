"""Tuples (ftlab.runtime.tupleobject): layout, traverse, dealloc drops the items."""

from __future__ import annotations

import pytest

from ftlab.check.refcount import install
from ftlab.runtime import Runtime
from ftlab.runtime.object import GC_BITS_TRACKED, OB_GC_BITS, PyType, refcnt
from ftlab.runtime.tupleobject import (
    OB_ITEM, OB_SIZE, TUPLE, tuple_get_item, tuple_new, tuple_set_item, tupletraverse,
)

ITEM = PyType("Item", basicsize=48)


def test_layout_is_a_var_object():
    assert (OB_SIZE, OB_ITEM) == (32, 40)
    assert TUPLE.gc and not TUPLE.preheader and TUPLE.traverse is tupletraverse
    assert TUPLE.tp_clear is None, "tuples have no tp_clear"


def test_tuple_holds_items_and_dealloc_drops_them():
    seen = {}

    async def main(t):
        a = await t.new_object(ITEM)
        b = await t.new_object(ITEM)
        tup = await tuple_new(t, 3)
        seen["tracked"] = t.mem.load_u8(tup + OB_GC_BITS) & GC_BITS_TRACKED
        seen["size"] = t.mem.load_u64(tup + OB_SIZE)
        await t.incref(a)
        tuple_set_item(t, tup, 0, a)            # steals the new reference
        tuple_set_item(t, tup, 2, b)            # steals our only reference to b
        seen["children"] = tupletraverse(t.mem, tup)
        seen["get"] = (tuple_get_item(t, tup, 0), tuple_get_item(t, tup, 1))
        seen["ab"] = (a, b)
        seen["rc_a"] = refcnt(t.mem, a)
        with pytest.raises(IndexError):
            tuple_get_item(t, tup, 3)
        await t.decref(tup)                     # frees tup and b, a keeps our reference
        seen["rc_a_after"] = refcnt(t.mem, a)
        await t.decref(a)

    rt = Runtime()
    install(rt)
    rt.run_main(main)
    a, b = seen["ab"]
    assert seen["tracked"] and seen["size"] == 3
    assert seen["children"] == [a, b]
    assert seen["get"] == (a, 0)
    assert (seen["rc_a"], seen["rc_a_after"]) == (2, 1)
    assert rt.stats["objects_deallocated"] == 3
