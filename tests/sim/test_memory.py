"""Tests for ftlab.sim.memory: the simulated address space and its shadow tags."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftlab.sim.memory import OS_PAGE_SIZE, AddressSpace, Tag
from ftlab.sim.violation import ViolationError

SEG = 1 << 25
WIDTHS = (1, 2, 4, 8)


def load(mem: AddressSpace, addr: int, width: int) -> int:
    return getattr(mem, f"load_u{width * 8}")(addr)


def store(mem: AddressSpace, addr: int, width: int, value: int, tag: Tag = Tag.PAYLOAD) -> None:
    getattr(mem, f"store_u{width * 8}")(addr, value, tag)


@pytest.fixture
def mem() -> AddressSpace:
    return AddressSpace()


@pytest.fixture
def seg(mem: AddressSpace) -> int:
    """A 32 MiB region with its first 64 KiB committed."""
    base = mem.reserve(SEG)
    mem.commit(base, 16 * OS_PAGE_SIZE)
    return base


def segfault(addr: int) -> pytest.RaisesContext:
    return pytest.raises(ViolationError, match=re.escape(f"{addr:#x}"))


# ---------------------------------------------------------------------------------------------
# Loads and stores


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize(
    "offset", [0, 8, 3, OS_PAGE_SIZE - 1, OS_PAGE_SIZE - 3, OS_PAGE_SIZE - 5, 2 * OS_PAGE_SIZE - 8])
def test_every_width_round_trips_aligned_unaligned_and_page_crossing(
        mem: AddressSpace, seg: int, width: int, offset: int) -> None:
    value = 0x8877_6655_4433_2211 & ((1 << (8 * width)) - 1)
    addr = seg + offset
    store(mem, addr, width, value)
    assert load(mem, addr, width) == value
    assert mem.raw_load(addr, width) == value
    mem.raw_store(addr, width, value ^ 0x5A, Tag.META)
    assert load(mem, addr, width) == value ^ 0x5A


def test_page_crossing_store_lands_in_both_pages(mem: AddressSpace, seg: int) -> None:
    addr = seg + OS_PAGE_SIZE - 4
    mem.store_u64(addr, 0x0807_0605_0403_0201)
    assert mem.read_bytes(seg + OS_PAGE_SIZE - 4, 4) == bytes([1, 2, 3, 4])
    assert mem.read_bytes(seg + OS_PAGE_SIZE, 4) == bytes([5, 6, 7, 8])
    assert mem.load_u32(seg + OS_PAGE_SIZE) == 0x0807_0605


def test_byte_order_is_little_endian(mem: AddressSpace, seg: int) -> None:
    mem.store_u64(seg, 0x0102_0304_0506_0708)
    assert mem.read_bytes(seg, 8) == bytes([8, 7, 6, 5, 4, 3, 2, 1])
    assert mem.load_u8(seg) == 0x08
    assert mem.load_u16(seg) == 0x0708
    assert mem.load_u32(seg + 4) == 0x0102_0304


@pytest.mark.parametrize("offset", [0, 5, OS_PAGE_SIZE - 2])
def test_signed_loads(mem: AddressSpace, seg: int, offset: int) -> None:
    addr = seg + offset
    mem.store_u64(addr, 0xFFFF_FFFF_FFFF_FFFE)
    assert mem.load_i64(addr) == -2
    assert mem.load_i32(addr) == -2
    mem.store_u32(addr, 0x7FFF_FFFF)
    assert mem.load_i32(addr) == 0x7FFF_FFFF
    mem.store_u64(addr, 1 << 63)
    assert mem.load_i64(addr) == -(1 << 63)


@pytest.mark.parametrize("width", WIDTHS)
def test_stores_mask_to_width_so_negatives_are_twos_complement(
        mem: AddressSpace, seg: int, width: int) -> None:
    mem.store_u64(seg, 0xAAAA_AAAA_AAAA_AAAA)
    store(mem, seg, width, -1)
    assert load(mem, seg, width) == (1 << (8 * width)) - 1
    assert mem.read_bytes(seg + width, 8 - width) == b"\xaa" * (8 - width)
    store(mem, seg, width, (1 << 70) + 5)
    assert load(mem, seg, width) == 5
    mem.raw_store(seg, width, -3, Tag.META)
    assert mem.raw_load(seg, width) == (1 << (8 * width)) - 3


def test_read_write_bytes_and_fill(mem: AddressSpace, seg: int) -> None:
    data = bytes(range(256)) * 40                       # 10 KiB: three pages
    mem.write_bytes(seg + 100, data)
    assert mem.read_bytes(seg + 100, len(data)) == data
    mem.fill(seg + 50, 2 * OS_PAGE_SIZE, 0xDD)          # overwrites the start of data
    assert mem.read_bytes(seg + 50, 2 * OS_PAGE_SIZE) == b"\xdd" * (2 * OS_PAGE_SIZE)
    assert mem.load_u8(seg + 49) == 0
    rest = seg + 50 + 2 * OS_PAGE_SIZE
    assert mem.read_bytes(rest, 4) == data[rest - (seg + 100):][:4]
    assert mem.read_bytes(seg, 0) == b""
    with pytest.raises(ValueError):
        mem.read_bytes(seg, -1)


# ---------------------------------------------------------------------------------------------
# Commit, decommit, release and segfaults


def test_committed_memory_reads_zero_and_recommit_zeroes_again(mem: AddressSpace, seg: int) -> None:
    assert mem.load_u64(seg + 64) == 0
    assert mem.tag_of(seg + 64) is Tag.UNINIT
    mem.store_u64(seg + 64, 123)
    mem.commit(seg, OS_PAGE_SIZE)                       # already committed: contents kept
    assert mem.load_u64(seg + 64) == 123
    mem.decommit(seg, OS_PAGE_SIZE)
    assert not mem.is_committed(seg)
    mem.commit(seg, OS_PAGE_SIZE)
    assert mem.is_committed(seg)
    assert mem.load_u64(seg + 64) == 0
    assert mem.tag_of(seg + 64) is Tag.UNINIT


def test_unmapped_access_is_a_segfault(mem: AddressSpace) -> None:
    with pytest.raises(ViolationError) as e:
        mem.store_u32(0x10, 1)
    assert e.value.kind == "segfault"
    assert e.value.message == "store of 4 bytes at 0x10: unmapped"
    with segfault(0x7F00_0000_0000):
        mem.load_u8(0x7F00_0000_0000)
    with segfault(-8):
        mem.load_u64(-8)


def test_reserved_but_uncommitted_access_is_a_segfault(mem: AddressSpace, seg: int) -> None:
    addr = seg + 16 * OS_PAGE_SIZE
    with segfault(addr) as e:
        mem.load_u64(addr)
    assert "uncommitted page of region" in e.value.message
    assert f"{seg:#x}+{SEG:#x}" in e.value.message


def test_decommitted_access_is_a_segfault_naming_region(mem: AddressSpace) -> None:
    base = mem.reserve(SEG)
    assert base == 0x7F00_0000_0000
    base = mem.reserve(SEG)
    mem.commit(base, 0x20000)
    mem.decommit(base + 0x10000, 0x10000)
    with pytest.raises(ViolationError) as e:
        mem.load_u64(base + 0x10000)
    assert e.value.message == (
        "load of 8 bytes at 0x7f0002010000: decommitted page of region 0x7f0002000000+0x2000000")


def test_released_region_access_is_unmapped(mem: AddressSpace, seg: int) -> None:
    mem.store_u64(seg, 1)
    mem.release(seg)
    with segfault(seg) as e:
        mem.load_u64(seg)
    assert "unmapped" in e.value.message
    assert mem.region_of(seg) is None
    assert not mem.is_committed(seg)
    assert mem.reserve(SEG) != seg                      # addresses are never reused
    with pytest.raises(ValueError):
        mem.release(seg)


def test_page_crossing_access_faults_on_second_page_and_writes_nothing(
        mem: AddressSpace, seg: int) -> None:
    last = seg + 16 * OS_PAGE_SIZE - 4                  # last committed page ends 4 bytes later
    mem.store_u32(last, 0x11223344)
    with pytest.raises(ViolationError) as e:
        mem.store_u64(last, -1)
    assert f"at {last:#x}" in e.value.message
    assert f"(at {last + 4:#x})" in e.value.message
    assert mem.load_u32(last) == 0x11223344
    with pytest.raises(ViolationError):
        mem.fill(last, 8, 0)
    with pytest.raises(ViolationError):
        mem.read_bytes(last, 5)


def test_commit_must_be_page_aligned_and_inside_one_region(mem: AddressSpace, seg: int) -> None:
    with pytest.raises(AssertionError):
        mem.commit(seg + 1, OS_PAGE_SIZE)
    with pytest.raises(ValueError):
        mem.commit(seg + SEG - OS_PAGE_SIZE, 2 * OS_PAGE_SIZE)
    with pytest.raises(ValueError):
        mem.decommit(0x1000, OS_PAGE_SIZE)


def test_region_of_and_reserve_alignment(mem: AddressSpace) -> None:
    a = mem.reserve(100)
    assert a % SEG == 0
    assert mem.region_of(a + 99) == (a, OS_PAGE_SIZE)   # rounded up to an OS page
    assert mem.region_of(a + OS_PAGE_SIZE) is None
    b = mem.reserve(OS_PAGE_SIZE, align=OS_PAGE_SIZE)
    assert b == a + OS_PAGE_SIZE
    c = mem.reserve(3 * OS_PAGE_SIZE, align=1 << 16)
    assert c % (1 << 16) == 0 and c > b
    d = mem.reserve(1 << 26, align=1 << 26)
    assert d % (1 << 26) == 0
    for base, size in ((a, OS_PAGE_SIZE), (b, OS_PAGE_SIZE), (c, 3 * OS_PAGE_SIZE), (d, 1 << 26)):
        assert mem.region_of(base) == (base, size)
        assert mem.region_of(base + size - 1) == (base, size)
    assert mem.region_of(b + OS_PAGE_SIZE) is None       # the gap before c
    mem.release(b)
    assert mem.region_of(b) is None
    assert mem.region_of(a) == (a, OS_PAGE_SIZE)
    assert mem.region_of(c) == (c, 3 * OS_PAGE_SIZE)
    with pytest.raises(ValueError):
        mem.reserve(OS_PAGE_SIZE, align=3 * OS_PAGE_SIZE)


def test_small_regions_sharing_a_chunk_are_told_apart(mem: AddressSpace) -> None:
    bases = [mem.reserve(OS_PAGE_SIZE, align=OS_PAGE_SIZE) for _ in range(5)]
    for i, b in enumerate(bases):
        mem.commit(b, OS_PAGE_SIZE)
        mem.store_u64(b, i)
    mem.release(bases[2])
    with segfault(bases[2]) as e:
        mem.load_u64(bases[2])
    assert "released region" in e.value.message
    assert [mem.load_u64(b) for i, b in enumerate(bases) if i != 2] == [0, 1, 3, 4]
    mem.check_invariants()


# ---------------------------------------------------------------------------------------------
# Shadow tags


def test_stores_tag_every_word_they_touch(mem: AddressSpace, seg: int) -> None:
    mem.store_u64(seg, 1, Tag.META)
    assert mem.tags(seg, 16) == [Tag.META, Tag.UNINIT]
    mem.store_u32(seg + 4, 1, Tag.HEADER)               # partial word retags the whole word
    assert mem.tag_of(seg) is Tag.HEADER
    mem.store_u16(seg + 7, 1, Tag.FREE_LINK)            # straddles two words
    assert mem.tags(seg, 16) == [Tag.FREE_LINK, Tag.FREE_LINK]
    mem.store_u8(seg + 16, 1, Tag.DEBUG_PAD)
    assert mem.tags(seg + 16, 8) == [Tag.DEBUG_PAD]
    mem.store_u64(seg + 28, 1)                          # unaligned u64: two words
    assert mem.tags(seg + 24, 16) == [Tag.PAYLOAD, Tag.PAYLOAD]
    mem.raw_store(seg + 40, 8, 1, Tag.META)
    assert mem.tag_of(seg + 47) is Tag.META
    mem.raw_store(seg + 54, 4, 1, Tag.HEADER)           # unaligned raw store: two words
    assert mem.tags(seg + 48, 16) == [Tag.HEADER, Tag.HEADER]


def test_page_crossing_store_tags_both_pages(mem: AddressSpace, seg: int) -> None:
    addr = seg + OS_PAGE_SIZE - 4
    mem.store_u64(addr, 1, Tag.HEADER)
    assert mem.tags(addr - 4, 16) == [Tag.HEADER, Tag.HEADER]
    assert mem.tag_of(addr - 8) is Tag.UNINIT
    assert mem.tag_of(seg + OS_PAGE_SIZE + 8) is Tag.UNINIT


def test_fill_and_write_bytes_tag_words(mem: AddressSpace, seg: int) -> None:
    mem.fill(seg + 4, 20, 0xCD, Tag.DEBUG_FILL)         # words 0..2
    assert mem.tags(seg, 32) == [Tag.DEBUG_FILL] * 3 + [Tag.UNINIT]
    addr = seg + OS_PAGE_SIZE - 12
    mem.write_bytes(addr, b"x" * 24, Tag.FREE_LINK)     # crosses into the next page
    assert mem.tags(addr, 24) == [Tag.FREE_LINK] * 4
    assert mem.tag_of(addr - 8) is Tag.UNINIT
    assert mem.tag_of(addr + 28) is Tag.UNINIT         # addr + 24 shares the last word
    big = 3 * OS_PAGE_SIZE
    mem.fill(seg + 8 * OS_PAGE_SIZE, big, 0, Tag.META)
    assert set(mem.tags(seg + 8 * OS_PAGE_SIZE, big)) == {Tag.META}
    assert len(mem.tags(seg + 8 * OS_PAGE_SIZE, big)) == big // 8


def test_tags_are_not_accesses(mem: AddressSpace, seg: int) -> None:
    calls: list[tuple[int, int, bool]] = []
    mem.on_plain_access = lambda *a: calls.append(a)
    assert mem.tag_of(0x10) is Tag.UNINIT               # unmapped: no fault
    assert mem.tags(seg + 20 * OS_PAGE_SIZE, 8) == [Tag.UNINIT]
    assert calls == []
    assert mem.backed_bytes == 0


# ---------------------------------------------------------------------------------------------
# The plain-access hook


def test_on_plain_access_sees_every_plain_access_before_it_happens(
        mem: AddressSpace, seg: int) -> None:
    calls: list[tuple[int, int, bool]] = []
    mem.on_plain_access = lambda addr, width, is_write: calls.append((addr, width, is_write))
    for w in WIDTHS:
        store(mem, seg + 8, w, 1)
        load(mem, seg + 8, w)
    mem.load_i32(seg + 1)
    mem.load_i64(seg + OS_PAGE_SIZE - 2)
    mem.write_bytes(seg, b"abc")
    mem.read_bytes(seg, 5)
    mem.fill(seg, 7, 0)
    assert calls == [
        (seg + 8, 1, True), (seg + 8, 1, False), (seg + 8, 2, True), (seg + 8, 2, False),
        (seg + 8, 4, True), (seg + 8, 4, False), (seg + 8, 8, True), (seg + 8, 8, False),
        (seg + 1, 4, False), (seg + OS_PAGE_SIZE - 2, 8, False),
        (seg, 3, True), (seg, 5, False), (seg, 7, True),
    ]
    calls.clear()
    with pytest.raises(ViolationError):                 # called before the faulting access
        mem.load_u64(0x10)
    assert calls == [(0x10, 8, False)]


def test_raw_access_does_not_call_the_hook(mem: AddressSpace, seg: int) -> None:
    calls: list[tuple[int, int, bool]] = []
    mem.on_plain_access = lambda *a: calls.append(a)
    for w in WIDTHS:
        mem.raw_store(seg + 8, w, 7, Tag.META)
        assert mem.raw_load(seg + 8, w) == 7
        mem.raw_store(seg + OS_PAGE_SIZE - 1, w, 7, Tag.META)
        assert mem.raw_load(seg + OS_PAGE_SIZE - 1, w) == 7
    assert calls == []


# ---------------------------------------------------------------------------------------------
# Statistics


def test_statistics(mem: AddressSpace) -> None:
    base = mem.reserve(SEG)
    assert mem.reserved_bytes == SEG
    assert mem.committed_bytes == 0 and mem.backed_bytes == 0
    mem.commit(base, 64 * 1024)
    assert mem.committed_bytes == 64 * 1024
    assert mem.backed_bytes == 0
    mem.store_u64(base + 100, 1)
    mem.load_u64(base + 200)
    assert mem.backed_bytes == OS_PAGE_SIZE
    mem.load_u8(base + OS_PAGE_SIZE)                    # a load backs a page too
    assert mem.backed_bytes == 2 * OS_PAGE_SIZE
    mem.commit(base, 128 * 1024)                        # overlaps: counts each page once
    assert mem.committed_bytes == 128 * 1024
    mem.decommit(base, 96 * 1024)
    assert mem.committed_bytes == 32 * 1024
    assert mem.backed_bytes == 0
    assert mem.peak_committed_bytes == 128 * 1024
    mem.decommit(base, 96 * 1024)                       # decommitting twice is harmless
    assert mem.committed_bytes == 32 * 1024
    other = mem.reserve(SEG)
    mem.commit(other, SEG)
    assert mem.committed_bytes == 32 * 1024 + SEG
    mem.release(base)
    assert mem.reserved_bytes == SEG
    assert mem.committed_bytes == SEG
    assert mem.peak_committed_bytes == 32 * 1024 + SEG
    mem.check_invariants()


# ---------------------------------------------------------------------------------------------
# Against a reference model

PAGES = 3
# Offsets anywhere in the window, with extra weight on the bytes around page boundaries.
_offsets = st.one_of(
    st.integers(0, PAGES * OS_PAGE_SIZE - 1),
    st.builds(lambda page, delta: max(0, page * OS_PAGE_SIZE + delta),
              st.integers(1, PAGES - 1), st.integers(-12, 11)),
)
_ops = st.one_of(
    st.tuples(st.just("store"), _offsets, st.sampled_from(WIDTHS),
              st.integers(-(1 << 63), (1 << 64) - 1), st.sampled_from(list(Tag))),
    st.tuples(st.just("load"), _offsets, st.sampled_from(WIDTHS)),
    st.tuples(st.just("store+load"), _offsets, st.sampled_from(WIDTHS),
              st.integers(-(1 << 63), (1 << 64) - 1), st.sampled_from(list(Tag))),
    st.tuples(st.just("write"), _offsets,
              st.binary(min_size=1, max_size=40), st.sampled_from(list(Tag))),
    st.tuples(st.just("fill"), _offsets, st.integers(1, 40),
              st.integers(0, 255)),
    st.tuples(st.just("commit"), st.integers(0, PAGES - 1)),
    st.tuples(st.just("decommit"), st.integers(0, PAGES - 1)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_ops, min_size=5, max_size=60))
def test_matches_a_dict_of_bytes_reference_model(ops: list[tuple]) -> None:
    mem = AddressSpace()
    base = mem.reserve(SEG)
    ref: dict[int, int] = {}            # offset -> byte, committed pages only
    ref_tags: dict[int, Tag] = {}       # word offset -> tag
    mem.commit(base, 2 * OS_PAGE_SIZE)
    committed: set[int] = {0, 1}

    def ok(off: int, n: int) -> bool:
        return all(p in committed for p in range(off // OS_PAGE_SIZE, (off + n - 1) // OS_PAGE_SIZE + 1))

    def put(off: int, data: bytes, tag: Tag) -> None:
        for i, b in enumerate(data):
            ref[off + i] = b
            ref_tags[(off + i) // 8] = tag

    for op in ops:
        kind, off = op[0], op[1]
        if kind in ("commit", "decommit"):
            page = off
            if kind == "commit":
                mem.commit(base + page * OS_PAGE_SIZE, OS_PAGE_SIZE)
                committed.add(page)
            else:
                mem.decommit(base + page * OS_PAGE_SIZE, OS_PAGE_SIZE)
                committed.discard(page)
                for o in range(page * OS_PAGE_SIZE, (page + 1) * OS_PAGE_SIZE):
                    ref.pop(o, None)
                    ref_tags.pop(o // 8, None)
            continue
        if kind in ("store", "store+load"):
            _, _, width, value, tag = op
            n, data = width, (value % (1 << (8 * width))).to_bytes(width, "little")
        elif kind == "write":
            _, _, data, tag = op
            n = len(data)
        elif kind == "fill":
            _, _, n, byte = op
            data, tag = bytes([byte]) * n, Tag.DEBUG_FILL
        else:
            n = op[2]
        addr = base + off
        if not ok(off, n):
            with pytest.raises(ViolationError, match="segfault"):
                if kind == "load":
                    load(mem, addr, n)
                elif kind in ("store", "store+load"):
                    store(mem, addr, n, op[3], op[4])
                elif kind == "write":
                    mem.write_bytes(addr, data, tag)
                else:
                    mem.fill(addr, n, op[3], tag)
            continue
        if kind == "load":
            expect = int.from_bytes(bytes(ref.get(off + i, 0) for i in range(n)), "little")
            assert load(mem, addr, n) == expect
            assert mem.raw_load(addr, n) == expect
        elif kind in ("store", "store+load"):
            store(mem, addr, n, op[3], tag)
            put(off, data, tag)
            if kind == "store+load":
                assert load(mem, addr, n) == int.from_bytes(data, "little")
                assert mem.raw_load(addr, n) == int.from_bytes(data, "little")
        elif kind == "write":
            mem.write_bytes(addr, data, tag)
            put(off, data, tag)
        else:
            mem.fill(addr, n, op[3], tag)
            put(off, data, tag)

    for page in committed:
        lo = page * OS_PAGE_SIZE
        assert mem.read_bytes(base + lo, OS_PAGE_SIZE) == bytes(
            ref.get(lo + i, 0) for i in range(OS_PAGE_SIZE))
        assert mem.tags(base + lo, OS_PAGE_SIZE) == [
            ref_tags.get(lo // 8 + w, Tag.UNINIT) for w in range(OS_PAGE_SIZE // 8)]
    assert mem.committed_bytes == len(committed) * OS_PAGE_SIZE
    mem.check_invariants()
