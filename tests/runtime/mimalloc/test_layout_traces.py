"""Layout against the real allocator: reference traces of mimalloc v2.1.2.

`data/mimalloc_v212_traces.json.gz` was produced by a throwaway C driver linked with the real
v2.1.2 (release build with NDEBUG, and `MI_DEBUG=2`), replaying deterministic single-thread
alloc/free sequences on the main thread's default heap (or on a `mi_heap_new()` heap) and
printing, after each operation, the state of the page the operation touched:

    segment_slot   (segment address - first segment address) / 32 MiB: the arena slot
    slice_index    the page's first slice in its segment
    slice_count, xblock_size, block_index (-1 for a free),
    used, capacity, reserved, in_full, segment_used, segment_kind

The sequences grow and shrink a live set, so pages fill, move to the full queue and back
(the `full` traces: about a hundred moves each way), empty, retire and expire, go back to spans
that coalesce, and segments are added and freed; they cover small, medium, large and huge pages
and both builds. The model must reproduce every row.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from ftlab import Config, Runtime
from ftlab.runtime.mimalloc.segment import segment_page_of
from ftlab.runtime.mimalloc.types import MI_SEGMENT_MASK, MI_SEGMENT_SIZE

DATA = json.loads(gzip.decompress(
    (Path(__file__).parent / "data" / "mimalloc_v212_traces.json.gz").read_bytes()))
TRACES = {t["name"]: t for t in DATA["traces"]}


def replay(trace: dict) -> list[list[int]]:
    """Run the trace's operations on the model; the same columns as the C driver printed."""
    rt = Runtime(Config(pydebug=trace["build"] == "debug", race_detection=False,
                        max_steps=10**7, checked=False))
    mi = rt.mimalloc
    rows: list[list[int]] = []
    first: list[int] = []

    def dump(p: int, page, is_malloc: bool) -> None:
        seg = page.segment
        if not first:
            first.append(seg.base)
        slot = (seg.base - first[0]) // MI_SEGMENT_SIZE
        bidx = -1
        if is_malloc:
            start = seg.base + page.index * 65536
            bsize = page.xblock_size
            if bsize <= 512 and bsize >= 8:
                start += (3 if bsize <= 64 else 1) * bsize
            bidx = (p - start) // bsize if bsize < (1 << 31) else 0
        rows.append([slot, page.index, page.slice_count, page.xblock_size, bidx, page.used,
                     page.capacity, page.reserved, int(bool(page.flags & 1)), seg.used,
                     int(seg.kind)])

    def page_of(p: int):
        seg = mi.segments[(p - 1) & ~MI_SEGMENT_MASK]
        return segment_page_of(seg, p)

    async def main(t):
        slots: dict[int, int] = {}
        if trace["heap_new"]:
            heap = await t.heap_new()
            dump(heap.addr, page_of(heap.addr), True)
            malloc, free = heap.malloc, heap.free
        else:
            malloc, free = t.malloc, t.free
        for op in trace["ops"]:
            if op[0] == "m":
                p = await malloc(op[2])
                slots[op[1]] = p
                dump(p, page_of(p), True)
            else:
                p = slots.pop(op[1])
                page = page_of(p)
                await free(p)
                dump(p, page, False)

    rt.run_main(main)
    return rows


@pytest.mark.parametrize("name", sorted(TRACES))
def test_model_reproduces_reference_trace(name: str) -> None:
    trace = TRACES[name]
    got = replay(trace)
    want = trace["expect"]
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            ops = trace["ops"]
            k = i - 1 if trace["heap_new"] else i
            op = ops[k] if k >= 0 else "heap_new"
            cols = DATA["columns"]
            diff = {c: (a, b) for c, a, b in zip(cols, g, w) if a != b}
            pytest.fail(f"{name}: row {i} (op {op}) differs (model, C): {diff}\n"
                        f"model {g}\nC     {w}")
