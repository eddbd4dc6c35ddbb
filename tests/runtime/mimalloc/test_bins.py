"""Size classes, page geometry and usable sizes (`ftlab/runtime/mimalloc/bins.py`, `types.py`).

Three kinds of evidence:
* the worked examples of the reference note (reference/mimalloc.md §2, §3, §4.5, §5.4, §6);
* an independent re-derivation of `mi_bin` / `mi_good_size`, written differently from the
  model (string bit-twiddling, and "smallest bin that holds the size"), exhaustively up to
  200 000 and with hypothesis above;
* `data/mimalloc_v212_sizes.json`, measured on the real mimalloc v2.1.2 built in a release
  and an `MI_DEBUG=2` configuration: every size 0..300 000 plus large and huge sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftlab.runtime import mimalloc
from ftlab.runtime.mimalloc import types
from ftlab.runtime.mimalloc.bins import (
    bin_index,
    bin_index_generic,
    bin_size,
    good_size,
    os_good_alloc_size,
    page_block_size,
    page_kind,
    page_reserved,
    page_size,
    page_start_offset,
    usable_size,
    wsize_from_size,
)
from ftlab.runtime.mimalloc.types import (
    MI_BIN_FULL,
    MI_BIN_HUGE,
    MI_LARGE_OBJ_SIZE_MAX,
    MI_MEDIUM_OBJ_SIZE_MAX,
    PYDEBUG_BUILD,
    RELEASE_BUILD,
    HeapTag,
    MiBuild,
    MiDelayed,
    MiPageKind,
    MiSegmentKind,
)

KiB = 1024
MiB = 1024 * KiB
SMALL, MEDIUM, LARGE, HUGE = (
    MiPageKind.MI_PAGE_SMALL,
    MiPageKind.MI_PAGE_MEDIUM,
    MiPageKind.MI_PAGE_LARGE,
    MiPageKind.MI_PAGE_HUGE,
)
EXHAUSTIVE_LIMIT = 200_000

DATA = json.loads((Path(__file__).parent / "data" / "mimalloc_v212_sizes.json").read_text())
BUILDS = {"release": RELEASE_BUILD, "debug": PYDEBUG_BUILD}


# --------------------------------------------------------------------------------------------
# Independent re-derivations (deliberately not the model's code)
# --------------------------------------------------------------------------------------------


def reference_bin(size: int) -> int:
    """mi_bin from the note's §6.1 prose, with the bit scan done on the binary string."""
    w = -(-size // 8)
    if w <= 1:
        return 1
    if w <= 8:
        return w + (w % 2)
    if w > 16384:
        return 73
    bits = format(w - 1, "b")  # '1xy...': the leading 1 and the two bits below it
    return 4 * (len(bits) - 1) + int(bits[1:3], 2) - 3


# Bins some size maps to on 64-bit, with the real library's block sizes.
_MEASURED_BIN_SIZES = DATA["bin_block_sizes"]
_REACHABLE_BINS = [1, 2, 4, 6, 8, *range(9, 53)]


def smallest_bin_holding(size: int) -> int:
    """mi_bin as a search: the first reachable bin whose (measured) block size holds `size`."""
    if size > 131072:
        return 73
    return next(b for b in _REACHABLE_BINS if _MEASURED_BIN_SIZES[b] >= max(size, 1))


def reference_good_size(size: int) -> int:
    if size <= 131072:
        return _MEASURED_BIN_SIZES[reference_bin(size)]
    return -(-size // 4096) * 4096


# --------------------------------------------------------------------------------------------
# Constants and build flags
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MI_INTPTR_SIZE", 8),
        ("MI_SEGMENT_SLICE_SHIFT", 16),
        ("MI_SEGMENT_SLICE_SIZE", 64 * KiB),
        ("MI_SEGMENT_SHIFT", 25),
        ("MI_SEGMENT_SIZE", 32 * MiB),
        ("MI_SEGMENT_MASK", 32 * MiB - 1),
        ("MI_SLICES_PER_SEGMENT", 512),
        ("MI_SMALL_PAGE_SIZE", 64 * KiB),
        ("MI_MEDIUM_PAGE_SIZE", 512 * KiB),
        ("MI_SMALL_SIZE_MAX", 1024),
        ("MI_SMALL_WSIZE_MAX", 128),
        ("MI_SMALL_OBJ_SIZE_MAX", 16 * KiB),
        ("MI_MEDIUM_OBJ_SIZE_MAX", 128 * KiB),
        ("MI_MEDIUM_OBJ_WSIZE_MAX", 16384),
        ("MI_LARGE_OBJ_SIZE_MAX", 16 * MiB),
        ("MI_ALIGNMENT_MAX", 16 * MiB),
        ("MI_MAX_SLICE_OFFSET", 255),
        ("MI_BIN_HUGE", 73),
        ("MI_BIN_FULL", 74),
        ("MI_HUGE_BLOCK_SIZE", 2 * 1024 * MiB),
        ("MI_MAX_ALIGN_SIZE", 16),
        ("MI_MAX_ALIGN_GUARANTEE", 128),
        ("MI_SEGMENT_BIN_MAX", 35),
        ("MI_RETIRE_CYCLES", 16),
        ("MI_MAX_RETIRE_SIZE", 128 * KiB),
        ("MI_MAX_EXTEND_SIZE", 4096),
        ("MI_MIN_EXTEND", 4),
        ("MI_MIN_SLICES", 2),
        ("MI_MAX_SLICE_SHIFT", 6),
        ("MI_COMMIT_MASK_FIELD_COUNT", 8),
        ("MI_ARENA_BLOCK_SIZE", 32 * MiB),
        ("MI_ARENA_MIN_OBJ_SIZE", 16 * MiB),
    ],
)
def test_constant_matches_reference_note(name: str, value: int) -> None:
    assert getattr(types, name) == value


