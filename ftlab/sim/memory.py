"""The simulated 64-bit address space, with one shadow tag per 8-byte word.

Everything the modelled runtime keeps in memory — segments, pages, free lists, object headers,
payloads — lives here at a 64-bit address and is read and written by address and width, in the
little-endian byte order of x86-64. This is the core every allocator access goes through; the
fast path (`load_u64`, `store_u64`, ...) sits first, the generic path (`_load_slow`,
`_store_slow`, `_span`) beside it.

The model (DESIGN §4):

- Regions are *reserved* by bump allocation from the space's base, each aligned to its `align`
  (32 MiB by default, the segment alignment) and sized in whole 4 KiB OS pages. An address is
  never handed out twice: a released region leaves a hole that stays unmapped.
- Reserved memory is not usable until *committed*, which works on whole OS pages inside one
  region. Committed memory reads as zero, tagged `Tag.UNINIT`, until written. Committing a page
  that is already committed keeps its contents (as `mprotect`/`madvise` would).
- Committed pages are *backed* lazily: the page's `bytearray` is created on the first access,
  load or store, so an untouched part of a segment costs nothing. One `bytearray` holds a page's
  4096 data bytes followed by its 512 tag bytes (one per word), so a store finds both with one
  dict lookup; the fast path's page-end check is what keeps data accesses out of the tags.
- *Decommit* drops the contents and the backing; a later access is a segfault until the page is
  committed again, and then it reads as zeros again. *Release* unmaps the whole region.
- Any access that touches an unmapped, reserved-but-uncommitted or decommitted byte raises
  `ViolationError("segfault", ...)` naming the address and why. The check is done for the whole
  access before any byte is written, so a faulting store changes nothing.

Invariants (checked by `check_invariants`):

- every backed page is committed, and lies in a live region;
- `committed_bytes` is the number of pages in state COMMITTED over all live regions, times 4 KiB;
- a region's pages are COMMITTED, NEVER_COMMITTED or DECOMMITTED; only COMMITTED pages hold data.

Shadow tags: each 8-byte word carries a `Tag` saying what was last written there. Any store that
touches a byte of a word sets that word's tag (a 4-byte store at offset 4 retags the whole word;
a page-crossing store retags words in both pages). Tags are shadow state, not memory: reading
them (`tag_of`, and `tags(addr, n)`: one tag per word overlapping the n bytes at addr) is not an
access, never faults, and reads `Tag.UNINIT` where nothing is backed.

Plain accesses (`load_*`, `store_*`, `read_bytes`, `write_bytes`, `fill`) call the
`on_plain_access(addr, width, is_write)` hook before the access, if one is set; the race detector
uses it. `raw_load`/`raw_store` are the same accesses without the hook, for the atomics layer,
which reports its accesses to the race detector itself. Several watchers share a hook through
`chain_access_hooks`.
"""

from __future__ import annotations

import bisect
import enum
import struct
from typing import Callable

from ftlab.sim.violation import ViolationError


class Tag(enum.IntEnum):
    """What was last written to an 8-byte word."""

    UNINIT = 0      # never written since it was committed
    META = 1        # allocator metadata (page/segment/heap records)
    FREE_LINK = 2   # a free-list link inside a free block
    HEADER = 3      # an object header field
    PAYLOAD = 4     # object or block payload
    DEBUG_FILL = 5  # debug allocator fill pattern
    DEBUG_PAD = 6   # debug allocator size/api words around a block


# ---------------------------------------------------------------------------------------------
# Layout constants

OS_PAGE_SHIFT = 12
OS_PAGE_SIZE = 1 << OS_PAGE_SHIFT               # 4 KiB
OS_PAGE_MASK = OS_PAGE_SIZE - 1
WORD_SHIFT = 3
WORD_SIZE = 1 << WORD_SHIFT                     # one shadow tag per 8 bytes
WORDS_PER_PAGE = OS_PAGE_SIZE >> WORD_SHIFT     # 512
# read-modify-write operations of raw_update
RMW_SET, RMW_ADD, RMW_OR, RMW_AND = range(4)

