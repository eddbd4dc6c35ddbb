"""Size classes and page geometry of mimalloc v2.1.2 (64-bit, `MI_ALIGN2W`): pure functions.

Models `mi_bin` / `_mi_bin` / `_mi_bin_size` / `mi_good_size` (`src/page-queue.c`), the queue
block sizes of `MI_PAGE_QUEUES_EMPTY` (`src/init.c`), the page-kind and page-size choice of
`_mi_segment_page_alloc` / `mi_segments_page_alloc` (`src/segment.c`), the start-offset
staggering of `_mi_segment_page_start_from_slice`, `_mi_os_good_alloc_size` (`src/os.c`) and
what `mi_usable_size(mi_malloc(n))` returns (`src/alloc.c`).

A request of `n` bytes is looked up as `n + MI_PADDING_SIZE` (padding builds add an 8-byte
`mi_padding_t` after the usable part of each block). Up to `MI_MEDIUM_OBJ_SIZE_MAX` (128 KiB)
the padded size picks a bin, and the block is that bin's block size. Above it the request gets a
fresh large or huge page whose single block is the whole page.

Nothing here depends on the scheduler or on heap state.
"""

from __future__ import annotations

from ftlab.runtime.mimalloc.types import (
    MI_BIN_FULL,
    MI_BIN_HUGE,
    MI_INTPTR_SIZE,
    MI_KiB,
    MI_LARGE_OBJ_SIZE_MAX,
    MI_MAX_ALIGN_SIZE,
    MI_MEDIUM_OBJ_SIZE_MAX,
    MI_MEDIUM_OBJ_WSIZE_MAX,
    MI_MEDIUM_PAGE_SIZE,
    MI_MiB,
    MI_OS_PAGE_SIZE,
    MI_SEGMENT_SLICE_SIZE,
    MI_SMALL_OBJ_SIZE_MAX,
    PTRDIFF_MAX,
    SIZE_MAX,
    MiBuild,
    MiPageKind,
)

# page-queue.c picks its size classes from MI_MAX_ALIGN_SIZE; 64-bit Linux is the 2-word case.
assert MI_INTPTR_SIZE < MI_MAX_ALIGN_SIZE <= 2 * MI_INTPTR_SIZE, "only MI_ALIGN2W is modelled"


def _align_up(n: int, alignment: int) -> int:
    """`_mi_align_up`."""
    return (n + alignment - 1) // alignment * alignment


def wsize_from_size(size: int) -> int:
    """`_mi_wsize_from_size`: the size in machine words, rounded up (0 for 0)."""
    assert 0 <= size <= SIZE_MAX - MI_INTPTR_SIZE, "size out of range"
    return (size + MI_INTPTR_SIZE - 1) // MI_INTPTR_SIZE


# --------------------------------------------------------------------------------------------
# Bins (`mi_bin`)
# --------------------------------------------------------------------------------------------


def bin_from_wsize(wsize: int) -> int:
    """The generic `mi_bin` computation, on a word size.

    Exact bins for 1..8 words, rounded up to an even word count (so bins 3, 5 and 7 are never
    used on 64-bit); then four sub-bins per power of two, taken from the two bits below the
    highest set bit of `wsize - 1`; everything above MI_MEDIUM_OBJ_WSIZE_MAX is MI_BIN_HUGE.
    """
    if wsize <= 1:
        return 1
    if wsize <= 8:
        return (wsize + 1) & ~1  # round to double-word sizes
    if wsize > MI_MEDIUM_OBJ_WSIZE_MAX:
        return MI_BIN_HUGE
    w = wsize - 1
    b = w.bit_length() - 1  # mi_bsr: index of the highest set bit (w >= 8, so b >= 3)
    bin_ = (b << 2) + ((w >> (b - 2)) & 0x03) - 3
    assert 0 < bin_ < MI_BIN_HUGE, "a medium word size must map to a regular bin"
    return bin_


# mi_bin of every word size that has a regular bin, indexed by word size.
_BIN_OF_WSIZE: tuple[int, ...] = tuple(
    bin_from_wsize(w) for w in range(MI_MEDIUM_OBJ_WSIZE_MAX + 1)
)