@pytest.mark.parametrize(("name", "value"), sorted(DATA["constants"].items()))
def test_constant_matches_real_build(name: str, value: int) -> None:
    assert getattr(types, name) == value


def test_enums_have_mimalloc_and_cpython_values() -> None:
    assert [int(k) for k in (SMALL, MEDIUM, LARGE, HUGE)] == [0, 1, 2, 3]
    assert [int(s) for s in MiSegmentKind] == [0, 1]
    assert [(d.name, int(d)) for d in MiDelayed] == [
        ("MI_USE_DELAYED_FREE", 0),
        ("MI_DELAYED_FREEING", 1),
        ("MI_NO_DELAYED_FREE", 2),
        ("MI_NEVER_DELAYED_FREE", 3),
    ]
    tags = [(t.name, int(t)) for t in HeapTag]
    assert tags == [("MEM", 0), ("OBJECT", 1), ("GC", 2), ("GC_PRE", 3)]
    assert types.HEAP_TAG_COUNT == 4


def test_release_build_has_no_padding() -> None:
    b = RELEASE_BUILD
    assert (b.debug, b.padding, b.padding_check, b.encode_freelist) == (0, False, False, False)
    assert b.padding_size == 0
    assert (b.pages_direct, b.stat) == (129, 0)


def test_pydebug_build_pads_every_block_by_one_word() -> None:
    b = PYDEBUG_BUILD
    assert (b.debug, b.padding, b.padding_check, b.encode_freelist) == (2, True, True, True)
    assert b.padding_size == 8
    assert (b.pages_direct, b.stat) == (130, 2)
    assert MiBuild(debug=1).padding_size == 8  # early 3.13 development used MI_DEBUG 1


def test_build_is_frozen_and_checked() -> None:
    with pytest.raises(AttributeError):
        RELEASE_BUILD.debug = 2  # type: ignore[misc]
    with pytest.raises(ValueError):
        MiBuild(debug=4)


def test_free_threaded_struct_sizes() -> None:
    # reference §2 / §17: the FT page drops the padding word and gains qsbr_node + qsbr_goal.
    assert RELEASE_BUILD.sizeof_page() == 96
    assert PYDEBUG_BUILD.sizeof_page() == 112
    assert RELEASE_BUILD.sizeof_segment() == 49512
    assert PYDEBUG_BUILD.sizeof_segment() == 57720
    assert RELEASE_BUILD.sizeof_page(free_threaded=False) == 80  # CPython GIL build = upstream
    assert RELEASE_BUILD.segment_info_slices() == PYDEBUG_BUILD.segment_info_slices() == 1


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_upstream_struct_sizes_match_real_build(name: str) -> None:
    build, measured = BUILDS[name], DATA["builds"][name]
    assert build.debug == measured["MI_DEBUG"]
    assert build.padding_size == measured["MI_PADDING_SIZE"]
    assert build.pages_direct == measured["MI_PAGES_DIRECT"]
    # Upstream has no qsbr fields, so it has the layout of CPython's GIL build.
    assert build.sizeof_page(free_threaded=False) == measured["sizeof_mi_page_t"]
    assert build.sizeof_segment(free_threaded=False) == measured["sizeof_mi_segment_t"]
    # CPython's three extra heap bytes fit in the tail padding.
    assert build.sizeof_heap() == measured["sizeof_mi_heap_t"]


