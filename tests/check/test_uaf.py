"""The use-after-free oracle on memory (`ftlab/check/uaf.py`): it fires on a plain or atomic
access by model code to a freed block, and stays quiet on the allocator's own accesses to free
blocks, on try-incref's reads of a freed object's header, and on every unmutated scenario."""

from __future__ import annotations

import pytest

from ftlab import Config
from ftlab.check import install
from ftlab.check.uaf import UseAfterFreeOracle
from ftlab.explore.campaign import pct_steps
from ftlab.explore.execute import execute
from ftlab.explore.portfolio import default_portfolio, plan_batches
from ftlab.runtime import Runtime
from ftlab.runtime.object import OB_REF_SHARED, PyType
from ftlab.scenarios import catalog, get
from ftlab.sim import Random, RoundRobin
from ftlab.sim.atomics import SEQ_CST

ITEM = PyType("Item", basicsize=48)


def _run_one(body, **config):
    """Run `body(t)` as the only thread of a checked runtime; (violation, oracle)."""
    rt = Runtime(Config(**config))
    install(rt)
    rt.start_thread(body, name="main")
    rt.machine.run(RoundRobin().execution(0))
    return rt.machine.violation, UseAfterFreeOracle.find(rt)


def test_a_plain_read_after_free_is_reported_with_the_block_and_its_history():
    async def body(t):
        p = await t.malloc(64)
        t.mem.store_u64(p + 16, 7)
        await t.free(p)
        t.mem.load_u64(p + 16)

    v, _ = _run_one(body)
    assert v is not None and v.kind == "use-after-free", v
    assert "a:main: plain read of 8 bytes" in v.message
    assert "offset 16 of the freed 64-byte block at" in v.message
    assert "(heap MEM), freed by a:main at step" in v.message
    assert any(d.startswith("allocated (64 bytes, heap MEM) by a:main at step") for d in v.details)
    assert any(d.startswith("freed by a:main at step") for d in v.details)
    assert any("test_uaf.py" in d and "in body" in d for d in v.details)


def test_an_atomic_write_after_free_is_reported():
    async def body(t):
        p = await t.malloc(200)
        await t.free(p)
        await t.mem.store(p + 8, 1, 8, SEQ_CST)

    v, _ = _run_one(body)
    assert v is not None and v.kind == "use-after-free", v
    assert "atomic write of 8 bytes" in v.message and "200-byte block" in v.message


def test_a_new_block_over_the_memory_is_live_again():
    async def body(t):
        p = await t.malloc(64)
        await t.free(p)
        others = []
        while (q := await t.malloc(64)) != p:      # until the page's free list is used up
            others.append(q)                        # and the local frees are collected
            assert len(others) < 5000, "mimalloc never hands the block out again"
        t.mem.store_u64(q + 8, 1)
        t.mem.load_u64(q + 56)
        for o in others + [q]:
            await t.free(o)

    v, _ = _run_one(body)
    assert v is None, v


def test_the_allocators_own_accesses_to_free_blocks_are_not_uses():
    """Free-list links, MI_DEBUG fills and padding, a page extended over freed memory, and a
    remote free onto the owner's lists: all written by mimalloc into free blocks."""
    async def other(t, blocks):
        for p in blocks:
            await t.free(p)                 # cross-thread frees: thread-free / delayed lists

    async def body(t):
        blocks = []
        for _ in range(3):
            ps = [await t.malloc(n) for n in (16, 48, 48, 300, 5000)]
            for p in ps[::2]:
                await t.free(p)
            blocks += ps[1::2]
        other_t = await t.spawn(other, blocks, name="other")
        await t.join(other_t)
        for n in (16, 48, 300, 5000):
            await t.free(await t.malloc(n))

    for pydebug in (False, True):
        v, oracle = _run_one(body, pydebug=pydebug)
        assert v is None, (pydebug, v)
    assert oracle.slow_checks > 0, "the debug fills of freed blocks went through the oracle"


def test_try_incref_of_a_freed_object_reads_its_header_quietly():
    async def body(t):
        o = await t.new_object(ITEM)
        await t.decref(o)                           # freed on the owner's fast path
        assert not await t.try_incref(o)            # header reads and a refusal: allowed
        t.mem.load_u64(o + OB_REF_SHARED)           # but a plain read of it is a use

    v, _ = _run_one(body)
    assert v is not None and v.kind == "use-after-free", v
    assert f"offset {OB_REF_SHARED} of the freed 48-byte block" in v.message
    assert "heap OBJECT" in v.message


def test_nothing_is_installed_when_checked_mode_is_off():
    rt = Runtime(Config(checked=False))
    install(rt)
    assert rt.mem.on_atomic_access is None
    assert rt.mem.on_plain_access == rt.machine.race.plain
    assert UseAfterFreeOracle.find(rt) is None


def test_the_race_detector_still_sees_accesses_behind_the_oracle():
    sc = get("message-passing")
    config = Config(mutations=frozenset({"relaxed-message"}))
    kinds = {execute(sc, config, Random(i).execution(0)).violation.kind for i in range(5)}
    assert kinds == {"data-race"}


def test_list_resize_without_free_delayed_is_a_use_after_free_within_1000_schedules():
    sc = get("list-resize")
    # without the race detector: the reader's plain read of the array's capacity before the
    # free would otherwise be reported first, as a race with the free (the runtime list,
    # issue 10)
    config = Config(mutations=frozenset({"no-free-delayed"}), race_detection=False)
    specs = default_portfolio(sc)
    k = pct_steps(sc, "no-free-delayed", config.version)
    strategies = [s.make(0, k) for s in specs]
    n = 0
    for b in plan_batches(len(specs), 1000, 20):
        for i in range(b.start, b.start + b.count):
            chooser = strategies[b.strategy].execution(i)
            if chooser is None:
                break
            n += 1
            r = execute(sc, config, chooser)
            v = r.violation
            if v is not None and v.kind == "use-after-free":
                assert "b:reader: atomic read of 8 bytes" in v.message, v
                assert "1,048,584-byte block" in v.message and "(heap MEM)" in v.message
                assert any("passed to _PyMem_FreeDelayed by a:writer" in d for d in v.details)
                assert any("in try_xget_ref" in d for d in v.details)
                return
    raise AssertionError(f"no use-after-free in {n} schedules")


def _every_unmutated_scenario_stays_quiet(n: int) -> None:
    for name, sc in catalog().items():
        if sc.known_gap:
            continue        # a gap CPython has: it must fire (tests/scenarios/test_abandoned.py)
        for i in range(n):
            r = execute(sc, Config(), Random(i).execution(0))
            assert r.ok, f"{name} schedule {i}: {r.violation} [{r.schedule}]"


def test_every_unmutated_scenario_stays_quiet_over_25_schedules():
    # the default suite's share (issue 13: the 100-schedule sweep was 34 s); the full one is slow
    _every_unmutated_scenario_stays_quiet(25)


@pytest.mark.slow
def test_every_unmutated_scenario_stays_quiet_over_100_schedules():
    _every_unmutated_scenario_stays_quiet(100)