def bin_index(size: int) -> int:
    """`mi_bin(size)` / `_mi_bin`: the page-queue index for a block of `size` bytes.

    Fast path: one table lookup by word size; sizes above MI_MEDIUM_OBJ_SIZE_MAX are huge.
    """
    assert size >= 0, "sizes are unsigned"
    wsize = (size + MI_INTPTR_SIZE - 1) // MI_INTPTR_SIZE
    if wsize <= MI_MEDIUM_OBJ_WSIZE_MAX:
        return _BIN_OF_WSIZE[wsize]
    return MI_BIN_HUGE


def bin_index_generic(size: int) -> int:
    """`mi_bin(size)` computed without the table (the bit arithmetic `bin_index` caches)."""
    return bin_from_wsize(wsize_from_size(size))


# --------------------------------------------------------------------------------------------
# Bin block sizes (`_mi_bin_size`, the `block_size` of each `mi_page_queue_t`)
# --------------------------------------------------------------------------------------------


def _queue_block_wsize(bin_: int) -> int:
    """Word size of queue `bin_` in `MI_PAGE_QUEUES_EMPTY`: the largest word size of the bin.

    Bin 0 (unused) is 1 word; bins 1..8 are exact; a regular bin >= 9 spans `wsize - 1` in
    `[(4+r) << (k-2), (5+r) << (k-2))` for `bin + 3 == 4k + r`, so its largest word size is
    `(5+r) << (k-2)`. The huge and full queues are tagged one and two words past the largest
    medium size; mimalloc recognises them by exactly these values.
    """
    if bin_ == 0:
        return 1
    if bin_ <= 8:
        return bin_
    if bin_ < MI_BIN_HUGE:
        k, r = divmod(bin_ + 3, 4)
        return (5 + r) << (k - 2)
    if bin_ == MI_BIN_HUGE:
        return MI_MEDIUM_OBJ_WSIZE_MAX + 1
    if bin_ == MI_BIN_FULL:
        return MI_MEDIUM_OBJ_WSIZE_MAX + 2
    raise ValueError(f"no page queue {bin_}")


_BIN_BLOCK_SIZE: tuple[int, ...] = tuple(
    _queue_block_wsize(b) * MI_INTPTR_SIZE for b in range(MI_BIN_FULL + 1)
)

MI_HUGE_QUEUE_BLOCK_SIZE = _BIN_BLOCK_SIZE[MI_BIN_HUGE]  # 131080: `mi_page_queue_is_huge`
MI_FULL_QUEUE_BLOCK_SIZE = _BIN_BLOCK_SIZE[MI_BIN_FULL]  # 131088: `mi_page_queue_is_full`
assert MI_HUGE_QUEUE_BLOCK_SIZE == MI_MEDIUM_OBJ_SIZE_MAX + MI_INTPTR_SIZE, "huge queue block size"
assert MI_FULL_QUEUE_BLOCK_SIZE == MI_MEDIUM_OBJ_SIZE_MAX + 2 * MI_INTPTR_SIZE, "full queue block size"


def bin_size(bin_: int) -> int:
    """`_mi_bin_size(bin)`: the block size in bytes of page queue `bin_` (0..MI_BIN_FULL).

    Bins 53..72 have table entries (160 KiB .. 4 MiB) that no size maps to on 64-bit.
    """
    return _BIN_BLOCK_SIZE[bin_]


def good_size(size: int) -> int:
    """`mi_good_size(size)`: the bin block size up to 128 KiB, else `size` rounded to an OS page.

    It ignores padding, and above 128 KiB it underestimates the usable size, which is the whole
    large page (`usable_size`).
    """
    if size <= MI_MEDIUM_OBJ_SIZE_MAX:
        return _BIN_BLOCK_SIZE[bin_index(size)]
    return _align_up(size, MI_OS_PAGE_SIZE)


# --------------------------------------------------------------------------------------------
# Page kinds and page sizes (`_mi_segment_page_alloc`)
# --------------------------------------------------------------------------------------------


def os_good_alloc_size(size: int) -> int:
    """`_mi_os_good_alloc_size`: the block size asked for a large or huge page."""
    if size < 512 * MI_KiB:
        align_size = MI_OS_PAGE_SIZE
    elif size < 2 * MI_MiB:
        align_size = 64 * MI_KiB
    elif size < 8 * MI_MiB:
        align_size = 256 * MI_KiB
    elif size < 32 * MI_MiB:
        align_size = 1 * MI_MiB
    else:
        align_size = 4 * MI_MiB
    if size >= SIZE_MAX - align_size:
        return size  # possible overflow
    return _align_up(size, align_size)