def test_package_reexports() -> None:
    assert mimalloc.bin_index is bin_index
    assert mimalloc.good_size is good_size
    assert mimalloc.bin_size is bin_size
    assert mimalloc.usable_size is usable_size


# --------------------------------------------------------------------------------------------
# Bins: worked examples
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "bin_"),
    [
        (0, 1), (1, 1), (8, 1),
        (9, 2), (16, 2),
        (17, 4), (24, 4), (32, 4),  # 3 words rounds up to 4: bin 3 is never used
        (33, 6), (48, 6),
        (49, 8), (64, 8),
        (65, 9), (80, 9), (81, 10), (96, 10), (112, 11), (128, 12),
        (129, 13), (160, 13), (161, 14), (256, 16), (257, 17),
        (1024, 24), (1025, 25),
        (4096, 32), (4097, 33),
        (16384, 40), (16385, 41),
        (65536, 48), (65537, 49),
        (131064, 52), (131072, 52), (131073, 73), (131080, 73),
        (16 * MiB, 73), (16 * MiB + 1, 73), (2**40, 73),
    ],
)
def test_bin_boundaries(size: int, bin_: int) -> None:
    assert bin_index(size) == bin_
    assert bin_index_generic(size) == bin_


@pytest.mark.parametrize(
    ("bins_", "sizes"),
    [
        ((1, 2, 4, 6, 8), (8, 16, 32, 48, 64)),
        ((9, 10, 11, 12), (80, 96, 112, 128)),
        ((13, 14, 15, 16), (160, 192, 224, 256)),
        ((21, 22, 23, 24), (640, 768, 896, 1024)),
        ((37, 38, 39, 40), (10240, 12288, 14336, 16384)),
        ((49, 50, 51, 52), (81920, 98304, 114688, 131072)),
        ((53, 72), (160 * KiB, 4 * MiB)),  # table entries no size reaches on 64-bit
        ((73, 74), (131080, 131088)),  # the huge and full queues' tags
        ((0,), (8,)),
    ],
)
def test_bin_block_sizes(bins_: tuple[int, ...], sizes: tuple[int, ...]) -> None:
    assert tuple(bin_size(b) for b in bins_) == sizes


def test_bin_block_sizes_match_real_build() -> None:
    assert [bin_size(b) for b in range(MI_BIN_FULL + 1)] == DATA["bin_block_sizes"]


def test_odd_small_bins_and_wide_bins_are_unreachable() -> None:
    reached = {bin_index(n) for n in range(0, MI_MEDIUM_OBJ_SIZE_MAX + 2)}
    assert reached == set(_REACHABLE_BINS) | {MI_BIN_HUGE}


# --------------------------------------------------------------------------------------------
# Bins: independent re-derivation and properties
# --------------------------------------------------------------------------------------------


def test_bin_index_equals_rederivation_exhaustively() -> None:
    for n in range(EXHAUSTIVE_LIMIT + 1):
        expected = reference_bin(n)
        assert bin_index(n) == expected, n
        assert bin_index_generic(n) == expected, n
        assert smallest_bin_holding(n) == expected, n


def test_good_size_equals_rederivation_exhaustively() -> None:
    for n in range(EXHAUSTIVE_LIMIT + 1):
        assert good_size(n) == reference_good_size(n), n


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=0, max_value=2**40))
def test_bin_and_good_size_equal_rederivation_at_any_size(n: int) -> None:
    assert bin_index(n) == bin_index_generic(n) == reference_bin(n)
    assert good_size(n) == reference_good_size(n)


