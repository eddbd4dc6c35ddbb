"""The heap oracles (`ftlab/check/heap.py`): each fires on a hand-made bad free or corrupt
state, with its history, and stays quiet on valid runs."""

from __future__ import annotations

import pytest

from ftlab import Config, Runtime
from ftlab.check import heap as heap_check
from ftlab.explore.execute import execute
from ftlab.runtime.mimalloc import block_info
from ftlab.runtime.mimalloc.page_queue import IN_FULL
from ftlab.runtime.mimalloc.segment import segment_page_of
from ftlab.runtime.mimalloc.types import MI_SEGMENT_MASK, HeapTag
from ftlab.scenarios import get
from ftlab.sim import PCT, Random
from ftlab.sim.memory import Tag
from ftlab.sim.violation import ViolationError


def _runtime(**config) -> tuple[Runtime, heap_check.HeapChecker]:
    config.setdefault("max_steps", 200_000)
    rt = Runtime(Config(**config))
    return rt, heap_check.install(rt)


def _page(rt: Runtime, p: int):
    seg = rt.mimalloc.segments[(p - 1) & ~MI_SEGMENT_MASK]
    return segment_page_of(seg, p)


def _violation(rt: Runtime, fn) -> ViolationError:
    with pytest.raises(ViolationError) as err:
        rt.run_main(fn)
    return err.value


# ---------------------------------------------------------------------------------------------
# invalid-free and double-free

def test_double_free_is_reported_with_the_block_history() -> None:
    rt, _ = _runtime()

    async def main(t):
        p = await t.malloc(40)
        await t.free(p)
        await t.free(p)

    v = _violation(rt, main)
    assert v.kind == "double-free"
    assert "already free" in v.message
    assert any("allocated (40 bytes, heap tag 0) by a:main at step" in d for d in v.details)
    assert any(d.startswith("freed by a:main at step") for d in v.details)
    assert any(d.startswith("freed again by a:main") for d in v.details)


def test_double_free_by_another_thread_names_both_threads() -> None:
    rt, checker = _runtime()
    box: list[int] = []

    async def owner(t):
        p = await t.malloc(100)
        box.append(p)
        await t.free(p)

    async def main(t):
        child = await t.spawn(owner, name="owner")
        await t.join(child)
        await t.free(box[0])

    v = _violation(rt, main)
    assert v.kind == "double-free"
    assert any("by b:owner" in d for d in v.details) and any("again by a:main" in d for d in v.details)


@pytest.mark.parametrize("where,words", [
    ("interior", "bytes into block"),
    ("outside", "not in any mimalloc segment"),
    ("header", "in the header of segment"),
    ("never", "never handed out"),
    ("span", "free span"),
])
def test_invalid_free_explains_the_pointer(where: str, words: str) -> None:
    rt, _ = _runtime()

    async def main(t):
        p = await t.malloc(48)
        info = block_info(rt, p)
        bad = {
            "interior": p + 16,
            "outside": rt.mem.reserve(1 << 16) + 64,
            "header": info.segment_base + 4096,
            "never": p + 48,
            "span": info.segment_base + 100 * 65536,
        }[where]
        await t.free(bad)

    v = _violation(rt, main)
    assert v.kind == "invalid-free"
    assert words in v.message


def test_release_model_without_oracles_still_refuses_a_foreign_pointer() -> None:
    """With checked mode off the model itself reports what mimalloc would do: read a segment
    header from unmapped memory (a fault) or from non-heap memory (corruption)."""
    rt = Runtime(Config(checked=False))

    async def main(t):
        scratch = rt.mem.reserve(1 << 16)
        rt.mem.commit(scratch, 4096)
        await t.free(scratch + 64)

    v = _violation(rt, main)
    assert v.kind in ("segfault", "invalid-free")


def test_debug_build_detects_double_free_and_overflow_by_itself() -> None:
    """MI_DEBUG=2's own checks (the oracles off): the encoded-list double-free check, and the
    padding canary / 0xFD bytes after the request (a buffer overflow aborts)."""
    rt = Runtime(Config(pydebug=True, checked=False))

    async def double(t):
        p = await t.malloc(40)
        await t.free(p)
        await t.free(p)

    v = _violation(rt, double)
    assert v.kind == "double-free" and "mimalloc: double free detected" in v.message

    rt = Runtime(Config(pydebug=True, checked=False))

    async def overflow(t):
        p = await t.malloc(40)
        t.mem.store_u8(p + 40, 0x41)            # one byte past the request
        await t.free(p)

    v = _violation(rt, overflow)
    assert v.kind == "heap-integrity" and "buffer overflow" in v.message


# ---------------------------------------------------------------------------------------------
# heap-integrity on hand-made corruption

def test_corrupt_free_list_link_is_reported() -> None:
    rt, _ = _runtime()

    async def main(t):
        ps = [await t.malloc(64) for _ in range(4)]
        page = _page(rt, ps[0])
        # overwrite the link of the next free block with a pointer outside the page: the
        # next allocation from the page makes it the list head
        rt.mem.raw_store(page.free, 8, 0xDEAD_BEE0, Tag.PAYLOAD)
        await t.malloc(64)

    v = _violation(rt, main)
    assert v.kind == "heap-integrity"