def page_kind(block_size: int) -> MiPageKind:
    """The kind of page `_mi_segment_page_alloc` allocates for `block_size` (no huge alignment)."""
    if block_size <= MI_SMALL_OBJ_SIZE_MAX:
        return MiPageKind.MI_PAGE_SMALL
    if block_size <= MI_MEDIUM_OBJ_SIZE_MAX:
        return MiPageKind.MI_PAGE_MEDIUM
    if block_size <= MI_LARGE_OBJ_SIZE_MAX:
        return MiPageKind.MI_PAGE_LARGE
    return MiPageKind.MI_PAGE_HUGE


def page_size(block_size: int) -> int:
    """Bytes spanned by the slices of the page allocated for `block_size`.

    Small: one 64 KiB slice. Medium: 512 KiB. Large: `block_size` rounded up to 64 KiB, or to
    512 KiB above 512 KiB (`mi_segments_page_alloc`). Huge: all the slices after the header of
    a segment of `align_up(block_size + header, 64 KiB)`, i.e. `block_size` rounded to a slice.
    """
    kind = page_kind(block_size)
    if kind == MiPageKind.MI_PAGE_HUGE:
        return _align_up(block_size, MI_SEGMENT_SLICE_SIZE)
    required = MI_MEDIUM_PAGE_SIZE if kind == MiPageKind.MI_PAGE_MEDIUM else block_size
    alignment = MI_MEDIUM_PAGE_SIZE if required > MI_MEDIUM_PAGE_SIZE else MI_SEGMENT_SLICE_SIZE
    return _align_up(required, alignment)


def page_start_offset(block_size: int) -> int:
    """Offset of block 0 from the page's first slice (`_mi_segment_page_start_from_slice`).

    Pages of small blocks start 3 blocks in (<= 64 B) or 1 block in (<= 512 B) so that pages
    do not all start on the same cache sets; it is a multiple of the block size, so alignment
    is kept. Larger blocks start at the slice.
    """
    if block_size >= MI_INTPTR_SIZE:
        if block_size <= 64:
            return 3 * block_size
        if block_size <= 512:
            return block_size
    return 0


def page_reserved(block_size: int) -> int:
    """`page->reserved` after `mi_page_init`: how many blocks fit in the page.

    `block_size` is the page's full block size (`mi_page_block_size`): a bin block size, or for
    large and huge pages the whole page.
    """
    return (page_size(block_size) - page_start_offset(block_size)) // block_size


# --------------------------------------------------------------------------------------------
# What a request gets (`mi_malloc` -> `mi_usable_size`)
# --------------------------------------------------------------------------------------------


def page_block_size(size: int, build: MiBuild) -> int:
    """`mi_page_block_size` of the page that `mi_malloc(size)` takes its block from.

    This is the full block, padding included.
    """
    if size > PTRDIFF_MAX:
        raise ValueError(f"allocation request is too large ({size} bytes): mi_malloc fails")
    if build.padding and size == 0:
        size = MI_INTPTR_SIZE  # mi_heap_malloc_small_zero: room for the padding's delta
    padded = size + build.padding_size
    if padded <= MI_MEDIUM_OBJ_SIZE_MAX:
        return _BIN_BLOCK_SIZE[bin_index(padded)]
    return _large_huge_block_size(padded)


def _large_huge_block_size(padded: int) -> int:
    """`mi_large_huge_page_alloc`: a fresh page on the huge queue; its one block is the page."""
    block_size = os_good_alloc_size(padded)
    return page_size(block_size)


def usable_size(size: int, build: MiBuild) -> int:
    """`mi_usable_size(mi_malloc(size))` in `build`.

    Without padding, the usable size is the whole block. With padding it is what was asked
    for: the block's `mi_padding_t.delta` records `usable_block_size - size` and
    `mi_usable_size` subtracts it again. The one exception is `mi_malloc(0)`, which padding
    builds turn into an 8-byte request, so its usable size is 8.
    """
    block_size = page_block_size(size, build)
    if not build.padding:
        return block_size
    requested = size if size > 0 else MI_INTPTR_SIZE
    usable_block_size = block_size - build.padding_size  # mi_page_usable_block_size
    delta = usable_block_size - requested
    assert delta >= 0, "the block must hold the request and its padding"
    return usable_block_size - delta
