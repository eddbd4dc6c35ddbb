"""Delayed frees and delayed page reuse (`ftlab/runtime/obmalloc.py`): chunk boundaries,
processing order, the kept empty chunk, the interpreter queue, thread exit, the immediate
cases, both version policies, and the life of a page that waits for its QSBR goal."""

from __future__ import annotations

import pytest

import ftlab.check
from ftlab import Config
from ftlab.check.qsbr import QsbrOracle
from ftlab.runtime import Runtime, obmalloc, qsbr
from ftlab.runtime.mimalloc import HeapTag, block_info
from ftlab.runtime.obmalloc import (
    QSBR_DEFERRED_LIMIT,
    QSBR_FREE_MEM_LIMIT,
    QSBR_PAGE_MEM_LIMIT,
    SIZEOF_MEM_WORK_CHUNK,
    WORK_ITEMS_PER_CHUNK,
)
from ftlab.runtime.object import PyType
from ftlab.runtime.observer import Observer
from ftlab.runtime.pylifecycle import Finalization, Phase
from ftlab.runtime.pystate import EVAL_EXPLICIT_MERGE_BIT, set_eval_breaker_bit
from ftlab.sim import RoundRobin
from ftlab.sim.machine import DONE
from ftlab.sim.atomics import SEQ_CST
from ftlab.sim.violation import ViolationError

MiB = 1024 * 1024


def _runtime(version: str = "3.14", **kw) -> Runtime:
    rt = Runtime(Config(version=version, **kw))
    ftlab.check.install(rt)         # heap, refcount and premature-reuse oracles
    QsbrOracle.install(rt)
    return rt


def _run(rt: Runtime) -> Runtime:
    rt.machine.run(RoundRobin().execution(0))
    v = rt.machine.violation
    if v is not None:
        raise ViolationError(v.kind, v.message + "\n" + "\n".join(v.details), v.details)
    return rt


class _Frees(Observer):
    """Records the blocks freed, in order."""

    def __init__(self) -> None:
        self.freed: list[int] = []

    def block_freeing(self, t, ptr: int) -> None:
        self.freed.append(ptr)


def _indices(t, buf) -> tuple[int, int]:
    return obmalloc._rd_idx(t, buf), obmalloc._wr_idx(t, buf)


async def _blocks(t, n: int, size: int = 64) -> list[int]:
    return [await t.malloc(size) for _ in range(n)]


async def _spin(t, flag: int) -> None:
    """Stay attached without a quiescent state until `flag` is set (a reader in the middle of
    a lock-free read)."""
    while not await t.mem.load(flag, 8, SEQ_CST):
        pass


# ---------------------------------------------------------------------------------------------
# Layout and chunk boundaries

def test_a_chunk_is_4096_bytes_of_254_items():
    assert WORK_ITEMS_PER_CHUNK == 254 and SIZEOF_MEM_WORK_CHUNK == 4096
    assert QSBR_DEFERRED_LIMIT == 127 and QSBR_FREE_MEM_LIMIT == MiB
    assert QSBR_PAGE_MEM_LIMIT == 81_920


def test_253_items_fit_in_one_chunk_without_processing():
    rt = _runtime()
    out = {}

    async def main(t):
        for p in await _blocks(t, 253):
            await t.free_delayed(p, 64)
        out["chunks"] = [_indices(t, b) for b in t.mem_free_queue]
        out["chunk_size"] = block_info(rt, t.mem_free_queue[0].addr).block_size
        # the chunk is a PyMem block of 4096 bytes
        out["freed"] = rt.stats["delayed_freed"]

    rt.run_main(main)
    assert out["chunks"] == [(0, 253)]
    assert out["chunk_size"] == 4096
    assert out["freed"] == 0
    assert rt.stats["delayed_items_peak"] == 253


