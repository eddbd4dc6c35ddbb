"""The reference's worked examples, through the allocator (reference/mimalloc.md §2-§8, §10).

Each row allocates in a fresh runtime and reads the block's page with `block_info`.
"""

from __future__ import annotations

import pytest

from ftlab.runtime import mimalloc
from ftlab.runtime.mimalloc import block_info
from ftlab.runtime.mimalloc.alloc import ptr_usable_size
from ftlab.runtime.mimalloc.types import MI_SEGMENT_SIZE, MiSegmentKind

KiB = 1024
MiB = 1024 * KiB


# request -> (block size, slice count, first capacity (one extension), reserved, start offset)
PAGES = [
    (8, 8, 1, 512, 8189, 24),           # 3 blocks in: small blocks stagger their pages
    (48, 48, 1, 85, 1362, 144),
    (64, 64, 1, 64, 1021, 192),
    (100, 112, 1, 36, 584, 112),        # 1 block in (<= 512 B)
    (896, 896, 1, 4, 73, 0),
    (1024, 1024, 1, 4, 64, 0),
    (4096, 4096, 1, 4, 16, 0),
    (16 * KiB, 16 * KiB, 1, 4, 4, 0),   # the largest small block
    (16 * KiB + 1, 20480, 8, 4, 25, 0),  # medium: 512 KiB pages
    (98304, 98304, 8, 4, 5, 0),
    (128 * KiB, 128 * KiB, 8, 4, 4, 0),
    (131080, 196608, 3, 1, 1, 0),       # large: the block is the whole page
    (600_000, 1 * MiB, 16, 1, 1, 0),    # > 512 KiB: aligned to 512 KiB
]


@pytest.mark.parametrize("n,bsize,slices,capacity,reserved,offset", PAGES)
def test_first_page_of_a_size(make_run, n, bsize, slices, capacity, reserved, offset) -> None:
    run = make_run()
    out = {}

    async def main(t):
        p = await t.malloc(n)
        out["info"] = block_info(run.rt, p)
        out["usable"] = ptr_usable_size(run.mi, p)
        await t.free(p)

    run.main(main)
    info = out["info"]
    assert info.block_size == bsize
    assert info.slice_index == 1, "a fresh segment hands out slice 1 first"
    assert info.slice_count == slices
    assert (info.capacity, info.reserved) == (capacity, reserved)
    assert info.page_start - info.segment_base - 65536 == offset
    assert info.block_index == 0
    assert out["usable"] == bsize


def test_good_sizes_around_128_kib_and_16_mib() -> None:
    assert mimalloc.good_size(131072) == 131072
    assert mimalloc.good_size(131073) == 135168         # rounded to 4 KiB, under the usable size
    assert mimalloc.good_size(131080) == 135168
    assert mimalloc.good_size(16 * MiB) == 16 * MiB
    assert mimalloc.good_size(16 * MiB + 1) == 16 * MiB + 4096
    assert mimalloc.bin_index(131072) == 52 and mimalloc.bin_index(131073) == 73


def test_huge_blocks_get_a_segment_of_their_own(make_run) -> None:
    run = make_run()
    out = {}

    async def main(t):
        small = await t.malloc(16)
        big = await t.malloc(16 * MiB + 1)
        out["small"] = block_info(run.rt, small)
        out["big"] = block_info(run.rt, big)
        out["usable"] = ptr_usable_size(run.mi, big)
        await t.free(big)
        await t.free(small)

    run.main(main)
    big, small = out["big"], out["small"]
    assert big.segment_kind == MiSegmentKind.MI_SEGMENT_HUGE
    assert big.segment_base != small.segment_base
    assert big.slice_index == 1 and big.page_start == big.segment_base + 65536
    assert out["usable"] == big.block_size >= 16 * MiB + 1
    assert big.segment_base % MI_SEGMENT_SIZE == 0


def test_fresh_pages_come_from_consecutive_slices(make_run) -> None:
    """Consequence of first-fit span search: pages are carved from low slices to high."""
    run = make_run()
    slices = []

    async def main(t):
        ps = [await t.malloc(n) for n in (16, 48, 100, 1000, 5000, 20000, 300)]
        slices.extend(block_info(run.rt, p).slice_index for p in ps)
        for p in ps:
            await t.free(p)

    run.main(main)
    assert slices == [1, 2, 3, 4, 5, 6, 14]      # 20000 is medium: 8 slices (6..13)


def test_local_free_is_reused_only_when_free_runs_out(make_run) -> None:
    """`local_free` migrates to `free` only when `free` is empty (the heartbeat)."""
    run = make_run()

    async def main(t):
        ps = [await t.malloc(1024) for _ in range(4)]      # the whole first extension
        keep = await t.malloc(1024)                        # extension 2 starts: block 4
        await t.free(ps[1])
        q = await t.malloc(1024)
        assert block_info(run.rt, q).block_index == 5, "from the extension, not local_free"
        rest = [await t.malloc(1024) for _ in range(2)]    # blocks 6, 7: free is now empty
        r = await t.malloc(1024)                           # local_free migrates
        assert r == ps[1]
        for p in ps[:1] + ps[2:] + [keep, q, r] + rest:
            await t.free(p)

    run.main(main)


def test_an_emptied_page_is_retired_when_it_is_the_only_one_of_its_size(make_run) -> None:
    run = make_run()

    async def main(t):
        p = await t.malloc(48)
        page = run.page_of(p)
        await t.free(p)
        assert page.xblock_size == 48 and page.retire_expire == 17, "kept, retired"
        # each fresh page of another size counts the retired page down; 17 free it
        sizes = [16, 32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768]
        kept = []
        for k, n in enumerate(sizes, 1):
            kept.append(await t.malloc(n))
            if k < 17:
                assert page.xblock_size == 48 and page.retire_expire == 17 - k
        assert page.xblock_size != 48, "expired: freed back to its segment"
        for q in kept:
            await t.free(q)

    run.main(main)


def test_freed_span_is_decommitted_after_the_purge_delay(make_run) -> None:
    """A freed page's span is scheduled for a purge after `purge_delay` (10 virtual ms, 1,000
    steps); a span freed after the delay has passed purges everything due at once
    (decommitted: an access faults); a later page there commits it again and reads zeros."""
    from ftlab.runtime.mimalloc.init import MI_STEPS_PER_MS
    from ftlab.sim.memory import Tag
    from ftlab.sim.violation import ViolationError

    run = make_run()
    mem = run.rt.mem
    out = {}

    async def main(t):
        keep = await t.malloc(16)               # slice 1
        big = await t.malloc(300_000)           # a large page: slices 2..6
        mid = await t.malloc(200_000)           # slices 7..10
        mem.store_u64(big + 70_000, 0x1234, Tag.PAYLOAD)
        await t.free(big)                       # purge of slices 2..6 scheduled
        out["early"] = mem.is_committed(big + 70_000)
        for _ in range(11 * MI_STEPS_PER_MS):   # let virtual time pass
            await t.yield_now()
        await t.free(mid)                       # a span free after the expiry: purge now
        out["purged"] = not mem.is_committed(big + 70_000)
        try:
            mem.load_u64(big + 70_000)
        except ViolationError as e:
            out["fault"] = e.kind
        again = await t.malloc(300_000)         # first fit: the same span, committed again
        out["reused"] = again == big and mem.load_u64(big + 70_000) == 0
        for p in (keep, again):
            await t.free(p)

    run.main(main)
    assert out == {"early": True, "purged": True, "fault": "segfault", "reused": True}
