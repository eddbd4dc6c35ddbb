"""The PEP 445 debug hooks (ftlab.runtime.obmalloc_debug) with the free-threaded rule that
keeps a freed object's ob_tid / ob_ref_local / ob_ref_shared, and the two bugs of PR #116018."""

from __future__ import annotations

import pytest

from ftlab import Config
from ftlab.runtime import Runtime
from ftlab.runtime import obmalloc_debug as dbg
from ftlab.runtime import object as obj
from ftlab.runtime.mimalloc.types import HeapTag
from ftlab.runtime.object import PyType
from ftlab.sim.violation import ViolationError

PLAIN = PyType("Plain", basicsize=48)
GC_PRE = PyType("GCPre", basicsize=48, gc=True, preheader=True)
DEBUG = Config(debug_allocator=True)


def run(fn, mutations=()):
    rt = Runtime(Config(debug_allocator=True, mutations=frozenset(mutations)))
    return rt.run_main(fn)


@pytest.mark.parametrize("debug", [True, False])
def test_debug_offsets_of_the_four_heaps(debug):
    assert [dbg.heap_debug_offset(tag, True) for tag in HeapTag] == [0, 40, 40, 56]
    assert [dbg.heap_debug_offset(tag, False) for tag in HeapTag] == [0, 24, 24, 40]
    seen = []

    async def main(t):
        seen.extend(h.debug_offset for h in t.mimalloc.heaps)

    Runtime(Config(debug_allocator=debug)).run_main(main)
    assert seen == [dbg.heap_debug_offset(tag, debug) for tag in HeapTag]


def test_block_layout_size_id_pads_and_clean_bytes():
    seen = {}

    async def main(t):
        p = await t.object_malloc(48)
        seen["head"] = t.mem.read_bytes(p - 16, 16)
        seen["data"] = t.mem.read_bytes(p, 48)
        seen["tail"] = t.mem.read_bytes(p + 48, 8)
        await t.object_free(p)

    run(main)
    assert seen["head"] == (48).to_bytes(8, "big") + b"o" + b"\xfd" * 7
    # the first debug_offset - 16 = 24 bytes (up to ob_type) are not filled
    assert seen["data"] == bytes(24) + b"\xcd" * 24
    assert seen["tail"] == b"\xfd" * 8


@pytest.mark.parametrize("tp,kept", [(PLAIN, 24), (GC_PRE, 40)])
def test_free_fills_deadbyte_but_keeps_the_refcount_fields(tp, kept):
    seen = {}

    async def main(t):
        o = await t.new_object(tp)
        seen["o"] = o
        seen["before"] = obj.header(t.mem, o)
        await t.decref(o)
        data = o - tp.presize
        seen["head"] = t.mem.read_bytes(data - 16, 16)
        seen["kept"] = t.mem.read_bytes(data, kept)
        seen["rest"] = t.mem.read_bytes(data + kept, tp.presize + tp.basicsize + 8 - kept)
        seen["after"] = obj.header(t.mem, o)
        seen["freed"] = dbg.object_is_freed(t.mem, o)

    run(main)
    # the size word became the allocator's free-list link; the id word stays DEADBYTE
    assert seen["head"][8:] == b"\xdd" * 8
    assert set(seen["rest"]) == {0xDD}                 # ob_type onwards and the trailing pad
    assert 0xDD not in seen["kept"][-16:]              # ob_ref_local and ob_ref_shared
    assert seen["before"][1:] == (1, 0) and seen["after"][1:] == (0, 0)   # dead: local 0, shared 0
    assert seen["freed"]                               # ob_type reads DEADBYTE


def test_debug_fill_header_overwrites_the_refcount_fields():
    seen = {}

    async def main(t):
        o = await t.new_object(PLAIN)
        await t.decref(o)
        seen["after"] = obj.header(t.mem, o)

    run(main, ["debug-fill-header"])
    assert seen["after"] == (0xDDDD_DDDD_DDDD_DDDD, 0xDDDD_DDDD, 0xDDDD_DDDD_DDDD_DDDD)


@pytest.mark.parametrize("tp", [PLAIN, GC_PRE])
def test_debug_offset_bug_leaves_ob_type_so_a_freed_object_does_not_read_as_freed(tp):
    seen = {}

    async def main(t):
        o = await t.new_object(tp)
        type_object = t.mem.load_u64(o + obj.OB_TYPE)
        await t.decref(o)
        seen["type kept"] = t.mem.load_u64(o + obj.OB_TYPE) == type_object
        seen["freed"] = dbg.object_is_freed(t.mem, o)
        seen["header"] = obj.header(t.mem, o)[1:]

    run(main, ["debug-offset-bug"])
    assert seen == {"type kept": True, "freed": False, "header": (0, 0)}


def test_debug_dealloc_heap_bug_overwrites_a_gc_pre_objects_refcount_fields():
    seen = {}

    async def main(t):
        for tp in (PLAIN, GC_PRE):
            o = await t.new_object(tp)
            await t.set_maybe_weakref(o)
            await t.decref(o)
            seen[tp.name] = obj.header(t.mem, o)[1:]

    run(main, ["debug-dealloc-heap-bug"])
    # OBJECT heap: the current object heap is the right one; GC_PRE: 16 bytes too early
    assert seen["Plain"] == (0, obj.REF_MERGED)
    assert seen["GCPre"] == (0xDDDD_DDDD, 0xDDDD_DDDD_DDDD_DDDD)


def test_freeing_with_another_api_is_a_bad_id():
    async def main(t):
        p = await t.object_malloc(32)
        await dbg.debug_free(t, dbg.API_MEM, p, obj._object_mi_free)

    with pytest.raises(ViolationError) as e:
        run(main)
    assert e.value.kind == "invalid-free"
    assert "bad ID: Allocated using API 'o', verified using API 'm'" in e.value.message
    assert e.value.details[0].endswith("API 'o'")


def test_an_overrun_damages_the_trailing_pad_and_is_caught_on_free():
    async def main(t):
        p = await t.object_malloc(32)
        t.mem.store_u8(p + 32, 0)                   # one byte past the end
        await t.object_free(p)

    with pytest.raises(ViolationError) as e:
        run(main)
    assert e.value.kind == "invalid-free"
    assert "bad trailing pad byte" in e.value.message
    assert any("not all FORBIDDENBYTE: 00 fd" in d for d in e.value.details)


def test_an_underrun_damages_the_leading_pad():
    async def main(t):
        p = await t.object_malloc(32)
        t.mem.store_u8(p - 1, 0)
        await t.object_free(p)

    with pytest.raises(ViolationError) as e:
        run(main)
    assert "bad leading pad byte" in e.value.message


def test_is_ptr_freed_recognises_the_fill_patterns():
    assert dbg.is_ptr_freed(0)
    for byte in (0xCD, 0xDD, 0xFD):
        assert dbg.is_ptr_freed(int.from_bytes(bytes([byte]) * 8, "little"))
    assert not dbg.is_ptr_freed(0x7F00_0000_1000)


def test_without_the_debug_allocator_no_words_surround_the_block():
    seen = {}

    async def main(t):
        p = await t.object_malloc(48)
        q = await t.object_malloc(48)
        seen["gap"] = q - p
        await t.object_free(p)
        await t.object_free(q)

    Runtime().run_main(main)
    assert seen["gap"] == 48


def test_the_hooks_need_an_attached_thread_state():
    async def main(t):
        await t.detach()
        await t.object_malloc(16)

    with pytest.raises(ViolationError) as e:
        run(main)
    assert "without an active thread state" in e.value.message
