"""Layout constants and build flags of mimalloc v2.1.2 as vendored by CPython 3.13/3.14 (64-bit).

This is the model's `include/mimalloc/types.h` (plus the few tuning constants that live in
`include/mimalloc.h`, `src/page.c`, `src/arena.c` and `src/os.c`). Every constant keeps its
mimalloc name and is derived from the others exactly where types.h derives it, so that changing
`MI_INTPTR_SHIFT` or `MI_SEGMENT_SLICE_SHIFT` would move everything else the way the C does.
Values for x86-64 Linux: words are 8 bytes, slices 64 KiB, segments 32 MiB.

What depends on the build (`MI_DEBUG` and what it switches on: `MI_PADDING`,
`MI_ENCODE_FREELIST`, hence `MI_PADDING_SIZE`, `MI_PAGES_DIRECT` and the struct sizes) is not a
module constant: it lives on the frozen `MiBuild`. CPython's release build is `MiBuild(debug=0)`
and its `Py_DEBUG` build `MiBuild(debug=2)` (`Include/internal/pycore_mimalloc.h`). `MI_SECURE` is
0 in every CPython build and is not modelled.

The structs (`Page` = `mi_page_t` = `mi_slice_t`, `PageQueue`, `SpanQueue`, `Segment`,
`SegmentsTld`, `Tld`, `Heap`, CPython's `AbandonedPool`) are at the end, with the offsets of the
fields the model keeps in simulated memory (the atomics; see the comment above the structs).

Beware the stale comments in the real types.h: 64-bit segments have 512 slices (not 1024), the
small-object limit is 16 KiB (not 8 KiB), the large-object limit 16 MiB (not 32 MiB) and the
maximum slice offset 255 (not 15). The derived values below are the right ones.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

# --------------------------------------------------------------------------------------------
# Platform (types.h "Platform specific values"; x86-64 Linux)
# --------------------------------------------------------------------------------------------

MI_INTPTR_SHIFT = 3
MI_INTPTR_SIZE = 1 << MI_INTPTR_SHIFT  # sizeof(void*) == sizeof(uintptr_t)
MI_INTPTR_BITS = MI_INTPTR_SIZE * 8
MI_SIZE_SHIFT = 3
MI_SIZE_SIZE = 1 << MI_SIZE_SHIFT  # sizeof(size_t)
MI_SIZE_BITS = MI_SIZE_SIZE * 8

MI_KiB = 1024
MI_MiB = MI_KiB * MI_KiB
MI_GiB = MI_MiB * MI_KiB

SIZE_MAX = (1 << MI_SIZE_BITS) - 1
PTRDIFF_MAX = (1 << (MI_SIZE_BITS - 1)) - 1  # mi_find_page refuses requests above this

# `_mi_os_page_size()` is a run-time value in mimalloc (sysconf); 4 KiB on x86-64 Linux.
MI_OS_PAGE_SIZE = 4 * MI_KiB

# sizeof(max_align_t). 16 > MI_INTPTR_SIZE selects the MI_ALIGN2W size classes (page-queue.c).
MI_MAX_ALIGN_SIZE = 16

# --------------------------------------------------------------------------------------------
# Segments, slices and pages (types.h "Main tuning parameters")
# --------------------------------------------------------------------------------------------

MI_SEGMENT_SLICE_SHIFT = 13 + MI_INTPTR_SHIFT  # 64 KiB
MI_SEGMENT_SHIFT = 9 + MI_SEGMENT_SLICE_SHIFT  # 32 MiB (64-bit)
MI_SMALL_PAGE_SHIFT = MI_SEGMENT_SLICE_SHIFT  # 64 KiB
MI_MEDIUM_PAGE_SHIFT = 3 + MI_SMALL_PAGE_SHIFT  # 512 KiB

MI_SEGMENT_SIZE = 1 << MI_SEGMENT_SHIFT
MI_SEGMENT_ALIGN = MI_SEGMENT_SIZE
MI_SEGMENT_MASK = MI_SEGMENT_ALIGN - 1
MI_SEGMENT_SLICE_SIZE = 1 << MI_SEGMENT_SLICE_SHIFT
MI_SLICES_PER_SEGMENT = MI_SEGMENT_SIZE // MI_SEGMENT_SLICE_SIZE  # 512

MI_SMALL_PAGE_SIZE = 1 << MI_SMALL_PAGE_SHIFT
MI_MEDIUM_PAGE_SIZE = 1 << MI_MEDIUM_PAGE_SHIFT

MI_SMALL_OBJ_SIZE_MAX = MI_SMALL_PAGE_SIZE // 4  # 16 KiB
MI_MEDIUM_OBJ_SIZE_MAX = MI_MEDIUM_PAGE_SIZE // 4  # 128 KiB
MI_MEDIUM_OBJ_WSIZE_MAX = MI_MEDIUM_OBJ_SIZE_MAX // MI_INTPTR_SIZE  # 16384 words
MI_LARGE_OBJ_SIZE_MAX = MI_SEGMENT_SIZE // 2  # 16 MiB
MI_LARGE_OBJ_WSIZE_MAX = MI_LARGE_OBJ_SIZE_MAX // MI_INTPTR_SIZE

# include/mimalloc.h: the limit of the `pages_free_direct` fast path.
MI_SMALL_WSIZE_MAX = 128
MI_SMALL_SIZE_MAX = MI_SMALL_WSIZE_MAX * MI_INTPTR_SIZE  # 1024

# Size classes, spaced exponentially in 12.5% steps. Bin 0 is unused; MI_BIN_HUGE is the queue
# of large and huge pages, MI_BIN_FULL the queue of full pages; a heap has MI_BIN_FULL+1 queues.
MI_BIN_HUGE = 73
MI_BIN_FULL = MI_BIN_HUGE + 1
assert MI_MEDIUM_OBJ_WSIZE_MAX < 655360, "mimalloc internal: define more bins"

# Alignments over MI_ALIGNMENT_MAX get a dedicated huge segment.
MI_ALIGNMENT_MAX = MI_SEGMENT_SIZE >> 1
MI_MAX_SLICE_OFFSET = MI_ALIGNMENT_MAX // MI_SEGMENT_SLICE_SIZE - 1  # 255

# Stored in the 32-bit `xblock_size` when the real block size does not fit.
MI_HUGE_BLOCK_SIZE = 2 * MI_GiB

# Blocks up to this size are always aligned to their size.
MI_MAX_ALIGN_GUARANTEE = 8 * MI_MAX_ALIGN_SIZE

# Commit masks: one bit per MI_COMMIT_SIZE of a segment.
MI_MINIMAL_COMMIT_SIZE = 1 * MI_SEGMENT_SLICE_SIZE
MI_COMMIT_SIZE = MI_SEGMENT_SLICE_SIZE
MI_COMMIT_MASK_BITS = MI_SEGMENT_SIZE // MI_COMMIT_SIZE
MI_COMMIT_MASK_FIELD_BITS = MI_SIZE_BITS
MI_COMMIT_MASK_FIELD_COUNT = MI_COMMIT_MASK_BITS // MI_COMMIT_MASK_FIELD_BITS
assert MI_COMMIT_MASK_BITS == MI_COMMIT_MASK_FIELD_COUNT * MI_COMMIT_MASK_FIELD_BITS, (
    "the segment size must be exactly divisible by the (commit size * size_t bits)"
)

# Span-queue bins per thread: 0..MI_SEGMENT_BIN_MAX (types.h gives the literal; with 512 slices
# only bins 0..31 are reachable).
MI_SEGMENT_BIN_MAX = 35

# --------------------------------------------------------------------------------------------
# Tuning constants outside types.h
# --------------------------------------------------------------------------------------------

# src/page.c: retirement of empty pages.
MI_MAX_RETIRE_SIZE = MI_MEDIUM_OBJ_SIZE_MAX
MI_RETIRE_CYCLES = 16

# src/page.c: free-list extension (MI_MIN_EXTEND would be 8*MI_SECURE in secure builds).
MI_MAX_EXTEND_SIZE = 4 * MI_KiB
MI_MIN_EXTEND = 4

# src/page.c: secure-mode shuffling only.
MI_MAX_SLICE_SHIFT = 6
MI_MIN_SLICES = 2

# src/arena.c
MI_ARENA_BLOCK_SIZE = MI_SEGMENT_SIZE
MI_ARENA_MIN_OBJ_SIZE = MI_ARENA_BLOCK_SIZE // 2

# Debug fill bytes: CPython overrides types.h's 0xD0/0xDF/0xDE with PYMEM_CLEANBYTE,
# PYMEM_DEADBYTE and PYMEM_FORBIDDENBYTE (pycore_mimalloc.h).
MI_DEBUG_UNINIT = 0xCD
MI_DEBUG_FREED = 0xDD
MI_DEBUG_PADDING = 0xFD

# sizeof(mi_padding_t): {uint32_t canary; uint32_t delta;}, present when MI_PADDING is on.
MI_PADDING_STRUCT_SIZE = 4 + 4

# --------------------------------------------------------------------------------------------
# Enumerations
# --------------------------------------------------------------------------------------------


class MiPageKind(enum.IntEnum):
    """`mi_page_kind_t`. v2 does not store it in the page; it follows from the block size."""

    MI_PAGE_SMALL = 0  # blocks <= MI_SMALL_OBJ_SIZE_MAX in 64 KiB pages
    MI_PAGE_MEDIUM = 1  # blocks <= MI_MEDIUM_OBJ_SIZE_MAX in 512 KiB pages
    MI_PAGE_LARGE = 2  # one block per page, <= MI_LARGE_OBJ_SIZE_MAX
    MI_PAGE_HUGE = 3  # one block in its own MI_SEGMENT_HUGE segment


class MiSegmentKind(enum.IntEnum):
    """`mi_segment_kind_t`."""

    MI_SEGMENT_NORMAL = 0  # MI_SEGMENT_SIZE, pages inside
    MI_SEGMENT_HUGE = 1  # one huge page


class MiDelayed(enum.IntEnum):
    """`mi_delayed_t`: the low 2 bits of a page's `xthread_free`."""

    MI_USE_DELAYED_FREE = 0  # push on the owning heap's thread_delayed_free list
    MI_DELAYED_FREEING = 1  # temporary: another thread is accessing the owning heap
    MI_NO_DELAYED_FREE = 2  # push on the page's xthread_free
    MI_NEVER_DELAYED_FREE = 3  # sticky; reset only on reclaim


