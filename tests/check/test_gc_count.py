"""The gc-count oracle (ftlab.check.gc): quiet on a correct run, fires on a lost flush
(mutation gc-count-lost) and on a hand-broken interpreter count."""

from __future__ import annotations

import pytest

from ftlab import Config
from ftlab.check.gc import GcCountOracle
from ftlab.runtime import Runtime
from ftlab.runtime.object import PyType
from ftlab.sim.violation import ViolationError

GC_THING = PyType("GCThing", basicsize=48, gc=True)


def run(config: Config, fn):
    rt = Runtime(config)
    oracle = GcCountOracle.install(rt)
    rt.run_main(fn)
    return rt, oracle


async def churn(t):
    objs = [await t.new_object(GC_THING) for _ in range(5)]
    await t.gc_collect()                            # checked with the world stopped
    for o in objs[:4]:
        await t.decref(o)
    return objs[4]


def test_quiet_when_every_flush_is_counted():
    rt, oracle = run(Config(gc_local_threshold=2), churn)
    oracle.run_finished(rt)                         # no violation
    # 5 allocations: flushes at 2 and 4, buffer 1 at the reset; 4 frees: 0, -1, -2 (flush), -1
    assert (rt.gc.peek_count(), rt.tstates[0].gc.alloc_count, oracle.net) == (-2, -1, -4)


def test_fires_when_a_deallocation_flush_is_lost():
    with pytest.raises(ViolationError) as e:
        rt, oracle = run(Config(gc_local_threshold=2, mutations=frozenset({"gc-count-lost"})),
                         churn)
        oracle.run_finished(rt)
    assert e.value.kind == "gc-count"
    assert "lost or invented" in str(e.value)


def test_fires_on_a_hand_broken_interpreter_count():
    async def main(t):
        await t.new_object(GC_THING)
        await t.new_object(GC_THING)                # flush: count 2
        t.mem.store_u32(t.rt.gc.count_addr, 7)      # a count nobody allocated
        await t.gc_collect()

    with pytest.raises(ViolationError) as e:
        run(Config(gc_local_threshold=2, checked=False), main)
    assert e.value.kind == "gc-count" and "+5" in str(e.value)