def test_the_254th_item_fills_the_chunk_and_processes_the_queue_up_to_the_first_unreached_goal():
    """3.14: items 1-128 get goal 3 (the 128th advances `wr_seq` to 3), items 129-254 get
    goal 5 (`shared_next`). After a quiescent state at 3, the 254th free processes the full
    chunk: the first 128 items are freed, the 129th stops the walk."""
    rt = _runtime()
    frees = _Frees()
    rt.add_observer(frees)
    out = {}

    async def main(t):
        blocks = await _blocks(t, 254)
        for p in blocks[:253]:
            await t.free_delayed(p, 64)
        await t.periodic_check()            # seq = wr_seq = 3; no event bit: no processing
        out["before"] = rt.stats["delayed_freed"]
        await t.free_delayed(blocks[253], 64)
        out["chunks"] = [_indices(t, b) for b in t.mem_free_queue]
        out["freed"] = [p for p in frees.freed if p in set(blocks)]
        out["blocks"] = blocks

    rt.run_main(main)
    assert out["before"] == 0
    assert out["chunks"] == [(128, 254)]
    assert out["freed"] == out["blocks"][:128]          # FIFO
    assert rt.qsbr.peek_wr_seq() == 3


def test_the_255th_item_starts_a_second_chunk():
    rt = _runtime()
    out = {}

    async def main(t):
        for p in await _blocks(t, 255):
            await t.free_delayed(p, 64)     # no quiescent state: nothing can be freed
        out["chunks"] = [_indices(t, b) for b in t.mem_free_queue]

    rt.run_main(main)
    assert out["chunks"] == [(0, 254), (0, 1)]
    assert rt.stats["delayed_freed"] == 0 and rt.stats["delayed_items"] == 255


def test_processing_frees_in_fifo_order_and_keeps_one_empty_chunk_on_the_thread_queue():
    rt = _runtime()
    frees = _Frees()
    rt.add_observer(frees)
    out = {}

    async def main(t):
        blocks = await _blocks(t, 300)
        for p in blocks:
            await t.free_delayed(p, 64)
        chunks = [b.addr for b in t.mem_free_queue]
        await qsbr.advance(t.qsbr)          # every goal is now at most wr_seq ...
        await t.periodic_check()            # ... and this thread has seen it
        await obmalloc.process_delayed(t)
        out["order"] = [p for p in frees.freed if p in set(blocks)]
        out["blocks"] = blocks
        out["chunks_before"] = chunks
        out["chunks_after"] = [(b.addr, _indices(t, b)) for b in t.mem_free_queue]
        out["chunk_freed"] = chunks[0] in frees.freed

    rt.run_main(main)
    assert out["order"] == out["blocks"]
    # the first, drained chunk is freed; the last one is kept, empty, indices reset
    assert out["chunk_freed"]
    assert out["chunks_after"] == [(out["chunks_before"][1], (0, 0))]
    assert rt.stats["delayed_items"] == 0 and rt.stats["delayed_bytes"] == 0


def test_a_kept_empty_chunk_is_reused_by_the_next_free():
    rt = _runtime()
    out = {}

    async def main(t):
        p, q = await _blocks(t, 2)
        await t.free_delayed(p, 64)
        addr = t.mem_free_queue[0].addr
        await qsbr.advance(t.qsbr)
        await t.periodic_check()
        await obmalloc.process_delayed(t)
        await t.free_delayed(q, 64)
        out["queue"] = [(b.addr, _indices(t, b)) for b in t.mem_free_queue]
        out["addr"] = addr

    rt.run_main(main)
    assert out["queue"] == [(out["addr"], (0, 1))]


def test_free_delayed_ignores_null():
    rt = _runtime()

    async def main(t):
        await t.free_delayed(0)
        assert t.mem_free_queue == []

    rt.run_main(main)
    assert rt.stats["delayed_queued"] == 0


# ---------------------------------------------------------------------------------------------
# Immediate frees

def _enter_finalizing(rt, t) -> None:
    for phase in (Phase.WAIT_FOR_THREADS, Phase.ATEXIT, Phase.FINALIZING):
        rt.lifecycle.advance(phase, t)


def _leave_finalizing(rt) -> None:
    """Back to a running interpreter, so the thread's own exit is not a finalizing one."""
    rt.lifecycle = Finalization(rt.config.version)