def test_bin_index_is_monotonic_and_its_block_holds_the_size() -> None:
    previous = 0
    for n in range(EXHAUSTIVE_LIMIT + 1):
        b = bin_index(n)
        assert b >= previous, n
        previous = b
        if b != MI_BIN_HUGE:
            assert bin_size(b) >= wsize_from_size(n) * 8, n


def test_good_size_is_a_fixed_point_of_the_bin() -> None:
    for n in range(EXHAUSTIVE_LIMIT + 1):
        g = good_size(n)
        assert g >= n, n
        assert bin_index(g) == bin_index(n), n
        assert good_size(g) == g, n


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=MI_MEDIUM_OBJ_SIZE_MAX + 1, max_value=2**40))
def test_sizes_above_medium_are_huge_bin(n: int) -> None:
    assert bin_index(n) == MI_BIN_HUGE
    g = good_size(n)
    assert n <= g < n + 4096 and g % 4096 == 0
    assert bin_index(g) == MI_BIN_HUGE


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=MI_LARGE_OBJ_SIZE_MAX + 1, max_value=2**40))
def test_sizes_above_large_are_huge_bin_and_huge_pages(n: int) -> None:
    assert bin_index(n) == MI_BIN_HUGE
    assert page_kind(os_good_alloc_size(n)) == HUGE
    assert page_block_size(n, RELEASE_BUILD) >= n


# --------------------------------------------------------------------------------------------
# Good sizes, page kinds and geometry: worked examples
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "good"),
    [
        (0, 8), (1, 8), (8, 8), (9, 16), (100, 112), (1000, 1024),
        (128 * KiB - 1, 128 * KiB), (128 * KiB, 128 * KiB),
        (128 * KiB + 1, 132 * KiB), (131080, 135168), (132 * KiB, 132 * KiB),
        (16 * MiB - 1, 16 * MiB), (16 * MiB, 16 * MiB), (16 * MiB + 1, 16 * MiB + 4 * KiB),
    ],
)
def test_good_size_around_128k_and_16m(size: int, good: int) -> None:
    assert good_size(size) == good


@pytest.mark.parametrize(
    ("size", "good"),
    [
        (1, 4096), (4096, 4096), (512 * KiB - 1, 512 * KiB), (512 * KiB + 1, 576 * KiB),
        (2 * MiB + 1, 2 * MiB + 256 * KiB), (8 * MiB + 1, 9 * MiB), (32 * MiB + 1, 36 * MiB),
    ],
)
def test_os_good_alloc_size(size: int, good: int) -> None:
    assert os_good_alloc_size(size) == good


@pytest.mark.parametrize(
    ("block_size", "kind", "size"),
    [
        (8, SMALL, 64 * KiB),
        (1024, SMALL, 64 * KiB),
        (16 * KiB, SMALL, 64 * KiB),
        (20 * KiB, MEDIUM, 512 * KiB),
        (128 * KiB, MEDIUM, 512 * KiB),
        (132 * KiB, LARGE, 192 * KiB),  # 131080 B -> os good size 135168 -> 3 slices
        (512 * KiB, LARGE, 512 * KiB),
        (516 * KiB, LARGE, 1 * MiB),  # over 512 KiB: rounded to 512 KiB
        (16 * MiB, LARGE, 16 * MiB),
        (17 * MiB, HUGE, 17 * MiB),
        (36 * MiB, HUGE, 36 * MiB),
    ],
)
def test_page_kind_and_page_size(block_size: int, kind: MiPageKind, size: int) -> None:
    assert page_kind(block_size) == kind
    assert page_size(block_size) == size


@pytest.mark.parametrize(
    ("block_size", "offset", "reserved"),
    [
        (8, 24, 8189),
        (16, 48, 4093),
        (48, 144, 1362),
        (64, 192, 1021),
        (80, 80, 818),
        (512, 512, 127),
        (640, 0, 102),
        (896, 0, 73),
        (4096, 0, 16),
        (16 * KiB, 0, 4),
        (98304, 0, 5),
        (128 * KiB, 0, 4),
        (192 * KiB, 0, 1),  # large page: the block is the whole page
        (17 * MiB, 0, 1),
    ],
)
def test_page_start_offset_and_reserved(block_size: int, offset: int, reserved: int) -> None:
    assert page_start_offset(block_size) == offset
    assert offset % block_size == 0  # keeps blocks aligned to their size
    assert page_reserved(block_size) == reserved


