"""Property-based single-thread sequences against a ghost model of the live blocks.

A hypothesis program is a list of operations on the MEM heap, the OBJECT and GC heaps and a
`heap_new` heap: allocate `n` bytes, or free the i-th live block. The ghost records every live
block; after every operation:

* no two live blocks overlap (`[p, p + usable)`), and each lies inside a page in use;
* alignment: every block is 8-aligned, 16-aligned from 16 bytes on, and aligned to its size
  for power-of-two sizes up to `MI_MAX_ALIGN_GUARANTEE` (128);
* usable sizes: `ptr_usable_size(p)` equals `bins.usable_size(n)` (release and MI_DEBUG=2);
* counters: in a single thread every page's `used` is exactly the number of its live blocks;
* payload: each block keeps the pattern written into its first and last usable words until
  it is freed (no other allocation overwrote it);
* every block is freed exactly once (the heap oracles run throughout, and at the end).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftlab.runtime.mimalloc import block_info
from ftlab.runtime.mimalloc.alloc import ptr_usable_size
from ftlab.runtime.mimalloc.bins import usable_size
from ftlab.runtime.mimalloc.segment import slice_at
from ftlab.runtime.mimalloc.types import MI_MAX_ALIGN_GUARANTEE, HeapTag
from ftlab.sim.memory import Tag

SIZES = st.one_of(
    st.integers(0, 130),
    st.integers(0, 1024),
    st.integers(1025, 20_000),
    st.sampled_from([16, 32, 64, 128, 4096, 16384, 16385, 131072, 131073, 300_000]),
)
HEAPS = st.sampled_from(["mem", "object", "gc", "new"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("m"), SIZES, HEAPS),
        st.tuples(st.just("f"), st.integers(0, 10_000), st.just("")),
    ),
    min_size=1, max_size=120,
)


def _run_program(make_run, ops, pydebug: bool) -> None:
    run = make_run(pydebug=pydebug)
    rt = run.rt
    mi = run.mi
    build = mi.build

    async def main(t):
        new = await t.heap_new()
        heaps = {"mem": t.mimalloc.heaps[HeapTag.MEM], "object": t.mimalloc.heaps[HeapTag.OBJECT],
                 "gc": t.mimalloc.heaps[HeapTag.GC], "new": new}
        live: list[tuple[int, int]] = []       # (ptr, requested size)
        mem = t.mem
        for op, arg, which in ops:
            if op == "m":
                p = await heaps[which].malloc(arg)
                assert p, "out of memory"
                u = ptr_usable_size(mi, p)
                assert u == usable_size(arg, build), (arg, u)
                assert p % 8 == 0
                if arg >= 16 or build.padding:
                    assert p % 16 == 0, hex(p)
                if arg & (arg - 1) == 0 and 8 <= arg <= MI_MAX_ALIGN_GUARANTEE and not build.padding:
                    assert p % arg == 0, (arg, hex(p))
                if u >= 16:
                    mem.store_u64(p, p ^ 0xA5A5, Tag.PAYLOAD)
                    mem.store_u64(p + (u & ~7) - 8, p ^ 0x5A5A, Tag.PAYLOAD)
                live.append((p, u))
            elif live:
                p, u = live.pop(arg % len(live))
                if u >= 16:
                    assert mem.load_u64(p) == p ^ 0xA5A5, "payload overwritten"
                    assert mem.load_u64(p + (u & ~7) - 8) == p ^ 0x5A5A, "payload overwritten"
                await t.free(p)
            # ghost checks after every operation
            spans = sorted((p, p + max(u, 1)) for p, u in live)
            for (a0, a1), (b0, _b1) in zip(spans, spans[1:]):
                assert a1 <= b0, f"blocks {a0:#x} and {b0:#x} overlap"
            per_page: dict[int, int] = {}
            for p, _u in live:
                info = block_info(rt, p)
                assert info.block_start == p
                assert info.block_index < info.capacity <= info.reserved
                key = info.segment_base + info.slice_index
                per_page[key] = per_page.get(key, 0) + 1
            for seg in mi.segments.values():
                i = seg.segment_info_slices
                while i < seg.slice_entries:
                    s = slice_at(seg, i)
                    if s.xblock_size > 1:
                        # the heap record of `new` is a live block the ghost does not list
                        extra = 1 if s.index == block_info(rt, new.addr).slice_index and \
                            seg.base == block_info(rt, new.addr).segment_base else 0
                        assert s.used == per_page.get(seg.base + s.index, 0) + extra, s
                    i += s.slice_count
        for p, _u in live:
            await t.free(p)
        await new.delete()

    run.main(main)
    assert not run.checker.live, "blocks left live at the end"


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(OPS)
def test_sequences_keep_the_ghost_invariants(make_run, ops) -> None:
    _run_program(make_run, ops, pydebug=False)


@settings(max_examples=50, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(OPS)
def test_sequences_keep_the_ghost_invariants_in_debug_builds(make_run, ops) -> None:
    _run_program(make_run, ops, pydebug=True)