TAGS_AT = OS_PAGE_SIZE                          # a backed page: data bytes, then a tag per word
PAGE_RECORD_SIZE = TAGS_AT + WORDS_PER_PAGE
CHUNK_SHIFT = 25                                # region lookup granule: 32 MiB
DEFAULT_ALIGN = 1 << CHUNK_SHIFT                # segment alignment
ADDRESS_LIMIT = 1 << 64

# Per-page commit state of a region, one byte per OS page.
NEVER_COMMITTED = 0
COMMITTED = 1
DECOMMITTED = 2

_MASK = (0, 0xFF, 0xFFFF, 0, 0xFFFF_FFFF, 0, 0, 0, 0xFFFF_FFFF_FFFF_FFFF)

# Precompiled (immutable) codecs for the fast path.
_unpack_u16 = struct.Struct("<H").unpack_from
_unpack_u32 = struct.Struct("<I").unpack_from
_unpack_u64 = struct.Struct("<Q").unpack_from
_unpack_i32 = struct.Struct("<i").unpack_from
_unpack_i64 = struct.Struct("<q").unpack_from
_pack_u16 = struct.Struct("<H").pack_into
_pack_u32 = struct.Struct("<I").pack_into
_pack_u64 = struct.Struct("<Q").pack_into
_UNPACK = (None, struct.Struct("<B").unpack_from, _unpack_u16, None, _unpack_u32,
           None, None, None, _unpack_u64)
_PACK = (None, struct.Struct("<B").pack_into, _pack_u16, None, _pack_u32,
         None, None, None, _pack_u64)

# COMMITTED -> DECOMMITTED, the other states unchanged: `bytes.translate` over a state slice.
_DECOMMIT_TABLE = bytes(DECOMMITTED if i == COMMITTED else i for i in range(256))


AccessHook = Callable[[int, int, bool], None]


def chain_access_hooks(first: AccessHook, then: AccessHook | None) -> AccessHook:
    """One access hook that calls `first`, then `then` (if any). Defined here, in the machine,
    so that what `then` sees of the stack (the race detector's source locations skip the
    frames of `ftlab/sim`) is the same as if it were the only hook."""
    if then is None:
        return first

    def chained(addr: int, width: int, is_write: bool) -> None:
        first(addr, width, is_write)
        then(addr, width, is_write)
    return chained


class _Region:
    """One reservation: [base, end), with a commit state byte per OS page."""

    __slots__ = ("base", "size", "end", "state")

    def __init__(self, base: int, size: int) -> None:
        self.base = base
        self.size = size
        self.end = base + size
        self.state = bytearray(size >> OS_PAGE_SHIFT)

    def __repr__(self) -> str:
        return f"{self.base:#x}+{self.size:#x}"


