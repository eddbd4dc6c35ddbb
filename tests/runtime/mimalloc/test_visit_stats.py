"""Heap visiting and statistics (`visit.py`, `stats.py`), and `block_info`'s refusals."""

from __future__ import annotations

import pytest

from ftlab.runtime.mimalloc import block_info
from ftlab.runtime.mimalloc.stats import allocated_blocks, snapshot
from ftlab.runtime.mimalloc.types import HeapTag
from ftlab.runtime.mimalloc.visit import heap_visit_blocks


def test_visit_yields_exactly_the_live_blocks_in_address_order(make_run) -> None:
    run = make_run()
    out = {}

    async def main(t):
        heap = t.mimalloc.heaps[HeapTag.GC]
        ps = [await heap.malloc(48) for _ in range(40)] + [await heap.malloc(5000)]
        for p in ps[::3]:
            await t.free(p)
        live = [p for i, p in enumerate(ps) if i % 3]
        seen: list[int] = []
        areas = []

        def visitor(h, area, block, bsize):
            assert h is heap
            if block is None:
                areas.append(area)
            else:
                seen.append(block)
            return True

        assert await heap_visit_blocks(heap, True, visitor)
        out["ok"] = sorted(seen) == sorted(live)
        small = [b for b in seen if block_info(run.rt, b).block_size == 48]
        out["ascending"] = small == sorted(small)
        out["area_used"] = sum(a.used for a in areas) == len(live)
        out["usable"] = {a.block_size for a in areas} == {48, 5120}
        # stop early: the visitor returning False ends the walk
        count = 0

        def stop(h, area, block, bsize):
            nonlocal count
            count += 1
            return count < 3
        out["stopped"] = not await heap_visit_blocks(heap, True, stop) and count == 3
        for p in live:
            await t.free(p)

    run.main(main)
    assert out == {"ok": True, "ascending": True, "area_used": True, "usable": True,
                   "stopped": True}


def test_snapshot_and_allocated_blocks_count_live_blocks_including_abandoned(make_run) -> None:
    run = make_run()
    out = {}

    async def leaver(t):
        for tag in (HeapTag.MEM, HeapTag.OBJECT, HeapTag.GC, HeapTag.GC_PRE):
            await t.mimalloc.heaps[tag].malloc(64)

    async def main(t):
        mine = [await t.malloc(n) for n in (16, 300, 4000)]
        child = await t.spawn(leaver)
        await t.join(child)
        st = snapshot(run.mi)
        out["snapshot"] = (st.blocks_live, st.blocks_in_use_abandoned, st.pages_abandoned,
                           st.segments_abandoned)
        out["by_heap"] = sum(st.blocks_by_heap.values())
        out["allocated"] = await allocated_blocks(run.rt)
        out["committed"] = st.committed_bytes > 0 and st.mem_committed_bytes >= st.committed_bytes
        for p in mine:
            await t.free(p)

    run.main(main)
    assert out["snapshot"] == (7, 4, 4, 1)
    assert out["by_heap"] == 3
    assert out["allocated"] == 7
    assert out["committed"]


def test_block_info_refuses_pointers_outside_pages(make_run) -> None:
    run = make_run()

    async def main(t):
        p = await t.malloc(32)
        info = block_info(run.rt, p)
        with pytest.raises(ValueError):
            block_info(run.rt, info.segment_base + 16)          # the header
        with pytest.raises(ValueError):
            block_info(run.rt, info.segment_base + 200 * 65536)  # a free span
        with pytest.raises(ValueError):
            block_info(run.rt, run.rt.mem.reserve(4096))
        await t.free(p)

    run.main(main)