def test_wrong_used_counter_is_reported() -> None:
    rt, checker = _runtime()

    async def main(t):
        p = await t.malloc(64)
        _page(rt, p).used += 5
        await t.free(p)

    rt.run_main(main)       # the page is abandoned at exit; the end-of-run check finds it
    with pytest.raises(ViolationError) as err:
        checker.run_finished(rt)
    assert err.value.kind == "heap-integrity"
    assert "!= capacity" in err.value.message


def test_live_block_on_a_free_list_is_reported() -> None:
    rt, _ = _runtime()

    async def main(t):
        p = await t.malloc(64)
        q = await t.malloc(64)
        page = _page(rt, q)
        # push the live block q on the page's local_free by hand (keeping the counts right)
        rt.mem.raw_store(q, 8, page.local_free, Tag.FREE_LINK)
        page.local_free = q
        page.used -= 1
        await t.free(p)

    v = _violation(rt, main)
    assert v.kind == "heap-integrity"
    assert "live" in v.message


def test_in_full_flag_out_of_sync_with_its_queue_is_reported() -> None:
    rt, checker = _runtime()

    async def main(t):
        p = await t.malloc(64)
        _page(rt, p).flags |= IN_FULL
        await t.free(p)

    v = _violation(rt, main)
    assert v.kind == "heap-integrity"


def test_xheap_word_out_of_sync_is_reported() -> None:
    rt, checker = _runtime()
    pages = []

    async def main(t):
        p = await t.mimalloc.heaps[HeapTag.GC].malloc(64)
        page = _page(rt, p)
        pages.append(page)
        rt.mem.raw_store(page.xheap_addr, 8, t.mimalloc.heaps[HeapTag.OBJECT].addr, Tag.META)
        await t.mimalloc.heaps[HeapTag.GC].collect(False)   # collects (touches) the page

    with pytest.raises(ViolationError) as err:
        rt.run_main(main)
    assert err.value.kind == "heap-integrity"
    assert "xheap" in err.value.message


# ---------------------------------------------------------------------------------------------
# quiet on valid runs

def test_oracles_quiet_on_the_stress_scenario_and_check_it() -> None:
    sc = get("mimalloc-stress")
    for i in range(6):
        strat = Random(i) if i % 2 == 0 else PCT(i, 3, sc.pct_steps)
        r = execute(sc, Config(), strat.execution(0))
        assert r.ok, r.violation
    rt, checker = _runtime()
    sc.setup(rt)
    for name, fn in sc.threads:
        rt.start_thread(fn, name=name)
    rt.machine.run(Random(3).execution(0))
    assert rt.machine.violation is None
    checker.run_finished(rt)
    assert checker.full_checks == 1 and not checker.live


def _leaky_scenario(free_it: bool):
    from ftlab.scenarios import Scenario

    async def body(t):
        p = await t.malloc(64)
        t.mem.store_u64(p, 1)
        if free_it:
            await t.free(p)

    return Scenario(name="leaky", description="", threads=(("a", body), ("b", body)), dfs=False)


def test_leak_fires_on_a_block_a_thread_never_frees():
    from ftlab.config import Config
    from ftlab.explore.execute import execute
    from ftlab.sim import Random

    r = execute(_leaky_scenario(free_it=False), Config(), Random(0).execution(0))
    assert r.violation is not None and r.violation.kind == "leak"
    assert "still live after every thread exited" in r.violation.message
    assert any("allocated (64 bytes" in d for d in r.violation.details)


def test_leak_is_quiet_when_every_block_is_freed():
    from ftlab.config import Config
    from ftlab.explore.execute import execute
    from ftlab.sim import Random

    for seed in range(10):
        assert execute(_leaky_scenario(free_it=True), Config(), Random(seed).execution(0)).ok


def test_leak_fires_when_mimalloc_and_the_ghost_disagree():
    from ftlab.check.heap import BlockRecord, HeapChecker
    from ftlab.config import Config
    from ftlab.explore.execute import execute
    from ftlab.sim import Random

    original = HeapChecker.run_finished

    def with_a_ghost_only_block(self, rt):
        # a block the ghost believes set-up allocated, which mimalloc never handed out
        self.live[0xDEAD0] = BlockRecord(0xDEAD0, 64, 0, "set-up", 0)
        self.full_check = lambda: None   # the page checks would see it first
        original(self, rt)

    HeapChecker.run_finished = with_a_ghost_only_block
    try:
        r = execute(_leaky_scenario(free_it=True), Config(), Random(0).execution(0))
    finally:
        HeapChecker.run_finished = original
    assert r.violation is not None and r.violation.kind == "leak"
    assert "mimalloc counts 0 block(s) in use at the end of the run, the ghost record 1" in r.violation.message


def test_finalization_frees_what_3_13_delayed_free_queues_still_hold():
    """Under 3.13.0 items wait for a full chunk, so a run can end with some still queued:
    `_PyMem_FiniDelayed` frees them (and their chunk); without it they would be a leak."""
    from ftlab.config import Config
    from ftlab.explore.execute import execute
    from ftlab.runtime.pystate import Runtime
    from ftlab.scenarios import get
    from ftlab.sim import Replay

    schedule = "S1:b4ab2a4bab4aba2b4a3b4ab3abab2a2ba5ba4ba.d526js"
    config = Config(version="3.13.0")
    assert execute(get("list-resize"), config, Replay(schedule).execution(0)).ok
    original = Runtime.finalize
    Runtime.finalize = lambda self: None
    try:
        r = execute(get("list-resize"), config, Replay(schedule).execution(0))
    finally:
        Runtime.finalize = original
    assert r.violation is not None and r.violation.kind == "leak"
