"""Lists (ftlab.runtime.listobject): resize, traverse, clear and dealloc drop the items, the
old array is freed at once or through QSBR depending on the shared bit."""

from __future__ import annotations

from ftlab.check.refcount import install
from ftlab.runtime import Runtime
from ftlab.runtime.listobject import (
    ALLOCATED, LIST, OB_ITEM, OB_SIZE, is_list_shared, list_append, list_clear, list_clear_slot,
    list_getitem, list_new, list_setitem, list_traverse, new_allocated,
)
from ftlab.runtime.object import PyType, refcnt

ITEM = PyType("Item", basicsize=48)


def run(main):
    rt = Runtime()
    install(rt)
    rt.run_main(main)
    return rt


def test_layout_and_growth_pattern():
    assert (OB_SIZE, OB_ITEM, ALLOCATED) == (32, 40, 48)
    sizes, alloc = [], 0
    for n in range(1, 30):
        if n > alloc:
            alloc = new_allocated(n, n - 1)
            sizes.append(alloc)
    assert sizes == [4, 8, 16, 24, 32]      # listobject.c: 0, 4, 8, 16, 24, 32, 40, ...
    assert LIST.tp_clear is list_clear_slot and LIST.traverse is list_traverse


def test_append_resize_setitem_and_dealloc_drop_items():
    seen = {}

    async def main(t):
        lst = await list_new(t)
        items = []
        for _ in range(5):                  # resizes at 1 and 5
            o = await t.new_object(ITEM)
            await t.incref(o)
            items.append(o)
            await list_append(t, lst, o)
        seen["alloc"] = t.mem.load_u64(lst + ALLOCATED)
        seen["children"] = list_traverse(t.mem, lst)
        seen["items"] = list(items)
        seen["shared"] = is_list_shared(t.mem, lst)
        repl = await t.new_object(ITEM)
        await list_setitem(t, lst, 0, repl)      # drops the list's reference to items[0]
        seen["rc0"] = refcnt(t.mem, items[0])
        seen["get0"] = list_getitem(t, lst, 0) == repl
        await t.decref(lst)                 # list_dealloc drops the rest
        seen["rc"] = [refcnt(t.mem, o) for o in items]
        for o in items:
            await t.decref(o)

    rt = run(main)
    assert seen["alloc"] == 8
    assert seen["children"] == seen["items"]
    assert not seen["shared"], "the owner's resizes do not mark the list shared"
    assert seen["rc0"] == 1 and seen["get0"]
    assert seen["rc"] == [1] * 5
    assert rt.stats["objects_deallocated"] == 7


def test_clear_unlinks_then_drops_items():
    seen = {}

    async def main(t):
        lst = await list_new(t)
        o = await t.new_object(ITEM)
        await list_append(t, lst, o)
        await list_clear(t, lst)
        seen["after"] = (t.mem.load_u64(lst + OB_SIZE), t.mem.load_u64(lst + OB_ITEM))
        await t.decref(lst)

    rt = run(main)
    assert seen["after"] == (0, 0)
    assert rt.stats["objects_deallocated"] == 2


def test_resize_by_a_non_owner_marks_the_list_shared_and_delays_the_free():
    seen = {}

    async def other(t, lst):
        o = await t.new_object(ITEM)
        await list_append(t, lst, o)        # needs a resize: 0 -> 4
        seen["shared"] = is_list_shared(t.mem, lst)
        seen["queued"] = len(t.mem_free_queue)

    async def main(t):
        lst = await list_new(t, 1)          # one NULL item, capacity 1
        await t.join(await t.spawn(other, lst))
        seen["children"] = len(list_traverse(t.mem, lst))
        await t.decref(lst)

    run(main)
    assert seen["shared"] and seen["queued"] == 1
    assert seen["children"] == 1


def test_clear_by_a_non_owner_is_a_resize_and_tp_clear_frees_at_once():
    # listobject.c: list.clear() is list_clear_impl(a, is_resize=1), which shares the list
    # and frees through QSBR; tp_clear (list_clear_slot, an unreachable list) frees at once
    seen = {}

    async def other(t, lst, slot):
        await list_clear(t, lst)
        seen["shared"] = is_list_shared(t.mem, lst)
        seen["queued"] = len(t.mem_free_queue)
        await list_clear_slot(t, slot)
        seen["queued_after_slot"] = len(t.mem_free_queue)

    async def main(t):
        lst = await list_new(t)
        slot = await list_new(t)
        for target in (lst, slot):
            await list_append(t, target, await t.new_object(ITEM))
        await t.join(await t.spawn(other, lst, slot))
        await t.decref(lst)
        await t.decref(slot)

    run(main)
    assert seen["shared"] and seen["queued"] == 1
    assert seen["queued_after_slot"] == 1, "tp_clear frees the array at once"
