"""Tuples: `Objects/tupleobject.c` (the parts the GC and the type machinery need).

A tuple is a variable-size GC object (`PyTupleObject`, a `PyVarObject`) in the GC heap (no
pre-header in the free-threaded build: tuples have no managed dict or weakref slot):

    +0  PyObject header (object.py)
    +32 ob_size      i64  number of items, fixed at creation
    +40 ob_item[n]   u64  strong references (NULL until set)

`tuple_new` (`PyTuple_New` / `tuple_alloc`) allocates it with `_PyObject_GC_NewVar` and tracks
it; `tuple_set_item` is `PyTuple_SET_ITEM`, which *steals* the caller's reference (so the
reference the caller held is now the tuple's: no refcount change, no event);
`tuple_get_item` is `PyTuple_GET_ITEM`, a borrowed read. Items are only written while the
tuple is being built by the thread that created it, before anyone else can see it, so plain
stores are enough (CPython relies on the same: a tuple is immutable once published).

`tupletraverse` lists the non-NULL items; tuples have no `tp_clear` (a cycle through a tuple is
broken by clearing its other members). `tupledealloc` untracks the tuple and drops its items
from the last to the first (`Py_XDECREF` of each), then frees the block. The 3.14 free list of
small tuples is not modelled: every tuple is freed to mimalloc.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ftlab.runtime.object import (
    SIZEOF_PYOBJECT,
    PyType,
    gc_track,
    gc_untrack,
    load_field,
    new_object,
    store_field,
)

if TYPE_CHECKING:
    from ftlab.runtime.pystate import ThreadState

OB_SIZE = SIZEOF_PYOBJECT               # PyVarObject.ob_size
OB_ITEM = SIZEOF_PYOBJECT + 8           # PyTupleObject.ob_item[0]
TUPLE_BASICSIZE = OB_ITEM               # sizeof(PyTupleObject) - sizeof(PyObject *)
ITEMSIZE = 8


def tuple_size(mem, op: int) -> int:
    """`PyTuple_GET_SIZE` (a plain read; the size never changes)."""
    return mem.load_u64(op + OB_SIZE)


def tupletraverse(mem, op: int) -> list[int]:
    """`tupletraverse`: the items that are not NULL, in order."""
    n = mem.load_u64(op + OB_SIZE)
    children = []
    for i in range(n):
        item = mem.load_u64(op + OB_ITEM + i * ITEMSIZE)
        if item:
            children.append(item)
    return children


async def tupledealloc(t: "ThreadState", op: int) -> None:
    """The body of `tupledealloc` before the block is freed: untrack, then `Py_XDECREF` each
    item from the last to the first."""
    gc_untrack(t, op)
    n = load_field(t, op, OB_SIZE)
    for i in reversed(range(n)):
        item = load_field(t, op, OB_ITEM + i * ITEMSIZE)
        if item:
            await t.decref(item)


TUPLE = PyType("tuple", basicsize=TUPLE_BASICSIZE, gc=True, clear=tupledealloc,
               traverse=tupletraverse)


async def tuple_new(t: "ThreadState", n: int) -> int:
    """`PyTuple_New(n)`: a tracked tuple of `n` NULL items, owned by `t` with one reference."""
    op = await new_object(t, TUPLE, TUPLE_BASICSIZE + n * ITEMSIZE)
    mem = t.mem
    mem.store_u64(op + OB_SIZE, n)
    for i in range(n):
        mem.store_u64(op + OB_ITEM + i * ITEMSIZE, 0)
    gc_track(t, op)
    return op


def _check_index(t: "ThreadState", op: int, i: int) -> None:
    n = t.mem.load_u64(op + OB_SIZE)
    if not 0 <= i < n:
        raise IndexError(f"tuple index {i} out of range for a tuple of {n} items")


def tuple_set_item(t: "ThreadState", op: int, i: int, item: int) -> None:
    """`PyTuple_SET_ITEM`: store `item` in slot `i`, stealing the caller's reference. Only
    while the tuple is being built (the slot must be NULL)."""
    _check_index(t, op, i)
    assert load_field(t, op, OB_ITEM + i * ITEMSIZE) == 0, \
        "PyTuple_SET_ITEM on a slot that already holds a reference (it would leak)"
    store_field(t, op, OB_ITEM + i * ITEMSIZE, item)


def tuple_get_item(t: "ThreadState", op: int, i: int) -> int:
    """`PyTuple_GET_ITEM`: the item in slot `i`, a borrowed reference (0 for NULL)."""
    _check_index(t, op, i)
    return load_field(t, op, OB_ITEM + i * ITEMSIZE)
