"""Dicts (ftlab.runtime.dictobject): the table layout and growth, lookups, PyDict_SetDefaultRef's
-1/0/1 contract with the refcount of every returned reference checked by the refcount oracle's
ghost state, shared marking, and which resizes free the old keys through QSBR."""

from __future__ import annotations

import pytest

from ftlab.check.refcount import install
from ftlab.config import Config
from ftlab.runtime import Runtime
from ftlab.runtime import dictobject as dt
from ftlab.runtime.typeobject import intern
from ftlab.runtime.object import REF_MAYBE_WEAKREF, OB_REF_SHARED, PyType, refcnt

ITEM = PyType("Item", basicsize=48)


def run(main, config: Config | None = None):
    rt = Runtime(config or Config())
    oracle = install(rt)
    rt.run_main(main)
    return rt, oracle


def test_layout_and_growth():
    assert (dt.MA_USED, dt.MA_KEYS, dt.SIZEOF_DICT) == (32, 48, 64)
    assert dt.USABLE_FRACTION(8) == 5
    assert dt.calculate_log2_keysize(dt.GROWTH_RATE(5)) == 4       # 8 slots -> 16
    assert dt.keys_size(3) == 32 + 8 + 16 * 5


def test_setitem_and_lookups_through_two_resizes():
    seen = {}

    async def main(t):
        keys = [intern(t.rt, f"k{i}") for i in range(12)]
        mp = await dt.dict_new(t)
        vals = []
        for k in keys:
            v = await t.new_object(ITEM)
            vals.append(v)
            await dt.setitem(t, mp, k, v)
        seen["log2"] = t.mem.load_u8(t.mem.load_u64(mp + dt.MA_KEYS) + dt.DK_LOG2_SIZE)
        got = [await dt.getitem_ref(t, mp, k) for k in keys]
        seen["all"] = got == vals
        seen["rc"] = [refcnt(t.mem, v) for v in vals]          # ours, the dict's, the get's
        for v in got:
            await t.decref(v)
        seen["absent"] = await dt.getitem_ref(t, mp, intern(t.rt, "nope"))
        seen["traverse"] = dt.dict_traverse(t.mem, mp) == vals
        await t.decref(mp)
        seen["after"] = [refcnt(t.mem, v) for v in vals]
        for v in vals:
            await t.decref(v)

    rt, _ = run(main)
    assert seen["log2"] == 5                # 8 -> 16 at the 6th key, -> 32 at the 11th
    assert seen["all"] and seen["traverse"]
    assert seen["rc"] == [3] * 12 and seen["after"] == [1] * 12
    assert seen["absent"] == 0
    assert rt.stats["delayed_queued"] == 0, "an unshared dict frees its old keys at once"


def test_setdefault_ref_contract_and_refcounts():
    seen = {}

    async def main(t):
        k = intern(t.rt, "k")
        mp = await dt.dict_new(t)
        default = await t.new_object(ITEM)
        rc, result = await dt.setdefault_ref(t, mp, k, default)
        # inserted: a new reference to default; the caller's own is not consumed
        seen["insert"] = (rc, result == default, refcnt(t.mem, default))   # ours+dict+result
        await t.decref(result)
        other = await t.new_object(ITEM)
        rc, result = await dt.setdefault_ref(t, mp, k, other)
        # present: the dict is unchanged, a new reference to the existing value
        seen["present"] = (rc, result == default, refcnt(t.mem, default), refcnt(t.mem, other))
        await t.decref(result)
        rc, result = await dt.setdefault_ref(t, mp, k, other, want_result=False)
        seen["no_result"] = (rc, result, refcnt(t.mem, default))
        # not a dict: -1 and a NULL result, nothing touched
        rc, result = await dt.setdefault_ref(t, other, k, default)
        seen["error"] = (rc, result, refcnt(t.mem, default), refcnt(t.mem, other))
        # the borrowed variant takes no reference
        seen["borrowed"] = (await dt.setdefault(t, mp, k, other) == default,
                            refcnt(t.mem, default))
        await t.decref(mp)
        seen["end"] = refcnt(t.mem, default)
        await t.decref(default)
        await t.decref(other)

    rt, oracle = run(main)
    assert seen["insert"] == (0, True, 3)
    assert seen["present"] == (1, True, 3, 1)
    assert seen["no_result"] == (1, 0, 2)
    assert seen["error"] == (-1, 0, 2, 1)
    assert seen["borrowed"] == (True, 2)
    assert seen["end"] == 1
    assert rt.stats["objects_deallocated"] == 3       # both items and the dict: no leak


def test_a_foreign_read_marks_the_dict_shared_and_the_next_resize_frees_through_qsbr():
    seen = {}

    async def reader(t, mp, key):
        v = await dt.getitem_ref(t, mp, key)
        seen["shared_after_read"] = dt.is_dict_shared(t.mem, mp)
        # the value's shared field was 0: the lock-free try-incref refused it and the locked
        # path's _Py_NewRefWithLock set MAYBE_WEAKREF and added one shared reference
        seen["value_shared"] = t.mem.peek(v + OB_REF_SHARED, 8)
        await t.decref(v)

    async def main(t):
        keys = [intern(t.rt, f"k{i}") for i in range(6)]
        mp = await dt.dict_new(t)
        v0 = await t.new_object(ITEM)
        await dt.setitem(t, mp, keys[0], v0)
        seen["shared_before"] = dt.is_dict_shared(t.mem, mp)
        other = await t.spawn(reader, mp, keys[0])
        await t.join(other)
        for k in keys[1:]:                  # the 6th key resizes the shared dict
            await dt.setitem(t, mp, k, v0)
        await t.decref(mp)
        await t.decref(v0)

    rt, _ = run(main)
    assert seen["shared_before"] is False and seen["shared_after_read"] is True
    assert seen["value_shared"] == 4 | REF_MAYBE_WEAKREF
    assert rt.stats["delayed_queued"] == 1


def test_dict_keys_freed_at_once_skips_the_delayed_free():
    async def reader(t, mp, key):
        await t.decref(await dt.getitem_ref(t, mp, key))

    async def main(t):
        keys = [intern(t.rt, f"k{i}") for i in range(6)]
        mp = await dt.dict_new(t)
        v0 = await t.new_object(ITEM)
        await dt.setitem(t, mp, keys[0], v0)
        await t.join(await t.spawn(reader, mp, keys[0]))
        for k in keys[1:]:
            await dt.setitem(t, mp, k, v0)
        await t.decref(mp)
        await t.decref(v0)

    rt, _ = run(main, Config(mutations=frozenset({"dict-keys-freed-at-once"})))
    assert rt.stats["delayed_queued"] == 0


@pytest.mark.parametrize("mutation", [None, "borrowed-setdefault"])
def test_setdefault_release_matches_what_setdefault_ref_returned(mutation):
    async def main(t):
        k = intern(t.rt, "k")
        mp = await dt.dict_new(t)
        d = await t.new_object(ITEM)
        _, v = await dt.setdefault_ref(t, mp, k, d)
        await dt.setdefault_release(t, v)
        await t.decref(d)
        await t.decref(mp)

    config = Config(mutations=frozenset({mutation} if mutation else set()))
    rt, _ = run(main, config)
    assert rt.stats["objects_deallocated"] == 2       # the refcount oracle saw no imbalance