@pytest.mark.parametrize("why", ["finalizing", "world stopped", "no-free-delayed"])
def test_free_delayed_frees_at_once(why):
    rt = _runtime(mutations=frozenset({"no-free-delayed"}) if why == "no-free-delayed"
                  else frozenset())
    frees = _Frees()
    rt.add_observer(frees)

    async def main(t):
        p = await t.malloc(64)
        if why == "finalizing":
            _enter_finalizing(rt, t)
        elif why == "world stopped":
            await rt.stop_the_world(t)
        await t.free_delayed(p, 64)
        assert frees.freed == [p]
        assert t.mem_free_queue == []
        if why == "world stopped":
            await rt.start_the_world(t)
        _leave_finalizing(rt)

    rt.run_main(main)
    assert rt.stats["delayed_queued"] == 0


# ---------------------------------------------------------------------------------------------
# Version policies

def test_3_13_0_advances_on_every_tenth_delayed_free():
    rt = _runtime("3.13.0")
    seen = []

    async def main(t):
        for p in await _blocks(t, 20, 2 * MiB):     # the size does not matter in 3.13.0
            await t.free_delayed(p, 2 * MiB)
            seen.append(rt.qsbr.peek_wr_seq())

    rt.run_main(main)
    assert seen == [1] * 9 + [3] + [3] * 9 + [5]
    assert not any(s.should_process for s in rt.qsbr.slots)


def test_3_14_advances_at_once_for_a_block_over_1_mib_and_asks_for_processing():
    rt = _runtime()
    out = {}

    async def main(t):
        small, big = await t.malloc(64), await t.malloc(MiB + 8)
        await t.free_delayed(small, 64)
        out["after_small"] = (rt.qsbr.peek_wr_seq(), t.qsbr.should_process)
        await t.free_delayed(big, MiB + 8)
        out["after_big"] = (rt.qsbr.peek_wr_seq(), t.qsbr.should_process)
        # the counters restart after an advance
        out["counters"] = (t.qsbr.deferred_count, t.qsbr.deferred_memory)

    rt.run_main(main)
    assert out["after_small"] == (1, False)
    assert out["after_big"] == (3, True)
    assert out["counters"] == (0, 0)


def test_3_14_advances_after_127_deferred_items():
    rt = _runtime()
    seen = []

    async def main(t):
        for p in await _blocks(t, 129):
            await t.free_delayed(p, 64)
            seen.append(rt.qsbr.peek_wr_seq())

    rt.run_main(main)
    assert seen[126] == 1 and seen[127] == 3 and seen[128] == 3


def test_3_14_advances_once_more_than_1_mib_is_deferred():
    rt = _runtime()
    seen = []

    async def main(t):
        for p in await _blocks(t, 5, 300_000):
            await t.free_delayed(p, 300_000)
            seen.append(rt.qsbr.peek_wr_seq())

    rt.run_main(main)
    assert seen == [1, 1, 1, 3, 3]          # 4 x 300,000 > 1 MiB


def test_3_14_processes_on_should_process_at_the_next_handle_pending_only():
    """`should_process` has no eval-breaker bit of its own: a periodic check with no event
    leaves the queue alone; one that handles some event also processes it."""
    rt = _runtime()
    out = {}

    async def main(t):
        p = await t.malloc(2 * MiB)
        await t.free_delayed(p, 2 * MiB)           # advances: goal 3, should_process
        await t.periodic_check()
        out["without_event"] = (rt.stats["delayed_freed"], t.qsbr.should_process)
        await set_eval_breaker_bit(t, EVAL_EXPLICIT_MERGE_BIT)
        await t.periodic_check()
        out["with_event"] = (rt.stats["delayed_freed"], t.qsbr.should_process)

    rt.run_main(main)
    assert out["without_event"] == (0, True)
    assert out["with_event"] == (1, False)


def test_3_13_0_registers_no_pending_processing():
    assert not any(h.name == "process_delayed" for h in _runtime("3.13.0").pending)
    assert any(h.name == "process_delayed" for h in _runtime("3.14").pending)


# ---------------------------------------------------------------------------------------------
# Object items

ITEM = PyType("Item", basicsize=48)


def test_3_14_object_items_are_decrefs_run_after_the_grace_period():
    rt = _runtime()
    out = {}

    async def main(t):
        op = await t.new_object(ITEM)
        await t.object_free_delayed(op)           # the caller's reference, given up later
        out["before"] = rt.stats["objects_deallocated"]
        await qsbr.advance(t.qsbr)
        await t.periodic_check()
        await obmalloc.process_delayed(t)
        out["after"] = rt.stats["objects_deallocated"]

    rt.run_main(main)
    assert (out["before"], out["after"]) == (0, 1)