class AddressSpace:
    """A sparse, lazily backed 64-bit address space with shadow tags (see module docstring)."""

    __slots__ = (
        "on_plain_access",
        "on_map",            # (addr, size) of a reserve, release, commit or decommit (DPOR)
        "on_raw_access",     # (addr, width, is_write) of the raw accesses below (DPOR)
        "_base",
        "_next",
        "_pages",            # page number -> bytearray(PAGE_RECORD_SIZE), backed pages only
        "_regions",          # base -> _Region, live regions
        "_bases",            # sorted bases of live regions
        "_chunks",           # addr >> 25 -> live regions overlapping that 32 MiB chunk
        "_released",         # sorted (base, size) of released regions, for messages
        "_reserved",
        "_committed_pages",
        "_peak_committed_pages",
    )

    def __init__(self, base: int = 0x7F00_0000_0000) -> None:
        assert base >= 0 and base & OS_PAGE_MASK == 0, "base must be page-aligned"
        self.on_plain_access: Callable[[int, int, bool], None] | None = None
        self.on_map: Callable[[int, int], None] | None = None
        self.on_raw_access: Callable[[int, int, bool], None] | None = None
        self._base = base
        self._next = base
        self._pages: dict[int, bytearray] = {}
        self._regions: dict[int, _Region] = {}
        self._bases: list[int] = []
        self._chunks: dict[int, list[_Region]] = {}
        self._released: list[tuple[int, int]] = []
        self._reserved = 0
        self._committed_pages = 0
        self._peak_committed_pages = 0

    # -----------------------------------------------------------------------------------------
    # Plain loads: fast path (inside one backed page) first, `_load_slow` for everything else.

    def load_u8(self, addr: int) -> int:
        if self.on_plain_access is not None:
            self.on_plain_access(addr, 1, False)
        try:
            return self._pages[addr >> OS_PAGE_SHIFT][addr & OS_PAGE_MASK]
        except KeyError:
            return self._load_slow(addr, 1, False, "load")

    def load_u16(self, addr: int) -> int:
        if self.on_plain_access is not None:
            self.on_plain_access(addr, 2, False)
        off = addr & OS_PAGE_MASK
        if off <= OS_PAGE_SIZE - 2:
            try:
                return _unpack_u16(self._pages[addr >> OS_PAGE_SHIFT], off)[0]
            except KeyError:
                pass
        return self._load_slow(addr, 2, False, "load")

    def load_u32(self, addr: int) -> int:
        if self.on_plain_access is not None:
            self.on_plain_access(addr, 4, False)
        off = addr & OS_PAGE_MASK
        if off <= OS_PAGE_SIZE - 4:
            try:
                return _unpack_u32(self._pages[addr >> OS_PAGE_SHIFT], off)[0]
            except KeyError:
                pass
        return self._load_slow(addr, 4, False, "load")

    def load_u64(self, addr: int) -> int:
        if self.on_plain_access is not None:
            self.on_plain_access(addr, 8, False)
        off = addr & OS_PAGE_MASK
        if off <= OS_PAGE_SIZE - 8:
            try:
                return _unpack_u64(self._pages[addr >> OS_PAGE_SHIFT], off)[0]
            except KeyError:
                pass
        return self._load_slow(addr, 8, False, "load")

    def load_i32(self, addr: int) -> int:
        if self.on_plain_access is not None:
            self.on_plain_access(addr, 4, False)
        off = addr & OS_PAGE_MASK
        if off <= OS_PAGE_SIZE - 4:
            try:
                return _unpack_i32(self._pages[addr >> OS_PAGE_SHIFT], off)[0]
            except KeyError:
                pass
        return self._load_slow(addr, 4, True, "load")

    def load_i64(self, addr: int) -> int:
        if self.on_plain_access is not None:
            self.on_plain_access(addr, 8, False)
        off = addr & OS_PAGE_MASK
        if off <= OS_PAGE_SIZE - 8:
            try:
                return _unpack_i64(self._pages[addr >> OS_PAGE_SHIFT], off)[0]
            except KeyError:
                pass
        return self._load_slow(addr, 8, True, "load")

    def _load_slow(self, addr: int, width: int, signed: bool, op: str) -> int:
        return int.from_bytes(self._read(addr, width, op), "little", signed=signed)

    # -----------------------------------------------------------------------------------------
    # Plain stores: value masked to the width (negative values store two's complement); every
    # word the store touches gets `tag`. Words never cross a page, so a store inside one page
    # retags at most the two words holding its first and last byte.

    def store_u8(self, addr: int, value: int, tag: Tag = Tag.PAYLOAD) -> None:
        if self.on_plain_access is not None:
            self.on_plain_access(addr, 1, True)
        off = addr & OS_PAGE_MASK
        page = self._pages.get(addr >> OS_PAGE_SHIFT)
        if page is None:
            return self._store_slow(addr, 1, value, tag)
        page[off] = value & 0xFF
        page[TAGS_AT + (off >> WORD_SHIFT)] = tag

    def store_u16(self, addr: int, value: int, tag: Tag = Tag.PAYLOAD) -> None:
        if self.on_plain_access is not None:
            self.on_plain_access(addr, 2, True)
        off = addr & OS_PAGE_MASK
        page = self._pages.get(addr >> OS_PAGE_SHIFT)
        if page is None or off > OS_PAGE_SIZE - 2:
            return self._store_slow(addr, 2, value, tag)
        _pack_u16(page, off, value & 0xFFFF)
        page[TAGS_AT + (off >> WORD_SHIFT)] = tag
        page[TAGS_AT + ((off + 1) >> WORD_SHIFT)] = tag

    def store_u32(self, addr: int, value: int, tag: Tag = Tag.PAYLOAD) -> None:
        if self.on_plain_access is not None:
            self.on_plain_access(addr, 4, True)
        off = addr & OS_PAGE_MASK
        page = self._pages.get(addr >> OS_PAGE_SHIFT)
        if page is None or off > OS_PAGE_SIZE - 4:
            return self._store_slow(addr, 4, value, tag)
        _pack_u32(page, off, value & 0xFFFF_FFFF)
        page[TAGS_AT + (off >> WORD_SHIFT)] = tag
        page[TAGS_AT + ((off + 3) >> WORD_SHIFT)] = tag

    def store_u64(self, addr: int, value: int, tag: Tag = Tag.PAYLOAD) -> None:
        if self.on_plain_access is not None:
            self.on_plain_access(addr, 8, True)
        off = addr & OS_PAGE_MASK
        page = self._pages.get(addr >> OS_PAGE_SHIFT)
        if page is None or off > OS_PAGE_SIZE - 8:
            return self._store_slow(addr, 8, value, tag)
        _pack_u64(page, off, value & 0xFFFF_FFFF_FFFF_FFFF)
        page[TAGS_AT + (off >> WORD_SHIFT)] = tag
        if off & 7:
            page[TAGS_AT + ((off + 7) >> WORD_SHIFT)] = tag

    def _store_slow(self, addr: int, width: int, value: int, tag: Tag) -> None:
        self._write(addr, (value & _MASK[width]).to_bytes(width, "little"), tag, "store")

    # -----------------------------------------------------------------------------------------
    # Raw access for the atomics layer: the same accesses, never reported to on_plain_access.

    def raw_load(self, addr: int, width: int) -> int:
        if self.on_raw_access is not None:
            self.on_raw_access(addr, width, False)
        off = addr & OS_PAGE_MASK
        if off <= OS_PAGE_SIZE - width:
            try:
                return _UNPACK[width](self._pages[addr >> OS_PAGE_SHIFT], off)[0]
            except KeyError:
                pass
        assert width in (1, 2, 4, 8), f"atomic width must be 1, 2, 4 or 8, not {width}"
        return self._load_slow(addr, width, False, "load")

    def raw_store(self, addr: int, width: int, value: int, tag: Tag) -> None:
        if self.on_raw_access is not None:
            self.on_raw_access(addr, width, True)
        off = addr & OS_PAGE_MASK
        page = self._pages.get(addr >> OS_PAGE_SHIFT)
        if page is None or off > OS_PAGE_SIZE - width:
            assert width in (1, 2, 4, 8), f"atomic width must be 1, 2, 4 or 8, not {width}"
            return self._store_slow(addr, width, value, tag)
        _PACK[width](page, off, value & _MASK[width])
        page[TAGS_AT + (off >> WORD_SHIFT)] = tag
        page[TAGS_AT + ((off + width - 1) >> WORD_SHIFT)] = tag

    def raw_update(self, addr: int, width: int, op: int, operand: int, tag: Tag) -> int:
        """One read-modify-write with a single page lookup; returns the old value.
        `op`: RMW_SET, RMW_ADD, RMW_OR or RMW_AND."""
        if self.on_raw_access is not None:
            self.on_raw_access(addr, width, True)
        off = addr & OS_PAGE_MASK
        page = self._pages.get(addr >> OS_PAGE_SHIFT)
        if page is None or off > OS_PAGE_SIZE - width:
            old = self.raw_load(addr, width)
            page = None
        else:
            old = _UNPACK[width](page, off)[0]
        if op == RMW_ADD:
            new = (old + operand) & _MASK[width]
        elif op == RMW_SET:
            new = operand & _MASK[width]
        elif op == RMW_OR:
            new = old | (operand & _MASK[width])
        else:
            new = old & operand
        if page is None:
            self.raw_store(addr, width, new, tag)
        else:
            _PACK[width](page, off, new)
            page[TAGS_AT + (off >> WORD_SHIFT)] = tag
            page[TAGS_AT + ((off + width - 1) >> WORD_SHIFT)] = tag
        return old

    # -----------------------------------------------------------------------------------------
    # Byte ranges

    def read_bytes(self, addr: int, n: int) -> bytes:
        if n <= 0:
            if n < 0:
                raise ValueError(f"read_bytes of a negative length {n}")
            return b""
        if self.on_plain_access is not None:
            self.on_plain_access(addr, n, False)
        return self._read(addr, n, "load")

    def write_bytes(self, addr: int, data: bytes, tag: Tag = Tag.PAYLOAD) -> None:
        if not data:
            return
        if self.on_plain_access is not None:
            self.on_plain_access(addr, len(data), True)
        self._write(addr, data, tag, "store")

    def fill(self, addr: int, n: int, byte: int, tag: Tag = Tag.PAYLOAD) -> None:
        if n <= 0:
            if n < 0:
                raise ValueError(f"fill of a negative length {n}")
            return
        if self.on_plain_access is not None:
            self.on_plain_access(addr, n, True)
        pattern = bytes((byte & 0xFF,)) * min(n, OS_PAGE_SIZE)
        tagrun = bytes((tag,)) * WORDS_PER_PAGE
        end = addr + n
        a = addr
        for page in self._span(addr, n, "store"):
            off = a & OS_PAGE_MASK
            k = min(OS_PAGE_SIZE - off, end - a)
            page[off:off + k] = pattern[:k]
            w0 = TAGS_AT + (off >> WORD_SHIFT)
            w1 = TAGS_AT + ((off + k - 1) >> WORD_SHIFT) + 1
            page[w0:w1] = tagrun[:w1 - w0]
            a += k

    # -----------------------------------------------------------------------------------------
    # Generic path: any length, page crossing, lazy backing, segfault checks.

    def _read(self, addr: int, n: int, op: str) -> bytes:
        end = addr + n
        a = addr
        parts = []
        for page in self._span(addr, n, op):
            off = a & OS_PAGE_MASK
            k = min(OS_PAGE_SIZE - off, end - a)
            parts.append(page[off:off + k])
            a += k
        return b"".join(parts)

    def _write(self, addr: int, data: bytes, tag: Tag, op: str) -> None:
        n = len(data)
        src = memoryview(data).cast("B")
        tagrun = bytes((tag,)) * WORDS_PER_PAGE
        end = addr + n
        a = addr
        for page in self._span(addr, n, op):
            off = a & OS_PAGE_MASK
            k = min(OS_PAGE_SIZE - off, end - a)
            i = a - addr
            page[off:off + k] = src[i:i + k]
            w0 = TAGS_AT + (off >> WORD_SHIFT)
            w1 = TAGS_AT + ((off + k - 1) >> WORD_SHIFT) + 1
            page[w0:w1] = tagrun[:w1 - w0]
            a += k

    def _span(self, addr: int, n: int, op: str) -> list[bytearray]:
        """The backed pages covering [addr, addr+n), backing committed pages as needed.

        Every page is checked before any is backed, so an access that faults has no effect.
        """
        pages = self._pages
        p0 = addr >> OS_PAGE_SHIFT
        p1 = (addr + n - 1) >> OS_PAGE_SHIFT
        missing = [pn for pn in range(p0, p1 + 1) if pn not in pages]
        for pn in missing:
            fault = max(pn << OS_PAGE_SHIFT, addr)
            r = self._region_at(fault)
            if r is None or r.state[(fault - r.base) >> OS_PAGE_SHIFT] != COMMITTED:
                self._fault(op, addr, n, fault)
        for pn in missing:
            pages[pn] = bytearray(PAGE_RECORD_SIZE)     # zeros, all tags Tag.UNINIT
        return [pages[pn] for pn in range(p0, p1 + 1)]

    def _fault(self, op: str, addr: int, n: int, fault: int) -> None:
        what = f"{op} of {n} byte{'s' if n != 1 else ''} at {addr:#x}"
        at = "" if fault == addr else f" (at {fault:#x})"
        raise ViolationError("segfault", f"{what}: {self._why(fault)}{at}")

    def _why(self, addr: int) -> str:
        """Why an access to `addr` faults, in words."""
        r = self._region_at(addr)
        if r is not None:
            state = r.state[(addr - r.base) >> OS_PAGE_SHIFT]
            if state == DECOMMITTED:
                return f"decommitted page of region {r!r}"
            assert state == NEVER_COMMITTED, "a committed page does not fault"
            return f"reserved but uncommitted page of region {r!r}"
        i = bisect.bisect_right(self._released, (addr, ADDRESS_LIMIT)) - 1
        if i >= 0:
            base, size = self._released[i]
            if base <= addr < base + size:
                return f"unmapped (released region {base:#x}+{size:#x})"
        return "unmapped"

    # -----------------------------------------------------------------------------------------
    # Regions

    def reserve(self, size: int, align: int = DEFAULT_ALIGN) -> int:
        """Reserve `size` bytes (rounded up to OS pages) at an `align`-aligned fresh address."""
        if size <= 0:
            raise ValueError(f"reserve of {size} bytes")
        if align <= 0 or align & (align - 1):
            raise ValueError(f"alignment {align:#x} is not a power of two")
        align = max(align, OS_PAGE_SIZE)
        size = (size + OS_PAGE_MASK) & ~OS_PAGE_MASK
        base = (self._next + align - 1) & -align
        if base + size > ADDRESS_LIMIT:
            raise MemoryError(f"address space exhausted reserving {size:#x} bytes")
        self._next = base + size
        r = _Region(base, size)
        self._regions[base] = r
        self._bases.append(base)        # bump allocation keeps the list sorted
        for c in range(base >> CHUNK_SHIFT, ((r.end - 1) >> CHUNK_SHIFT) + 1):
            self._chunks.setdefault(c, []).append(r)
        self._reserved += size
        if self.on_map is not None:
            self.on_map(base, 0)        # which address comes next depends on the order
        return base

    def release(self, base: int) -> None:
        """Unmap a whole region; its addresses are never handed out again."""
        r = self._regions.pop(base, None)
        if r is None:
            raise ValueError(f"{base:#x} is not the start of a reserved region")
        if self.on_map is not None:
            self.on_map(r.base, r.size)
        self._drop_backing(r.base >> OS_PAGE_SHIFT, r.end >> OS_PAGE_SHIFT)
        self._committed_pages -= r.state.count(COMMITTED)
        del self._bases[bisect.bisect_left(self._bases, base)]
        for c in range(base >> CHUNK_SHIFT, ((r.end - 1) >> CHUNK_SHIFT) + 1):
            lst = self._chunks[c]
            lst.remove(r)
            if not lst:
                del self._chunks[c]
        bisect.insort(self._released, (r.base, r.size))
        self._reserved -= r.size

    def commit(self, addr: int, size: int) -> None:
        """Make [addr, addr+size) usable; pages not committed before read as zeros."""
        r, i, j = self._page_range("commit", addr, size)
        if i == j:
            return
        if self.on_map is not None:
            self.on_map(r.base + (i << OS_PAGE_SHIFT), (j - i) << OS_PAGE_SHIFT)
        state = r.state
        self._committed_pages += (j - i) - state.count(COMMITTED, i, j)
        state[i:j] = bytes((COMMITTED,)) * (j - i)
        if self._committed_pages > self._peak_committed_pages:
            self._peak_committed_pages = self._committed_pages

    def decommit(self, addr: int, size: int) -> None:
        """Drop the contents and backing of [addr, addr+size); an access now faults."""
        r, i, j = self._page_range("decommit", addr, size)
        if i == j:
            return
        if self.on_map is not None:
            self.on_map(r.base + (i << OS_PAGE_SHIFT), (j - i) << OS_PAGE_SHIFT)
        state = r.state
        self._committed_pages -= state.count(COMMITTED, i, j)
        state[i:j] = state[i:j].translate(_DECOMMIT_TABLE)
        self._drop_backing(addr >> OS_PAGE_SHIFT, (addr + size) >> OS_PAGE_SHIFT)

    def is_committed(self, addr: int) -> bool:
        r = self._region_at(addr)
        return r is not None and r.state[(addr - r.base) >> OS_PAGE_SHIFT] == COMMITTED

    def region_of(self, addr: int) -> tuple[int, int] | None:
        r = self._region_at(addr)
        return None if r is None else (r.base, r.size)

    def _region_at(self, addr: int) -> _Region | None:
        lst = self._chunks.get(addr >> CHUNK_SHIFT)
        if lst is None:
            return None
        if len(lst) == 1:
            r = lst[0]
            return r if r.base <= addr < r.end else None
        # Small alignments put several regions in one chunk: search the sorted bases.
        i = bisect.bisect_right(self._bases, addr) - 1
        if i < 0:
            return None
        r = self._regions[self._bases[i]]
        return r if addr < r.end else None

    def _page_range(self, op: str, addr: int, size: int) -> tuple[_Region, int, int]:
        """The region and its page indices [i, j) for a commit/decommit of [addr, addr+size)."""
        assert addr & OS_PAGE_MASK == 0 and size & OS_PAGE_MASK == 0, (
            f"{op} of {size:#x} bytes at {addr:#x} is not OS-page aligned")
        r = self._region_at(addr)
        if r is None or size < 0 or addr + size > r.end:
            raise ValueError(
                f"{op} of {size:#x} bytes at {addr:#x} is not inside one reserved region")
        i = (addr - r.base) >> OS_PAGE_SHIFT
        return r, i, i + (size >> OS_PAGE_SHIFT)

    def _drop_backing(self, p0: int, p1: int) -> None:
        pages = self._pages
        if p1 - p0 > len(pages):
            doomed = [pn for pn in pages if p0 <= pn < p1]
        else:
            doomed = [pn for pn in range(p0, p1) if pn in pages]
        for pn in doomed:
            del pages[pn]

    # -----------------------------------------------------------------------------------------
    # Shadow tags (not accesses: no hook, no fault, no backing)

    def tag_of(self, addr: int) -> Tag:
        """The tag of the word holding `addr`; UNINIT where nothing is backed."""
        page = self._pages.get(addr >> OS_PAGE_SHIFT)
        if page is None:
            return Tag.UNINIT
        return Tag(page[TAGS_AT + ((addr & OS_PAGE_MASK) >> WORD_SHIFT)])

    def tags(self, addr: int, n: int) -> list[Tag]:
        """The tags of the words overlapping the n bytes at addr, one per word, in order."""
        if n <= 0:
            return []
        first = addr >> WORD_SHIFT
        last = (addr + n - 1) >> WORD_SHIFT
        return [self.tag_of(w << WORD_SHIFT) for w in range(first, last + 1)]

    # -----------------------------------------------------------------------------------------
    # Statistics and self-check

    @property
    def reserved_bytes(self) -> int:
        return self._reserved

    @property
    def committed_bytes(self) -> int:
        return self._committed_pages << OS_PAGE_SHIFT

    @property
    def backed_bytes(self) -> int:
        return len(self._pages) << OS_PAGE_SHIFT

    @property
    def peak_committed_bytes(self) -> int:
        return self._peak_committed_pages << OS_PAGE_SHIFT

    def check_invariants(self) -> None:
        """Assert the module docstring's invariants (slow; for tests and heap-integrity)."""
        for pn, page in self._pages.items():
            assert len(page) == PAGE_RECORD_SIZE, "a backed page keeps its size"
            assert max(page[TAGS_AT:]) <= max(Tag), "every tag byte is a Tag"
            assert self.is_committed(pn << OS_PAGE_SHIFT), (
                f"backed page {pn << OS_PAGE_SHIFT:#x} is not committed")
        regions = list(self._regions.values())
        assert sorted(self._regions) == self._bases, "bases list matches the live regions"
        assert self._committed_pages == sum(r.state.count(COMMITTED) for r in regions), (
            "committed page count matches the regions' page states")
        assert self._reserved == sum(r.size for r in regions), "reserved bytes match"
        assert self._committed_pages <= self._peak_committed_pages, "peak is a maximum"
