"""Symbolic names for the addresses a traced run touches (issue 16).

A `Namer` is an `Observer` installed only on traced runs (replays of counterexamples): it
learns the layout from the runtime's own events (`object_created`, `block_allocated`,
`block_freed`) and names an address as a field of a modelled object (`obj#3.ob_ref_shared`,
`list#1.+40`), else as a block and offset with the block's size (`block#7(64 B)+8`), else as
an offset in an OS region (`region#2(0x400000B)+0x1040`). Numbering follows allocation order, so
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
from ftlab.runtime.observer import Observer

# PyObject header fields (object.py offsets), and the free-threaded pre-header before `op`.
_OBJECT_FIELDS = {0: "ob_tid", 8: "ob_flags", 10: "ob_mutex", 11: "ob_gc_bits",
                  12: "ob_ref_local", 16: "ob_ref_shared", 24: "ob_type",
                  -16: "managed_dict", -8: "managed_weakref"}

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
    __slots__ = ("base", "size", "name", "owner", "freed_by")

    def __init__(self, base: int, size: int, name: str, owner: str) -> None:
        self.base = base
        self.size = size
        self.name = name
        self.owner = owner
        self.freed_by = ""


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
        rec = _Named(op, size, label, _thread(t))
        if op not in self.objects:
            bisect.insort(self._object_bases, op)
        self.objects[op] = rec
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
        if ptr not in self.blocks:
            bisect.insort(self._block_bases, ptr)
        self.blocks[ptr] = rec

    def block_freed(self, t, ptr) -> None:
        rec = self.blocks.get(ptr)
        if rec is not None:
            rec.freed_by = _thread(t)

    # -- naming --

    @staticmethod
    def _find(bases: list[int], table: dict[int, _Named], addr: int, before: int = 0):
        i = bisect.bisect_right(bases, addr + before) - 1
        if i < 0:
            return None
        rec = table[bases[i]]
        return rec if rec.base - before <= addr < rec.base + rec.size else None

    def name(self, addr: int, final: bool = False) -> str | None:
        """The name of `addr` now; `final` (the end-of-run pass) also names OS regions."""
        obj = self._find(self._object_bases, self.objects, addr, 16)
        if obj is not None:
            off = addr - obj.base
            field = _OBJECT_FIELDS.get(off)
            return f"{obj.name}.{field}" if field else f"{obj.name}+{off}"
        blk = self._find(self._block_bases, self.blocks, addr)
        if blk is not None:
            return f"{blk.name}+{addr - blk.base}"
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
        if mi.pool is not None and mi.pool.addr <= addr < mi.pool.addr + _POOL_SIZE:
            off = addr - mi.pool.addr
            field = _POOL_FIELDS.get(off)
            return f"abandoned_pool.{field}" if field else f"abandoned_pool+{off}"
        return None

    def rename_trace(self, trace: list[Any]) -> None:
        """At the end of a run: name the accesses that happened before the runtime reported
        what they touch (a header written before `object_created`, a heap before it was
        registered); memory reused since then is not an issue for such set-up writes."""
        for e in trace:
            if UNNAMED in e.what:
                e.what = _UNNAMED_RE.sub(self._rename, e.what)

    def _rename(self, m: "re.Match[str]") -> str:
        addr = int(m.group(1), 16)
        name = self.name(addr, True)
        return f"{name} [{addr:#x}]" if name else f"[{addr:#x}]"

    def history_of(self, name: str) -> list[str]:
        return [h for h in self.history if h.startswith(name + " ")]


_ACCESS = re.compile(r"(\S*) ?\[(0x[0-9a-f]+)\]")
_OP_OR_WIDTH = re.compile(r"^[a-z_-]*$|^\d+$")          # `load`, `cas-fail`, `8`: no name


def named_accesses(trace: list[Any]) -> tuple[int, int]:
    """(named, total) over the memory accesses of a trace: an access is named when the
    timeline shows a symbolic name for it (not a bare address, not only an OS region)."""
    named = total = 0
    for e in trace:
        if e.thread < 0:
            continue
        for name, _ in _ACCESS.findall(e.what):
            total += 1
            if not _OP_OR_WIDTH.match(name) and not name.startswith(("region#", "?")):
                named += 1
    return named, total