def test_3_13_0_object_items_are_object_frees_after_the_grace_period():
    rt = _runtime("3.13.0")
    frees = _Frees()
    rt.add_observer(frees)
    out = {}

    async def main(t):
        p = await t.object_malloc(48)
        await t.object_free_delayed(p)
        out["before"] = p in frees.freed
        for _ in range(9):                        # reach the 10th deferral: a real advance
            await t.free_delayed(await t.malloc(64), 64)
        await t.periodic_check()
        await obmalloc.process_delayed(t)
        out["after"] = p in frees.freed

    rt.run_main(main)
    assert (out["before"], out["after"]) == (False, True)


# ---------------------------------------------------------------------------------------------
# The interpreter queue and thread exit

def _exit_with_pending(version: str, reader_quiescent: bool):
    """`worker` queues 3 blocks and exits while `other` stays attached: without a quiescent
    state of `other` after the goals (`reader_quiescent` False) or with one."""
    rt = _runtime(version)
    frees = _Frees()
    rt.add_observer(frees)
    flags = rt.raw_calloc(64)
    queued, done = flags, flags + 8
    out = {}

    async def worker(t):
        blocks = await _blocks(t, 3)
        out["blocks"] = blocks
        for p in blocks:
            await t.free_delayed(p, 64)
        await qsbr.advance(t.qsbr)          # make the goals reachable (3.13.0's are deferred)
        await qsbr.advance(t.qsbr)
        await t.periodic_check()
        await t.mem.store(queued, 1, 8, SEQ_CST)
        await _spin(t, done)                # exit only once `other` is where it should be

    async def other(t):
        await _spin(t, queued)
        if reader_quiescent:
            await t.periodic_check()
        await t.mem.store(done, 1, 8, SEQ_CST)
        w = rt.shared
        while w.vt.state != DONE:           # attached, no quiescent state, until it is gone
            await t.yield_now()
        await t.join(w)
        out["interp"] = [(_indices(t, b)) for b in rt.obmalloc.interp_queue.head]
        out["has_work"] = t.mem.raw_load(rt.obmalloc.interp_queue.has_work_addr, 4)
        out["freed"] = [p for p in out["blocks"] if p in frees.freed]
        await t.periodic_check()
        await obmalloc.process_delayed(t)   # now nobody can hold the blocks
        out["interp_after"] = list(rt.obmalloc.interp_queue.head)
        out["has_work_after"] = t.mem.raw_load(rt.obmalloc.interp_queue.has_work_addr, 4)
        out["freed_after"] = [p for p in out["blocks"] if p in frees.freed]

    rt.shared = rt.start_thread(worker, name="worker")
    rt.start_thread(other, name="other")
    _run(rt)
    return out


def test_3_13_0_abandon_hands_pending_items_to_the_interpreter_without_processing():
    out = _exit_with_pending("3.13.0", reader_quiescent=True)
    assert out["interp"] == [(0, 3)] and out["has_work"] == 1 and out["freed"] == []
    # another thread's processing frees them (try-lock, has_work) and keeps no empty chunk
    assert out["interp_after"] == [] and out["has_work_after"] == 0
    assert out["freed_after"] == out["blocks"]


def test_3_14_abandon_processes_the_interpreter_queue_at_once_gh_130794():
    out = _exit_with_pending("3.14", reader_quiescent=True)
    assert out["interp"] == [] and out["has_work"] == 0
    assert out["freed"] == out["blocks"]


def test_3_14_abandon_keeps_items_whose_goals_are_not_reached():
    out = _exit_with_pending("3.14", reader_quiescent=False)
    assert out["interp"] == [(0, 3)] and out["has_work"] == 1 and out["freed"] == []
    assert out["freed_after"] == out["blocks"] and out["interp_after"] == []


def test_abandon_of_a_single_drained_chunk_just_frees_it():
    rt = _runtime()
    frees = _Frees()
    rt.add_observer(frees)
    out = {}

    async def main(t):
        await t.free_delayed(await t.malloc(64), 64)
        out["chunk"] = t.mem_free_queue[0].addr
        await qsbr.advance(t.qsbr)
        await t.periodic_check()
        await obmalloc.process_delayed(t)   # drained; the chunk is kept

    rt.run_main(main)
    assert out["chunk"] in frees.freed
    assert rt.obmalloc.interp_queue.head == []


