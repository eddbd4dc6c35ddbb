"""The block-count and ref-total oracles (ftlab.check.blockcount): quiet when the counts are
exact, fire on each block-counting mutation, a hand-broken count and a missing fix 3."""

from __future__ import annotations

import pytest

from ftlab import Config, check
from ftlab.check import blockcount
from ftlab.runtime import Runtime
from ftlab.runtime.object import PyType
from ftlab.runtime.mimalloc.types import HeapTag
from ftlab.sim.violation import ViolationError


def run(mutations: frozenset[str] = frozenset(), extra: int = 0):
    """A child leaves one block in each heap and exits; main frees one of them cross-thread
    and counts (`extra` is added to the count the oracle sees: a hand-broken count)."""
    rt = Runtime(Config(mutations=mutations))
    oracle = blockcount.install(rt)
    if extra:
        check = oracle.blocks_counted
        oracle.blocks_counted = lambda t, count: check(t, count + extra)
        rt.observer.blocks_counted = oracle.blocks_counted
    out = {}

    async def leaver(t):
        out["blocks"] = [await t.mimalloc.heaps[tag].malloc(64) for tag in HeapTag]

    async def main(t):
        mine = await t.malloc(100)
        child = await t.spawn(leaver)
        await t.join(child)
        await t.free(out["blocks"][0])
        out["count"] = await t.get_allocated_blocks()
        for p in [mine] + out["blocks"][1:]:
            await t.free(p)

    rt.run_main(main)
    return rt, oracle, out


def test_quiet_when_the_count_equals_the_live_blocks():
    rt, oracle, out = run()
    assert out["count"] == 4 and oracle.counts == [4]


@pytest.mark.parametrize("mutation, words", [
    ("blockcount-skips-abandoned", "returned 1, but 4 block(s) are live (fewer"),
    ("blockcount-no-collect", "returned 5, but 4 block(s) are live (more"),
])
def test_fires_on_a_wrong_count(mutation, words):
    with pytest.raises(ViolationError) as e:
        run(frozenset({mutation}))
    assert e.value.kind == "block-count" and words in str(e.value)


def test_fires_on_a_hand_broken_count():
    with pytest.raises(ViolationError) as e:
        run(extra=1)
    assert e.value.kind == "block-count" and "more than allocated: 1" in str(e.value)


def test_installed_with_the_checked_oracles_and_once():
    rt = Runtime(Config())
    check.install(rt)
    o = rt.find_observer(blockcount.BlockCountOracle)
    assert o is not None and blockcount.install(rt) is o


THING = PyType("Thing", basicsize=32)


def run_queued(mutations: frozenset[str] = frozenset()):
    """A child drops an object main handed it (queued to main's BRC queue); main counts
    blocks (the ref-total check) while it is queued, then merges it."""
    rt = Runtime(Config(mutations=mutations))
    check.install(rt)
    oracle = rt.find_observer(blockcount.BlockCountOracle)

    async def child(t, o):
        await t.decref(o)

    async def main(t):
        o = await t.new_object(THING)
        kept = await t.new_object(THING)
        c = await t.spawn(child, o)
        await t.join(c)
        await t.get_allocated_blocks()
        await t.periodic_check()
        await t.decref(kept)

    rt.run_main(main)
    return oracle


def test_ref_total_quiet_when_the_queue_holds_its_reference():
    assert run_queued().totals == [2]


def test_ref_total_fires_without_gh_115184_fix_3():
    with pytest.raises(ViolationError) as e:
        run_queued(frozenset({"reftotal-untracked-brc"}))
    assert e.value.kind == "ref-total"
    assert "total refcount is 1" in str(e.value) and "but 2 strong" in str(e.value)