class HeapTag(enum.IntEnum):
    """CPython's `_Py_mimalloc_heap_id` (pycore_mimalloc.h): one heap per tag per thread state.

    The tag is stored in `mi_heap_t.tag` and copied to every page of the heap (`mi_page_t.tag`).
    """

    MEM = 0  # PyMem_Malloc() and friends; also the tld's backing heap
    OBJECT = 1  # non-GC objects
    GC = 2  # GC objects without pre-header
    GC_PRE = 3  # GC objects with the 2-word pre-header


HEAP_TAG_COUNT = len(HeapTag)  # _Py_MIMALLOC_HEAP_COUNT

# --------------------------------------------------------------------------------------------
# Struct layouts (64-bit), for the size-dependent parts of the model
# --------------------------------------------------------------------------------------------

# mi_page_t up to and including `local_free`: slice_count, slice_offset (u32 each); the bit byte
# (is_committed, is_zero_init, CPython's use_qsbr and tag); CPython's debug_offset byte, which
# fills what was padding upstream; capacity, reserved (u16 each); flags; the free_is_zero /
# retire_expire byte; free; used, xblock_size (u32 each); local_free.
_MI_PAGE_HEAD_SIZE = (4 + 4) + (1 + 1 + 2 + 2 + 1 + 1) + MI_INTPTR_SIZE + (4 + 4) + MI_INTPTR_SIZE
_MI_PAGE_KEYS_SIZE = 2 * MI_INTPTR_SIZE  # keys[2], only with MI_ENCODE_FREELIST || MI_PADDING
_MI_PAGE_LINKS_SIZE = 4 * MI_INTPTR_SIZE  # xthread_free, xheap, next, prev
_MI_PAGE_QSBR_SIZE = 2 * MI_INTPTR_SIZE + 8  # CPython FT: qsbr_node (llist_node), qsbr_goal
_MI_PAGE_TAIL_PADDING = MI_INTPTR_SIZE  # padding[1]; dropped by CPython in FT builds