def test_the_interpreter_queue_is_skipped_while_another_thread_holds_its_lock():
    rt = _runtime()
    out = {}

    async def main(t):
        q = rt.obmalloc.interp_queue
        buf_addr = await t.malloc(SIZEOF_MEM_WORK_CHUNK)
        t.mem.fill(buf_addr, SIZEOF_MEM_WORK_CHUNK, 0)
        buf = obmalloc.WorkChunk(buf_addr)
        p = await t.malloc(64)
        t.mem.store_u64(buf_addr + obmalloc.CHUNK_ARRAY, p)
        t.mem.store_u64(buf_addr + obmalloc.CHUNK_ARRAY + 8, 1)      # goal 1: reached
        t.mem.store_u64(buf_addr + obmalloc.CHUNK_WR_IDX, 1)
        q.head.append(buf)
        rt.obmalloc._held(1, 64)
        await t.mem.store(q.has_work_addr, 1, 4, SEQ_CST)
        await q.mutex.lock()                # as if another thread were processing it
        await obmalloc.process_interp_queue(t)
        out["held"] = len(q.head)
        await q.mutex.unlock()
        await obmalloc.process_interp_queue(t)
        out["after"] = len(q.head)

    rt.run_main(main)
    assert out == {"held": 1, "after": 0}


# ---------------------------------------------------------------------------------------------
# Delayed page reuse

BIG = 160 << 10         # a large object: alone in a large page, freed (not retired) when empty


async def _defer_small_page(t, size: int = 48):
    """An OBJECT page that becomes empty and waits: allocate, free (the page is retired, being
    the only one of its size), then a normal collection offers it to `page_maybe_free`."""
    heap = t.mimalloc.heaps[HeapTag.OBJECT]
    p = await heap.malloc(size)
    await t.free(p)
    await heap.collect(False)
    return p, _page_of(t.rt, p)


def _page_of(rt, p):
    from ftlab.runtime.mimalloc.segment import segment_page_of
    info = block_info(rt, p)
    return segment_page_of(rt.mimalloc.segments[info.segment_base], p)


def test_an_empty_object_page_waits_on_the_thread_list_and_stays_in_its_queue():
    rt = _runtime()
    out = {}

    async def main(t):
        p, page = await _defer_small_page(t)
        out["goal"], out["linked"] = page.qsbr_goal, page.qsbr_linked
        out["listed"] = rt.obmalloc.hooks.page_list(t) == [page]
        out["heap"] = page.heap is t.mimalloc.heaps[HeapTag.OBJECT]
        out["still_in_use"] = block_info(rt, p).block_size == 48

    rt.run_main(main)
    assert out["goal"] == 3 and out["linked"] and out["listed"]
    assert out["heap"] and out["still_in_use"]
    assert rt.stats["qsbr_pages_deferred"] >= 1


def test_allocating_from_a_waiting_page_cancels_its_free_and_a_later_emptying_gets_a_new_goal():
    rt = _runtime()
    out = {}

    async def main(t):
        heap = t.mimalloc.heaps[HeapTag.OBJECT]
        p, page = await _defer_small_page(t)
        q = await heap.malloc(48)                   # the same size class: the same page
        out["same_page"] = _page_of(rt, q) is page
        await heap.collect(False)                   # the list walk drops the reused page
        out["after_reuse"] = (page.qsbr_goal, page.qsbr_linked, rt.obmalloc.hooks.page_list(t))
        await qsbr.advance(t.qsbr)                  # wr_seq 3
        await t.free(q)
        await heap.collect(False)
        out["new_goal"] = page.qsbr_goal

    rt.run_main(main)
    assert out["same_page"]
    assert out["after_reuse"] == (0, False, [])
    assert out["new_goal"] == 5                     # shared_next of the advanced wr_seq


