"""Symbolic names for the addresses a traced run touches (issue 16).

A `Namer` is an `Observer` installed only on traced runs (replays of counterexamples): it
learns the layout from the runtime's own events (`object_created`, `block_allocated`,
`block_freed`, `block_layout`) and names an address as a field of a modelled object
(`obj#3.ob_ref_shared`, `list#1.ob_item`, `tuple#2.ob_item[1]`), as a field of the block an
object's field points to (`list#1.ob_item[2]`, `dict#1.ma_keys.dk_entries[3].me_value`; the n-th
such block of one owner is `dict#1.ma_keys#n`), as a field of a runtime struct or a mimalloc
record, else as a block and offset with the block's kind and size (`block#7(MEM, 64 B)+8`), else
as an offset in an OS region (`region#2(0x400000B)+0x1040`). An object's header writes before
`object_created` are renamed by the object when it is reported. Numbering follows allocation order, so
names are deterministic. Exploration never installs it: naming costs nothing on the hot path.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
from typing import Any

from ftlab.runtime.mimalloc.types import (
    MI_POOL_OFFSET_ABANDONED,
    MI_POOL_OFFSET_ABANDONED_COUNT,
    MI_POOL_OFFSET_ABANDONED_READERS,
    MI_POOL_OFFSET_ABANDONED_VISITED,
    MI_POOL_OFFSET_ABANDONED_VISITED_COUNT,
    MI_POOL_SIZE,
    MI_SEGMENT_ALIGN,
    MI_SEGMENT_OFFSET_ABANDONED_NEXT,
    MI_SEGMENT_OFFSET_COOKIE,
    MI_SEGMENT_OFFSET_SLICES,
    MI_SEGMENT_OFFSET_THREAD_ID,
)
from ftlab.runtime import dictobject as _dict
from ftlab.runtime import listobject as _list
from ftlab.runtime import tupleobject as _tuple
from ftlab.runtime import typeobject as _type
from ftlab.runtime.object import TP_BASICSIZE, TP_FLAGS
from ftlab.runtime.observer import Observer

# PyObject header fields (object.py offsets), and the free-threaded pre-header before `op`.
_OBJECT_FIELDS = {0: "ob_tid", 8: "ob_flags", 10: "ob_mutex", 11: "ob_gc_bits",
                  12: "ob_ref_local", 16: "ob_ref_shared", 24: "ob_type",
                  -16: "managed_dict", -8: "managed_weakref"}

# The fields after the header, by the object's type (the runtime modules' own offsets); a
# heap type's name starts with "type ", a static type object's ends with " type".
_PAYLOAD_FIELDS = {
    "list": {_list.OB_SIZE: "ob_size", _list.OB_ITEM: "ob_item", _list.ALLOCATED: "allocated"},
    "dict": {_dict.MA_USED: "ma_used", _dict.MA_WATCHER_TAG: "_ma_watcher_tag",
             _dict.MA_KEYS: "ma_keys", _dict.MA_VALUES: "ma_values"},
    "tuple": {_tuple.OB_SIZE: "ob_size"},
    "str": {_dict.STR_HASH: "hash"},
    "type": {_type.TP_VERSION_TAG: "tp_version_tag", _type.TP_MRO: "tp_mro",
             _type.TP_BASES: "tp_bases", _type.TP_DICT: "tp_dict"},
    "static type": {TP_BASICSIZE: "tp_basicsize", TP_FLAGS: "tp_flags"},
}
# the items of a variable-size object: (first item's offset, item size, field)
_PAYLOAD_ITEMS = {"tuple": (_tuple.OB_ITEM, _tuple.ITEMSIZE, "ob_item")}


def _payload_kind(type_name: str) -> str:
    if type_name.endswith(" type"):
        return "static type"
    return type_name.split(" ", 1)[0]


UNNAMED = "?["                 # how the machine marks an address it could not name yet
_UNNAMED_RE = re.compile(r"\?\[(0x[0-9a-f]+)\]")
_HEAP_TAGS = ("MEM", "OBJECT", "GC", "GC_PRE")          # HeapTag, by value
_SEGMENT_FIELDS = {MI_SEGMENT_OFFSET_ABANDONED_NEXT: "abandoned_next",
                   MI_SEGMENT_OFFSET_COOKIE: "cookie", MI_SEGMENT_OFFSET_THREAD_ID: "thread_id"}
_POOL_FIELDS = {MI_POOL_OFFSET_ABANDONED_VISITED: "abandoned_visited",
                MI_POOL_OFFSET_ABANDONED: "abandoned",
                MI_POOL_OFFSET_ABANDONED_COUNT: "abandoned_count",
                MI_POOL_OFFSET_ABANDONED_VISITED_COUNT: "abandoned_visited_count",
                MI_POOL_OFFSET_ABANDONED_READERS: "abandoned_readers"}
_POOL_SIZE = MI_POOL_SIZE


class _Named:
    __slots__ = ("base", "size", "name", "owner", "freed_by", "layout", "kind", "traced_from")

    def __init__(self, base: int, size: int, name: str, owner: str, kind: str = "") -> None:
        self.base = base
        self.size = size
        self.name = name
        self.owner = owner
        self.freed_by = ""
        self.kind = kind                # an object's type, for its payload's field names
        self.traced_from = 0            # a block: the trace's length at its allocation
        # a block that is an object's array: (the array's name, Observer.block_layout's layout)
        self.layout: tuple[str, tuple[tuple[int, str, int, dict[int, str]], ...]] | None = None


def _in_layout(layout: tuple[tuple[int, str, int, dict[int, str]], ...], off: int) -> str:
    """`off` in a block laid out as `block_layout` describes: `.dk_nentries`,
    `.dk_entries[3].me_value`, `[2]` (the array's own items), `.dk_indices[5]`."""
    seg = layout[0]
    for s in layout:
        if s[0] > off:
            break
        seg = s
    start, name, stride, fields = seg
    rest = off - start
    where = f".{name}" if name else ""
    if stride:
        i, rest = divmod(rest, stride)
        where += f"[{i}]"
        field = fields.get(rest)
        if field:
            return f"{where}.{field}"
    return where + (f"+{rest}" if rest else "")


def _thread(t: Any) -> str:
    vt = getattr(t, "vt", None)
    return vt.label if vt is not None else "set-up"


class Namer(Observer):
    """Names addresses from what the runtime reported allocating (see the module docstring)."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.objects: dict[int, _Named] = {}     # live objects by address of the PyObject
        self.blocks: dict[int, _Named] = {}      # live heap blocks by address
        self._object_bases: list[int] = []
        self._block_bases: list[int] = []
        self._counts: dict[str, int] = {}
        self._regions: dict[int, str] = {}
        self.history: list[str] = []
        self._nstructs = -1
        self._structs: list[Any] = []
        self._struct_bases: list[int] = []
        self._segments: dict[int, int] = {}             # block lives in words, for the violation

    def _number(self, kind: str) -> str:
        n = self._counts.get(kind, 0) + 1
        self._counts[kind] = n
        return f"{kind}#{n}"

    # -- events --

    def object_created(self, t, op, size, type_name, immortal) -> None:
        if type_name.endswith(" type"):            # a static type object: one per type
            label = f"PyType({type_name[:-5]})"
        else:
            label = self._number("obj" if type_name in ("object", "PyObject") else type_name)
        rec = _Named(op, size, label, _thread(t), _payload_kind(type_name))
        if op not in self.objects:
            bisect.insort(self._object_bases, op)
        self.objects[op] = rec
        self._rename_header_writes(op, rec)
        self.history.append(f"{rec.name} ({type_name}, {size} B) created by {rec.owner} "
                            f"at step {self.rt.machine.steps}")

    def object_freeing(self, t, op) -> None:
        rec = self.objects.get(op)
        if rec is not None:
            self.history.append(f"{rec.name} freed by {_thread(t)} at step {self.rt.machine.steps}")

    def block_allocated(self, t, ptr, size, heap) -> None:
        tag = getattr(heap, "tag", None)
        kind = _HEAP_TAGS[tag] if tag is not None and tag < len(_HEAP_TAGS) else "MEM"
        rec = _Named(ptr, size, f"{self._number('block')}({kind}, {size} B)", _thread(t))
        trace = self.rt.machine.trace
        rec.traced_from = len(trace) if trace is not None else 0
        if ptr not in self.blocks:
            bisect.insort(self._block_bases, ptr)
        self.blocks[ptr] = rec

    def block_freed(self, t, ptr) -> None:
        rec = self.blocks.get(ptr)
        if rec is not None:
            rec.freed_by = _thread(t)

    def block_layout(self, ptr, owner, field, layout) -> None:
        rec, obj = self.blocks.get(ptr), self.objects.get(owner)
        owner_name = obj.name if obj is not None else self._struct(owner)   # `tstate#1`
        if rec is not None and owner_name is not None:
            name = f"{re.split(r'[.+]', owner_name, maxsplit=1)[0]}.{field}"
            n = self._counts.get(name, 0) + 1           # the owner's n-th such array
            self._counts[name] = n
            rec.layout = (name if n == 1 else f"{name}#{n}", layout)

    def _rename_header_writes(self, op: int, obj: _Named) -> None:
        """The header writes of an object's initialisation come before `object_created` and
        were named by its block (`block#3(OBJECT, 32 B)+8`): name them by the object now."""
        trace = self.rt.machine.trace
        blk = self._find(self._block_bases, self.blocks, op)
        if trace is None or blk is None:
            return
        pat = re.compile(re.escape(blk.name) + r"\+\d+ \[(0x[0-9a-f]+)\]")

        def sub(m: "re.Match[str]") -> str:
            addr = int(m.group(1), 16)
            name = self.name(addr) if op - 16 <= addr < op + obj.size else None
            return f"{name} [{addr:#x}]" if name else m.group(0)
        for e in trace[blk.traced_from:]:
            if blk.name in e.what:
                e.what = pat.sub(sub, e.what)

    # -- naming --

    @staticmethod
    def _find(bases: list[int], table: dict[int, _Named], addr: int, before: int = 0):
        i = bisect.bisect_right(bases, addr + before) - 1
        if i < 0:
            return None
        rec = table[bases[i]]
        return rec if rec.base - before <= addr < rec.base + rec.size else None

    def name(self, addr: int, final: bool = False, pointer: bool = False) -> str | None:
        """The name of `addr` now; `final` (the end-of-run pass) also names OS regions.
        `pointer` (a call's result): the start of an object or a block names the whole of it."""
        if pointer:
            rec = self.objects.get(addr) or self.blocks.get(addr)
            if rec is not None:
                return rec.layout[0] if rec.layout is not None else rec.name
        obj = self._find(self._object_bases, self.objects, addr, 16)
        if obj is not None:
            off = addr - obj.base
            field = _OBJECT_FIELDS.get(off)
            if field is None:
                field = _PAYLOAD_FIELDS.get(obj.kind, {}).get(off)
            if field is None and obj.kind in _PAYLOAD_ITEMS:
                first, size, items = _PAYLOAD_ITEMS[obj.kind]
                if off >= first:
                    i, rest = divmod(off - first, size)
                    field = f"{items}[{i}]" + (f"+{rest}" if rest else "")
            return f"{obj.name}.{field}" if field else f"{obj.name}+{off}"
        blk = self._find(self._block_bases, self.blocks, addr)
        if blk is not None:
            off = addr - blk.base
            if blk.layout is not None:        # `list#1.ob_item[2]`, `dict#1.ma_keys.dk_usable`
                return blk.layout[0] + _in_layout(blk.layout[1], off)
            heap = self._heap(addr)         # a heap record from its thread's backing heap
            if heap is not None:
                return heap
            return f"{blk.name}+{off}"
        name = self._struct(addr) or self._mimalloc(addr)
        if name is not None:
            return name
        name = self._shared(addr)
        if name is not None:
            return name
        region = self.rt.mem.region_of(addr) if final else None
        if region is not None:
            base, size = region
            label = self._regions.get(base)
            if label is None:
                label = self._regions[base] = f"region#{len(self._regions) + 1}({size:#x}B)"
            return f"{label}+{addr - base:#x}"
        return None

    def _shared(self, addr: int) -> str | None:
        """The scenario's own words: a field of `rt.shared` (a dataclass) that holds an
        address names the 64 bytes from there (`mailbox.flag`, `slot.addr+8`)."""
        shared = getattr(self.rt, "shared", None)
        if shared is None or not dataclasses.is_dataclass(shared):
            return None
        best = None
        for f in dataclasses.fields(shared):
            v = getattr(shared, f.name)
            if type(v) is int and v <= addr < v + 64 and (best is None or v > best[1]):
                best = (f.name, v)
        if best is None:
            return None
        label = f"{type(shared).__name__.lstrip('_').lower()}.{best[0]}"
        off = addr - best[1]
        return f"{label}+{off}" if off else label

    def _struct(self, addr: int) -> str | None:
        structs = self.rt.struct_names
        if len(structs) != self._nstructs:
            self._structs = sorted(structs, key=lambda s: s[0])
            self._struct_bases = [s[0] for s in self._structs]
            self._nstructs = len(structs)
        i = bisect.bisect_right(self._struct_bases, addr) - 1
        if i < 0:
            return None
        base, size, name, fields, stride = self._structs[i]
        off = addr - base
        if off >= size:
            return None
        if stride:
            name = f"{name}[{off // stride}]"
            off %= stride
        field = fields.get(off)
        return f"{name}.{field}" if field else f"{name}+{off}"

    def _segment_label(self, base: int) -> str:
        n = self._segments.get(base)
        if n is None:
            n = self._segments[base] = len(self._segments)
        return f"seg {n}"

    def _mimalloc(self, addr: int) -> str | None:
        mi = self.rt.mimalloc
        build = mi.build
        base = addr & ~(MI_SEGMENT_ALIGN - 1)
        if base in mi.segments:
            seg = self._segment_label(base)
            off = addr - base
            if off < MI_SEGMENT_OFFSET_SLICES:
                field = _SEGMENT_FIELDS.get(off)
                return f"segment({seg}).{field}" if field else f"segment({seg})+{off}"
            i, poff = divmod(off - MI_SEGMENT_OFFSET_SLICES, mi.sizeof_page)
            if i <= (mi.sizeof_segment - MI_SEGMENT_OFFSET_SLICES) // mi.sizeof_page:
                field = {build.page_offset_xthread_free: "xthread_free",
                         build.page_offset_xheap: "xheap",
                         # QSBR page lists (pycore_llist.h)
                         build.page_offset_qsbr_node: "qsbr_node.next",
                         build.page_offset_qsbr_node + 8: "qsbr_node.prev",
                         build.page_offset_qsbr_goal: "qsbr_goal"}.get(poff)
                where = f"page({seg}, slice {i})"
                return f"{where}.{field}" if field else f"{where}+{poff}"
            return f"segment({seg}) data+{off:#x}"
        heap = self._heap(addr)
        if heap is not None:
            return heap
        if mi.pool is not None and mi.pool.addr <= addr < mi.pool.addr + _POOL_SIZE:
            off = addr - mi.pool.addr
            field = _POOL_FIELDS.get(off)
            return f"abandoned_pool.{field}" if field else f"abandoned_pool+{off}"
        return None

    def _heap(self, addr: int) -> str | None:
        """A field of a `mi_heap_t` record (`heap(a, OBJECT).pages_free_direct[5]`)."""
        mi = self.rt.mimalloc
        build = mi.build
        size = build.sizeof_heap()
        for haddr, heap in mi.heaps_by_addr.items():
            if haddr <= addr < haddr + size:
                off = addr - haddr
                tag = _HEAP_TAGS[heap.tag] if heap.tag < len(_HEAP_TAGS) else str(heap.tag)
                owner = _thread(heap.tld.tstate) if heap.tld is not None else "?"
                where = f"heap({owner.split(':')[0]}, {tag})"
                if off == build.heap_offset_thread_delayed_free:
                    return f"{where}.thread_delayed_free"
                if off == build.heap_offset_thread_id:
                    return f"{where}.thread_id"
                if 8 <= off < 8 + 8 * build.pages_direct:
                    return f"{where}.pages_free_direct[{(off - 8) // 8}]"
                return f"{where}+{off}"
        return None

    def rename_trace(self, trace: list[Any]) -> None:
        """At the end of a run: name the accesses that happened before the runtime reported
        what they touch (a header written before `object_created`, a heap before it was
        registered); memory reused since then is not an issue for such set-up writes."""
        for e in trace:
            if UNNAMED in e.what:
                e.what = _UNNAMED_RE.sub(self._rename, e.what)
            if UNNAMED in e.result:
                e.result = _UNNAMED_RE.sub(lambda m: self._rename(m, True), e.result)

    def _rename(self, m: "re.Match[str]", pointer: bool = False) -> str:
        addr = int(m.group(1), 16)
        name = self.name(addr, True, pointer)
        if name is None and pointer:
            return f"{addr:#x}"         # a result: maybe no pointer at all (a count, a hash)
        return f"{name} [{addr:#x}]" if name else f"[{addr:#x}]"

    def history_of(self, name: str) -> list[str]:
        return [h for h in self.history if h.startswith(name + " ")]


_ACCESS = re.compile(r"((?:[^\s(\[]|\([^)]*\))*) ?\[(0x[0-9a-f]+)\]")
_OP_OR_WIDTH = re.compile(r"^[a-z_-]*$|^\d+$")          # `load`, `cas-fail`, `8`: no name


_OFFSET = re.compile(r"\+(?:0x[0-9a-f]+|\d+)$")        # `block#7(MEM, 64 B)+8`, `Item#1+32`


def named_accesses(trace: list[Any], by_field: bool = False) -> tuple[int, int]:
    """(named, total) over the memory accesses of a trace: an access is named when the
    timeline shows a symbolic name for it (not a bare address, not only an OS region);
    `by_field`: only a name that ends in a field or an item counts, not an offset in an
    object or a block (`Item#1+32`, `block#3(MEM, 120 B)+16`)."""
    named = total = 0
    for e in trace:
        if e.thread < 0:
            continue
        for name, _ in _ACCESS.findall(e.what):
            total += 1
            if not _OP_OR_WIDTH.match(name) and not name.startswith(("region#", "?")) and \
                    not (by_field and _OFFSET.search(name)):
                named += 1
    return named, total
