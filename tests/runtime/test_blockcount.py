"""Block counting (`get_num_global_allocated_blocks`, `await t.get_allocated_blocks()`): every
heap of every thread and the abandoned pool, pages collected first, the world stopped."""

from __future__ import annotations

import pytest

from ftlab import Config
from ftlab.runtime import Runtime
from ftlab.runtime.pylifecycle import Phase
from ftlab.runtime.mimalloc.types import HeapTag
from ftlab.runtime.observer import Observer


class _Seen(Observer):
    """What the runtime reports when it has counted: the count and whether the world was
    stopped at that moment."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.seen: list[tuple[int, bool]] = []

    def blocks_counted(self, t, count: int) -> None:
        self.seen.append((count, self.rt.world_stopped))


def _count_with_abandoned(mutations: frozenset[str] = frozenset()):
    """main: 3 MEM blocks of its own; a child allocates one block in each of its four heaps
    and exits (its segment abandoned with 4 live blocks); main frees one of them (into the
    abandoned page's xthread_free), then counts: 3 + 4 - 1 = 6."""
    rt = Runtime(Config(checked=False, mutations=mutations))
    seen = _Seen(rt)
    rt.add_observer(seen)
    out = {}

    async def leaver(t):
        out["blocks"] = [await t.mimalloc.heaps[tag].malloc(64)
                         for tag in (HeapTag.MEM, HeapTag.OBJECT, HeapTag.GC, HeapTag.GC_PRE)]

    async def main(t):
        mine = [await t.malloc(n) for n in (16, 300, 4000)]
        child = await t.spawn(leaver)
        await t.join(child)
        await t.free(out["blocks"][0])
        out["count"] = await t.get_allocated_blocks()
        for p in mine + out["blocks"][1:]:
            await t.free(p)
        out["after"] = await t.get_allocated_blocks()

    rt.run_main(main)
    return out, seen.seen


def test_counts_every_heap_and_the_abandoned_pool_after_collecting_remote_frees():
    out, seen = _count_with_abandoned()
    assert (out["count"], out["after"]) == (6, 0)
    assert seen == [(6, True), (0, True)]           # reported with the world stopped


def test_skipping_the_abandoned_pool_loses_the_dead_threads_blocks():
    out, _ = _count_with_abandoned(frozenset({"blockcount-skips-abandoned"}))
    assert out["count"] == 3


def test_reading_used_before_collecting_counts_the_remote_free():
    out, _ = _count_with_abandoned(frozenset({"blockcount-no-collect"}))
    assert out["count"] == 7


def test_without_stw_the_count_is_taken_with_the_world_running():
    out, seen = _count_with_abandoned(frozenset({"blockcount-no-stw"}))
    assert out["count"] == 6                        # alone, the count happens to be right
    assert seen[0] == (6, False)


def test_while_finalizing_the_count_does_not_stop_the_world():
    rt = Runtime(Config(checked=False))
    seen = _Seen(rt)
    rt.add_observer(seen)

    async def main(t):
        p = await t.malloc(32)
        for phase in (Phase.WAIT_FOR_THREADS, Phase.ATEXIT, Phase.FINALIZING):
            rt.lifecycle.advance(phase, t)      # Py_FinalizeEx: `t` is the finalizing thread
        n = await t.get_allocated_blocks()
        await t.free(p)
        return n

    assert rt.run_main(main) == 1
    assert seen.seen == [(1, False)]
    assert rt.stw.mutex.owner is None


@pytest.mark.parametrize("mutation", ["", "blockcount-no-stw"])
def test_count_includes_blocks_waiting_in_the_delayed_free_queue(mutation):
    rt = Runtime(Config(checked=False, mutations=frozenset({mutation} - {""})))

    async def main(t):
        p = await t.malloc(32)
        await t.free_delayed(p, 32)         # queued (with its 4096-byte chunk), not freed
        return await t.get_allocated_blocks()

    assert rt.run_main(main) == 2