def test_a_waiting_page_is_freed_by_the_list_walk_once_its_goal_is_reached():
    rt = _runtime()
    out = {}

    async def main(t):
        heap = t.mimalloc.heaps[HeapTag.OBJECT]
        p, page = await _defer_small_page(t)
        await heap.collect(False)                   # goal 3 not reached: wr_seq is 1
        out["waiting"] = page.qsbr_linked
        await qsbr.advance(t.qsbr)
        await t.periodic_check()
        await heap.collect(False)
        out["freed"] = (page.qsbr_linked, page.qsbr_goal, page.heap)

    rt.run_main(main)
    assert out["waiting"]
    assert out["freed"] == (False, 0, None)
    assert rt.stats["qsbr_pages_freed"] == 1


def test_a_waiting_page_is_not_freed_while_a_reader_has_passed_no_quiescent_state():
    rt = _runtime()
    flag = rt.raw_calloc(16)
    out = {}

    async def owner(t):
        heap = t.mimalloc.heaps[HeapTag.OBJECT]
        p, page = await _defer_small_page(t)
        await qsbr.advance(t.qsbr)
        await t.periodic_check()
        await heap.collect(False)
        out["waiting"] = page.qsbr_linked
        await t.mem.store(flag, 1, 8, SEQ_CST)

    async def reader(t):
        await _spin(t, flag)

    rt.start_thread(reader, name="reader")
    rt.start_thread(owner, name="owner")
    _run(rt)
    assert out["waiting"]


def test_a_mem_page_is_freed_at_once():
    rt = _runtime()
    out = {}

    async def main(t):
        p = await t.malloc(BIG)
        page = _page_of(rt, p)
        await t.free(p)
        out["page"] = (page.qsbr_goal, page.heap)

    rt.run_main(main)
    assert out["page"] == (0, None)
    assert rt.stats["qsbr_pages_deferred"] == 0


def test_no_page_delay_frees_an_empty_object_page_at_once():
    rt = _runtime(mutations=frozenset({"no-page-delay"}))
    out = {}

    async def main(t):
        p = await t.object_malloc(BIG)
        page = _page_of(rt, p)
        await t.object_free(p)
        out["page"] = (page.qsbr_goal, page.heap)

    rt.run_main(main)
    assert out["page"] == (0, None)
    assert rt.stats["qsbr_pages_deferred"] == 0


@pytest.mark.parametrize("version,advances", [("3.13.0", False), ("3.14", True)])
def test_a_page_over_81920_bytes_advances_in_3_14(version, advances):
    rt = _runtime(version)
    out = {}

    async def main(t):
        p = await t.object_malloc(BIG)
        page = _page_of(rt, p)
        await t.object_free(p)              # large page: not retired, maybe_free at once
        out["goal"], out["wr"] = page.qsbr_goal, rt.qsbr.peek_wr_seq()

    rt.run_main(main)
    if advances:
        assert out == {"goal": 3, "wr": 3}
    else:
        assert out == {"goal": 3, "wr": 1}     # deferred: wr_seq + 2, not written


def test_3_14_small_pages_add_up_to_the_page_memory_limit():
    rt = _runtime()
    out = []

    async def main(t):
        heap = t.mimalloc.heaps[HeapTag.OBJECT]
        for size in (48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640,
                     768, 896, 1024, 1280, 1536, 1792, 2048, 2560, 3072):
            p = await heap.malloc(size)
            await t.free(p)
            await heap.collect(False)
            out.append((t.qsbr.deferred_page_memory, rt.qsbr.peek_wr_seq()))

    rt.run_main(main)
    # the accumulator grows by each page's capacity * block size, then resets with an advance
    assert out[0][0] > 0 and out[0][1] == 1
    i = next(k for k, (_, wr) in enumerate(out) if wr == 3)
    assert out[i][0] == 0 and out[i - 1][0] <= QSBR_PAGE_MEM_LIMIT