# --------------------------------------------------------------------------------------------
# What a request gets: release versus Py_DEBUG
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "release_usable", "debug_usable", "debug_block"),
    [
        (0, 8, 8, 16),  # padding builds turn malloc(0) into an 8-byte request
        (1, 8, 1, 16),
        (8, 8, 8, 16),
        (9, 16, 9, 32),
        (24, 32, 24, 32),
        (25, 32, 25, 48),
        (40, 48, 40, 48),
        (1016, 1024, 1016, 1024),
        (1024, 1024, 1024, 1280),
        (16376, 16384, 16376, 16384),
        (16377, 16384, 16377, 20480),  # the padding pushes it into a medium page
        (131064, 131072, 131064, 131072),
        (131065, 131072, 131065, 196608),  # ... and this one into a large page
        (131073, 196608, 131073, 196608),
        (524288, 524288, 524288, 1 * MiB),
        (16 * MiB, 16 * MiB, 16 * MiB, 17 * MiB),  # debug: huge segment
        (16 * MiB + 1, 17 * MiB, 16 * MiB + 1, 17 * MiB),
    ],
)
def test_release_and_debug_usable_sizes(
    size: int, release_usable: int, debug_usable: int, debug_block: int
) -> None:
    assert usable_size(size, RELEASE_BUILD) == release_usable
    assert page_block_size(size, RELEASE_BUILD) == release_usable
    assert usable_size(size, PYDEBUG_BUILD) == debug_usable
    assert page_block_size(size, PYDEBUG_BUILD) == debug_block


def test_debug_good_size_ignores_padding() -> None:
    # reference §6.2: mi_good_size(1) is 8 though the debug block is 16 and usable size 1.
    assert good_size(1) == 8
    assert page_block_size(1, PYDEBUG_BUILD) == 16
    assert usable_size(1, PYDEBUG_BUILD) == 1


def test_good_size_underestimates_large_usable_size() -> None:
    # reference §6.2: n = 131080 gives 135168, while the whole large page is 196608.
    assert good_size(131080) == 135168
    assert usable_size(131080, RELEASE_BUILD) == 196608


def test_request_beyond_ptrdiff_max_fails() -> None:
    with pytest.raises(ValueError):
        usable_size(types.PTRDIFF_MAX + 1, RELEASE_BUILD)


# --------------------------------------------------------------------------------------------
# Against the real mimalloc v2.1.2
# --------------------------------------------------------------------------------------------


def _measured_rows(name: str):
    """Expand the measured runs (and single points) back into one row per size."""
    measured = DATA["builds"][name]
    excess = measured["usable_column"] == "usable minus size"
    runs = measured["runs"]
    ends = [r[0] for r in runs[1:]] + [DATA["max_dense_size"] + 1]
    for run, end in zip(runs, ends):
        size, bin_, good, usable, *page = run
        for n in range(size, end):
            yield [n, bin_, good, usable + n if excess else usable, *page]
    yield from measured["points"]


def _model_row(n: int, build: MiBuild) -> list[int]:
    block = page_block_size(n, build)
    huge = page_kind(block) == HUGE
    segment_kind = MiSegmentKind.MI_SEGMENT_HUGE if huge else MiSegmentKind.MI_SEGMENT_NORMAL
    return [
        n,
        bin_index(n),
        good_size(n),
        usable_size(n, build),
        block,
        page_size(block) // types.MI_SEGMENT_SLICE_SIZE,
        page_start_offset(block),
        page_reserved(block),
        int(segment_kind),
    ]


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_every_request_matches_real_build(name: str) -> None:
    assert DATA["columns"] == [
        "size", "bin", "good_size", "usable", "block_size",
        "slice_count", "start_offset", "reserved", "segment_kind",
    ]
    build = BUILDS[name]
    checked = 0
    for row in _measured_rows(name):
        assert _model_row(row[0], build) == row, row[0]
        checked += 1
    assert checked > DATA["max_dense_size"]


def test_large_sizes_bin_and_good_size_match_real_build() -> None:
    for n, bin_, good in DATA["large_bin_good"]["rows"]:
        assert (bin_index(n), good_size(n)) == (bin_, good), n