# offsetof(mi_segment_t, slices): memid (24), allow_decommit/allow_purge (padded to 8),
# segment_size, purge_expire, purge_mask, commit_mask, abandoned_next, then next, abandoned,
# abandoned_visits, used, cookie, segment_slices, segment_info_slices, kind (padded to 8),
# slice_entries, thread_id.
_MI_COMMIT_MASK_SIZE = MI_COMMIT_MASK_FIELD_COUNT * MI_SIZE_SIZE
_MI_SEGMENT_HEAD_SIZE = (
    24 + 8 + MI_SIZE_SIZE + 8 + 2 * _MI_COMMIT_MASK_SIZE + MI_INTPTR_SIZE
    + 7 * MI_SIZE_SIZE + 8 + MI_SIZE_SIZE + MI_SIZE_SIZE
)

# mi_heap_t around its two arrays: tld; thread_delayed_free, thread_id, arena_id (int, padded),
# cookie, keys[2]; random (a ChaCha context of 2x16 u32, an int and a bool, padded); page_count,
# page_retired_min/max, next; then no_reclaim plus CPython's tag, debug_offset, page_use_qsbr.
_MI_PAGE_QUEUE_SIZE = 3 * MI_INTPTR_SIZE  # {first, last, block_size}
_MI_RANDOM_CTX_SIZE = 16 * 4 + 16 * 4 + 4 + 4
_MI_HEAP_FIXED_SIZE = (
    MI_INTPTR_SIZE + 4 * MI_INTPTR_SIZE + 2 * MI_INTPTR_SIZE + _MI_RANDOM_CTX_SIZE
    + 4 * MI_INTPTR_SIZE + 4
)