def test_an_abandoned_page_keeps_its_goal_and_reclaim_respects_it():
    """The owner exits while its page waits (the reader has not passed a quiescent state):
    the page is abandoned unlinked, with its goal. The reader's next fresh page reclaims the
    segment; the page is not safe to free yet, so it waits on the reader's list with the same
    goal, until the reader's quiescent state lets its list walk free it."""
    rt = _runtime()
    flags = rt.raw_calloc(64)
    deferred = flags
    out = {}

    async def owner(t):
        p, page = await _defer_small_page(t, 48)
        out["page"] = page
        await t.mem.store(deferred, 1, 8, SEQ_CST)

    async def reader(t):
        await _spin(t, deferred)
        page = out["page"]
        await t.join(rt.shared)             # detaches while the owner exits
        out["abandoned"] = (page.qsbr_goal, page.qsbr_linked, page.heap)
        heap = t.mimalloc.heaps[HeapTag.OBJECT]
        q = await heap.malloc(2000)         # a fresh page: reclaims the abandoned segment
        out["reclaimed"] = (page.qsbr_goal, page.qsbr_linked,
                            rt.obmalloc.hooks.page_list(t) == [page],
                            page.heap is heap if page.heap is not None else None)
        await t.free(q)
        await qsbr.advance(t.qsbr)
        await t.periodic_check()
        await heap.collect(False)
        out["freed"] = (page.qsbr_goal, page.qsbr_linked)

    rt.shared = rt.start_thread(owner, name="owner")
    rt.start_thread(reader, name="reader")
    _run(rt)
    goal = out["abandoned"][0]
    assert goal != 0 and out["abandoned"][1:] == (False, None)
    assert out["reclaimed"][:3] == (goal, True, True)
    assert out["freed"] == (0, False)


def test_fini_delayed_frees_what_is_left_on_the_interpreter_queue():
    rt = _runtime("3.13.0")
    frees = _Frees()
    rt.add_observer(frees)
    out = {}

    async def worker(t):
        out["blocks"] = await _blocks(t, 3)
        for p in out["blocks"]:
            await t.free_delayed(p, 64)     # deferred goals: never reached in this run

    async def main(t):
        w = await t.spawn(worker, name="worker")
        await t.join(w)                     # the worker's queue is now the interpreter's
        out["left"] = len(rt.obmalloc.interp_queue.head)
        _enter_finalizing(rt, t)
        await obmalloc.fini_delayed(t)
        _leave_finalizing(rt)
        out["freed"] = [p for p in out["blocks"] if p in frees.freed]

    rt.run_main(main)
    assert out["left"] == 1
    assert out["freed"] == out["blocks"]
    assert rt.obmalloc.interp_queue.head == [] and rt.stats["delayed_items"] == 0


def test_a_thread_touching_another_threads_page_list_without_the_stop_the_world_races():
    """The QSBR page lists are plain memory protected by their owner: a (hand-made) thread
    that unlinks a page from a list it does not own, with the world running, races with the
    owner's link, and the race names the link word."""
    from ftlab.report.names import Namer
    rt = _runtime()
    namer = Namer(rt)
    out = {}

    async def intruder(t):
        while "page" not in out:        # no happens-before from the owner's link
            await t.yield_now()
        rt.obmalloc.hooks.page_unlink_qsbr(out["page"])

    async def main(t):
        b = await t.spawn(intruder, name="intruder")
        p, page = await _defer_small_page(t)
        out["page"] = page
        out["head"] = t.mimalloc.page_list
        await t.join(b)

    with pytest.raises(ViolationError) as e:
        rt.run_main(main)
    assert e.value.kind == "data-race"
    addr = int(e.value.message.split(" at ")[1].split()[0], 16)
    page, head = out["page"], out["head"]
    assert addr in (page.qsbr_node_addr, page.qsbr_node_addr + 8, head, head + 8)
    name = namer.name(addr)
    assert name.endswith(("qsbr_node.next", "qsbr_node.prev", "mimalloc.page_list.next",
                          "mimalloc.page_list.prev")), name


def test_the_page_list_words_have_timeline_names():
    from ftlab.report.names import Namer
    rt = _runtime()
    namer = Namer(rt)
    out = {}

    async def main(t):
        p, page = await _defer_small_page(t)
        out["node"] = namer.name(page.qsbr_node_addr)
        out["prev"] = namer.name(page.qsbr_node_addr + 8)
        out["head"] = namer.name(t.mimalloc.page_list)
        out["goal"] = namer.name(page.qsbr_node_addr + 16)

    rt.run_main(main)
    assert out["node"].startswith("page(seg 0, slice ") and out["node"].endswith(".qsbr_node.next")
    assert out["prev"].endswith(".qsbr_node.prev")
    assert out["head"].endswith(".mimalloc.page_list.next") and out["head"].startswith("tstate#")
    assert out["goal"].endswith(".qsbr_goal")