def _align_up(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


# --------------------------------------------------------------------------------------------
# Build configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MiBuild:
    """The compile-time configuration of one mimalloc build (types.h, with `MI_SECURE` = 0).

    `debug` is `MI_DEBUG`. Everything else is derived as types.h derives it: padding and encoded
    free lists are on iff `MI_DEBUG >= 1`; padding adds an 8-byte `mi_padding_t` after every
    block, so every request is looked up in the size classes as `size + MI_PADDING_SIZE`.
    """

    debug: int = 0

    # Every derived constant below is a pure function of `debug`, so each is computed once per
    # build (issue 13: the allocator reads them on every allocation and free). `cached_property`
    # stores into the instance's __dict__, which neither the frozen check nor eq/hash see.

    def __post_init__(self) -> None:
        if self.debug not in (0, 1, 2, 3):
            raise ValueError(f"MI_DEBUG must be 0..3, not {self.debug!r}")

    @functools.cached_property
    def padding(self) -> bool:
        """`MI_PADDING` (on iff MI_DEBUG>=1, given MI_SECURE=0 and no tracking tool)."""
        return self.debug >= 1

    @functools.cached_property
    def padding_check(self) -> bool:
        """`MI_PADDING_CHECK`: padding canaries are verified on free."""
        return self.padding and self.debug >= 1

    @functools.cached_property
    def padding_size(self) -> int:
        """`MI_PADDING_SIZE`."""
        return MI_PADDING_STRUCT_SIZE if self.padding else 0

    @functools.cached_property
    def padding_wsize(self) -> int:
        """`MI_PADDING_WSIZE`."""
        return (self.padding_size + MI_INTPTR_SIZE - 1) // MI_INTPTR_SIZE

    @functools.cached_property
    def encode_freelist(self) -> bool:
        """`MI_ENCODE_FREELIST`: free-list links are stored encoded with the page keys."""
        return self.debug >= 1

    @functools.cached_property
    def stat(self) -> int:
        """`MI_STAT`."""
        return 2 if self.debug > 0 else 0

    @functools.cached_property
    def pages_direct(self) -> int:
        """`MI_PAGES_DIRECT`: entries of `heap->pages_free_direct` (129, or 130 with padding)."""
        return MI_SMALL_WSIZE_MAX + self.padding_wsize + 1

    @functools.cache
    def sizeof_page(self, free_threaded: bool = True) -> int:
        """`sizeof(mi_page_t)` (= `sizeof(mi_slice_t)`): 96 FT, 112 FT debug; 80/96 otherwise."""
        size = _MI_PAGE_HEAD_SIZE + _MI_PAGE_LINKS_SIZE
        if self.encode_freelist or self.padding:
            size += _MI_PAGE_KEYS_SIZE
        size += _MI_PAGE_QSBR_SIZE if free_threaded else _MI_PAGE_TAIL_PADDING
        return size

    @functools.cache
    def sizeof_segment(self, free_threaded: bool = True) -> int:
        """`sizeof(mi_segment_t)`: the header plus `slices[MI_SLICES_PER_SEGMENT + 1]`."""
        return _MI_SEGMENT_HEAD_SIZE + (MI_SLICES_PER_SEGMENT + 1) * self.sizeof_page(free_threaded)

    @functools.cache
    def sizeof_heap(self) -> int:
        """`sizeof(mi_heap_t)`: 3064, or 3072 with the extra direct-page entry of padding builds."""
        size = (
            _MI_HEAP_FIXED_SIZE
            + self.pages_direct * MI_INTPTR_SIZE
            + (MI_BIN_FULL + 1) * _MI_PAGE_QUEUE_SIZE
        )
        return _align_up(size, MI_INTPTR_SIZE)

    @functools.cache
    def segment_info_slices(self, free_threaded: bool = True) -> int:
        """Slices taken by a segment's header (`mi_segment_calculate_slices`, no guard pages)."""
        isize = _align_up(self.sizeof_segment(free_threaded), MI_OS_PAGE_SIZE)
        return _align_up(isize, MI_SEGMENT_SLICE_SIZE) // MI_SEGMENT_SLICE_SIZE

    # Offsets of the fields the model keeps in simulated memory: the words that are accessed
    # with atomics (so that every CAS is a scheduling point the race detector sees).

    @functools.cached_property
    def page_offset_xthread_free(self) -> int:
        """`offsetof(mi_page_t, xthread_free)`: 40, or 56 after the `keys` of padding builds."""
        keys = _MI_PAGE_KEYS_SIZE if (self.encode_freelist or self.padding) else 0
        return _MI_PAGE_HEAD_SIZE + keys

    @functools.cached_property
    def page_offset_xheap(self) -> int:
        """`offsetof(mi_page_t, xheap)`."""
        return self.page_offset_xthread_free + MI_INTPTR_SIZE

    @functools.cached_property
    def page_offset_qsbr_node(self) -> int:
        """`offsetof(mi_page_t, qsbr_node)` (CPython FT): 72, or 88 in padding builds; the
        node's `next` then `prev` (pycore_llist.h), then `qsbr_goal`."""
        return self.page_offset_xthread_free + _MI_PAGE_LINKS_SIZE

    @functools.cached_property
    def page_offset_qsbr_goal(self) -> int:
        """`offsetof(mi_page_t, qsbr_goal)` (CPython FT): after the two words of `qsbr_node`."""
        return self.page_offset_qsbr_node + 2 * MI_INTPTR_SIZE

    @functools.cached_property
    def heap_offset_thread_delayed_free(self) -> int:
        """`offsetof(mi_heap_t, thread_delayed_free)`: 2840, or 2848 with padding."""
        return (MI_INTPTR_SIZE + self.pages_direct * MI_INTPTR_SIZE
                + (MI_BIN_FULL + 1) * _MI_PAGE_QUEUE_SIZE)

    @functools.cached_property
    def heap_offset_thread_id(self) -> int:
        """`offsetof(mi_heap_t, thread_id)`."""
        return self.heap_offset_thread_delayed_free + MI_INTPTR_SIZE


# offsetof(mi_segment_t, ...) of the header words the model keeps in simulated memory.
MI_SEGMENT_OFFSET_ABANDONED_NEXT = 24 + 8 + MI_SIZE_SIZE + 8 + 2 * _MI_COMMIT_MASK_SIZE  # 176
MI_SEGMENT_OFFSET_COOKIE = MI_SEGMENT_OFFSET_ABANDONED_NEXT + 5 * MI_INTPTR_SIZE  # 216
MI_SEGMENT_OFFSET_THREAD_ID = _MI_SEGMENT_HEAD_SIZE - MI_SIZE_SIZE  # 256
MI_SEGMENT_OFFSET_SLICES = _MI_SEGMENT_HEAD_SIZE  # 264

RELEASE_BUILD = MiBuild(debug=0)  # CPython release builds (MI_DEBUG 0)
PYDEBUG_BUILD = MiBuild(debug=2)  # CPython Py_DEBUG builds (MI_DEBUG 2)


# --------------------------------------------------------------------------------------------
# Tuning options (`src/options.c` defaults; CPython sets none) and other constants
# --------------------------------------------------------------------------------------------

MI_OPTION_PURGE_DELAY = 10  # ms before freed span memory is purged (decommitted)
MI_OPTION_PURGE_EXTEND_DELAY = 1  # ms added per further free
MI_OPTION_ARENA_PURGE_MULT = 10  # arena blocks are purged after PURGE_DELAY * this
MI_OPTION_MAX_SEGMENT_RECLAIM = 8  # clamped to 8..1024: segments popped per reclaim attempt
MI_OPTION_ABANDONED_PAGE_PURGE = False
MI_ARENA_RESERVE = 1 * MI_GiB  # `arena_reserve`: the first arena; its blocks are segments
MI_MAX_ARENAS = 112

# segment.c: the abandoned list head carries an ABA tag in the low bits of the aligned pointer.
MI_TAGGED_MASK = MI_SEGMENT_MASK

# CPython's `mi_abandoned_pool_t` (types.h): five atomics, each on its own 64-byte line.
MI_CACHE_LINE = 64
MI_POOL_OFFSET_ABANDONED_VISITED = 0 * MI_CACHE_LINE
MI_POOL_OFFSET_ABANDONED = 1 * MI_CACHE_LINE
MI_POOL_OFFSET_ABANDONED_COUNT = 2 * MI_CACHE_LINE
MI_POOL_OFFSET_ABANDONED_VISITED_COUNT = 3 * MI_CACHE_LINE
MI_POOL_OFFSET_ABANDONED_READERS = 4 * MI_CACHE_LINE
MI_POOL_SIZE = 5 * MI_CACHE_LINE


class MiCollect(enum.IntEnum):
    """`mi_collect_t` (heap.c)."""

    MI_NORMAL = 0
    MI_FORCE = 1
    MI_ABANDON = 2


# --------------------------------------------------------------------------------------------
# Structs
#
# The model keeps the metadata of pages, segments and heaps in Python objects with __slots__
# (fast, readable), except for the words that other threads access with atomics: a page's
# `xthread_free` and `xheap`, a segment's `thread_id` and `abandoned_next`, a heap's
# `thread_delayed_free` and the abandoned pool. Those live in simulated memory at their real
# offsets (`page.tf_addr`, `segment.base + MI_SEGMENT_OFFSET_THREAD_ID`, ...), so every CAS on
# them is a scheduling point and the race detector sees every access. Where owner-only code
# reads such a word with a relaxed load that no other thread can change under it (`xheap`,
# `thread_id`), a Python mirror next to the word (`page.heap`, `segment.thread_id`) is kept
# equal to it and read instead; the heap-integrity checks compare the two.
# --------------------------------------------------------------------------------------------


class Page:
    """`mi_page_t`, which is also `mi_slice_t`: one entry of a segment's `slices[]` array.

    The entry at index `index` describes the 64 KiB at `segment.base + index * 64 KiB`. A page
    in use is described by its first slice; the following entries (up to 255) and the last one
    point back to it. Differences from the C struct: `slice_offset` counts entries, not bytes;
    `flags` is the `full_aligned` byte (bit 0 `in_full`, bit 1 `has_aligned`); `keys` are two
    fields; `heap` mirrors `xheap` (which is in memory at `xheap_addr`); `xthread_free` exists
    only in memory (at `tf_addr`); `qsbr_goal` (CPython FT) is in memory after the node and
    mirrored here (written together by `page_set_qsbr_goal`); its `qsbr_node` (the
    links of a thread's QSBR page list) exists only in memory (at `qsbr_node_addr`: `next`,
    then `prev`), and `qsbr_linked` reads `next != NULL` there without reporting the access
    (for checks and tests; the runtime reads it with a plain load).
    """

    __slots__ = (
        "slice_count", "slice_offset",
        "is_committed", "is_zero_init", "use_qsbr", "tag", "debug_offset",
        "capacity", "reserved", "flags", "free_is_zero", "retire_expire",
        "free", "used", "xblock_size", "local_free",
        "keys0", "keys1",
        "heap", "next", "prev",
        "qsbr_goal",
        # model: where this entry is
        "segment", "index", "addr", "tf_addr", "xheap_addr", "qsbr_node_addr",
    )

    def __init__(self, segment: "Segment | None", index: int, addr: int, build: MiBuild) -> None:
        self.slice_count = 0
        self.slice_offset = 0
        self.is_committed = False
        self.is_zero_init = False
        self.use_qsbr = False
        self.tag = 0
        self.debug_offset = 0
        self.capacity = 0
        self.reserved = 0
        self.flags = 0
        self.free_is_zero = False
        self.retire_expire = 0
        self.free = 0
        self.used = 0
        self.xblock_size = 0
        self.local_free = 0
        self.keys0 = 0
        self.keys1 = 0
        self.heap: Heap | None = None
        self.next: Page | None = None
        self.prev: Page | None = None
        self.qsbr_goal = 0
        self.segment = segment
        self.index = index
        self.addr = addr
        self.tf_addr = addr + build.page_offset_xthread_free
        self.xheap_addr = addr + build.page_offset_xheap
        self.qsbr_node_addr = addr + build.page_offset_qsbr_node

    @property
    def qsbr_linked(self) -> bool:
        """`qsbr_node.next != NULL`, read raw (not an access of the run)."""
        return self.segment.mi.mem.raw_load(self.qsbr_node_addr, 8) != 0

    def __repr__(self) -> str:
        base = self.segment.base if self.segment is not None else 0
        return (f"<page {base:#x}[{self.index}] x{self.slice_count} bsize={self.xblock_size} "
                f"used={self.used}/{self.capacity}/{self.reserved}>")


class PageQueue:
    """`mi_page_queue_t`: a doubly linked list of pages of one block size (`bin`)."""

    __slots__ = ("first", "last", "block_size", "bin")

    def __init__(self, block_size: int, bin_: int) -> None:
        self.first: Page | None = None
        self.last: Page | None = None
        self.block_size = block_size
        self.bin = bin_

    def __repr__(self) -> str:
        return f"<queue {self.bin} bsize={self.block_size}>"


class SpanQueue:
    """`mi_span_queue_t`: free spans of up to `slice_count` slices, linked through the first
    slice's `next`/`prev`."""

    __slots__ = ("first", "last", "slice_count")

    def __init__(self, slice_count: int) -> None:
        self.first: Page | None = None
        self.last: Page | None = None
        self.slice_count = slice_count


class MemId:
    """`mi_memid_t`: where a segment's memory came from (an arena block range here)."""

    __slots__ = ("arena", "block_index", "block_count", "is_pinned", "initially_committed",
                 "initially_zero")

    def __init__(self, arena: object, block_index: int, block_count: int) -> None:
        self.arena = arena
        self.block_index = block_index
        self.block_count = block_count
        self.is_pinned = False
        self.initially_committed = False
        self.initially_zero = False


class Segment:
    """`mi_segment_t`. `thread_id` mirrors the atomic word at `MI_SEGMENT_OFFSET_THREAD_ID`
    (0 = abandoned); `abandoned_next` exists only in memory. `commit_mask` and `purge_mask` are
    512-bit Python ints, one bit per 64 KiB. `slices` is created lazily (an entry that was never
    written reads as all zeros, as the zeroed header does in C)."""

    __slots__ = (
        "mi", "base", "memid", "allow_decommit", "allow_purge", "segment_size",
        "purge_expire", "purge_mask", "commit_mask", "used", "abandoned", "abandoned_visits",
        "cookie", "segment_slices", "segment_info_slices", "kind", "slice_entries",
        "thread_id", "slices",
    )

    def __init__(self, mi: object, base: int) -> None:
        self.mi = mi
        self.base = base
        self.memid: MemId | None = None
        self.allow_decommit = True
        self.allow_purge = True
        self.segment_size = 0
        self.purge_expire = 0
        self.purge_mask = 0
        self.commit_mask = 0
        self.used = 0
        self.abandoned = 0
        self.abandoned_visits = 0
        self.cookie = 0
        self.segment_slices = 0
        self.segment_info_slices = 0
        self.kind = MiSegmentKind.MI_SEGMENT_NORMAL
        self.slice_entries = 0
        self.thread_id = 0
        self.slices: list[Page | None] = [None] * (MI_SLICES_PER_SEGMENT + 1)

    def __repr__(self) -> str:
        return f"<segment {self.base:#x} used={self.used} abandoned={self.abandoned} tid={self.thread_id}>"


class SegmentsTld:
    """`mi_segments_tld_t`: the span queues of all segments of one thread, size tracking, and
    (CPython) the abandoned pool the thread's segments go to."""

    __slots__ = ("spans", "count", "peak_count", "current_size", "peak_size", "abandoned", "tld")

    def __init__(self, tld: "Tld", pool: "AbandonedPool") -> None:
        # The bounds of MI_SEGMENT_SPAN_QUEUES_EMPTY (init.c): bin b holds spans up to these.
        bounds = (1, 1, 2, 3, 4, 5, 6, 7, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96,
                  112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024)
        assert len(bounds) == MI_SEGMENT_BIN_MAX + 1, "one span-queue bound per segment bin"
        self.spans = [SpanQueue(n) for n in bounds]
        self.count = 0
        self.peak_count = 0
        self.current_size = 0
        self.peak_size = 0
        self.abandoned = pool
        self.tld = tld


class Tld:
    """`mi_tld_t`: thread-local allocator data. In CPython FT each thread state owns one
    (`tstate->mimalloc.tld`), its backing heap is the MEM heap, and all its heaps share its
    segments. `tstate` and `thread_id` are the model's link to the owning thread."""

    __slots__ = ("mi", "heartbeat", "recurse", "heap_backing", "heaps", "segments", "stats",
                 "tstate", "thread_id")

    def __init__(self, mi: object, pool: "AbandonedPool", tstate: object, thread_id: int) -> None:
        self.mi = mi
        self.heartbeat = 0
        self.recurse = False
        self.heap_backing: Heap | None = None
        self.heaps: Heap | None = None
        self.segments = SegmentsTld(self, pool)
        self.stats: dict[str, int] = {}
        self.tstate = tstate
        self.thread_id = thread_id


class Heap:
    """`mi_heap_t`. The record lives in simulated memory at `addr` (a tstate heap in the
    runtime's metadata area, a `mi_heap_new` heap in a block of the backing heap); of its fields
    only `thread_delayed_free` (at `tdf_addr`) and `thread_id` are kept there."""

    __slots__ = (
        "mi", "tld", "addr", "tdf_addr", "pages_free_direct", "pages", "thread_id",
        "arena_id", "cookie", "keys0", "keys1", "random", "page_count", "page_retired_min",
        "page_retired_max", "next", "no_reclaim", "tag", "debug_offset", "page_use_qsbr",
        "deleted",
    )

    def __repr__(self) -> str:
        return f"<heap tag={self.tag} tid={self.thread_id} at {self.addr:#x}>"


class AbandonedPool:
    """CPython's `mi_abandoned_pool_t` (one per interpreter): the lock-free list of abandoned
    segments and its companions, all atomics in simulated memory at `addr`."""

    __slots__ = ("addr", "abandoned_visited", "abandoned", "abandoned_count",
                 "abandoned_visited_count", "abandoned_readers")

    def __init__(self, addr: int) -> None:
        self.addr = addr
        self.abandoned_visited = addr + MI_POOL_OFFSET_ABANDONED_VISITED
        self.abandoned = addr + MI_POOL_OFFSET_ABANDONED
        self.abandoned_count = addr + MI_POOL_OFFSET_ABANDONED_COUNT
        self.abandoned_visited_count = addr + MI_POOL_OFFSET_ABANDONED_VISITED_COUNT
        self.abandoned_readers = addr + MI_POOL_OFFSET_ABANDONED_READERS
