"""The premature-reuse oracle (`ftlab/check/reuse.py`): it fires when memory a thread may still
read without a lock is reused before that thread passes a quiescent state (a mutation, a broken
poll, a page freed at once) and stays quiet when the runtime waits, when the reader has passed a
quiescent state, and for a new object of the same size class."""

from __future__ import annotations

from ftlab import Config
from ftlab.check import install
from ftlab.check.reuse import ReuseOracle
from ftlab.runtime import Runtime
from ftlab.runtime.mimalloc import HeapTag
from ftlab.runtime.object import PyType
from ftlab.sim import RoundRobin
from ftlab.sim.atomics import SEQ_CST

BIG = 200_000           # a large block: alone in its page, whose span a new page can reuse
BIG_OBJECT = PyType("BigItem", basicsize=160 << 10)
SMALL = PyType("Small", basicsize=48)


def _run(rt: Runtime):
    rt.machine.run(RoundRobin().execution(0))
    return rt.machine.violation


def _reader_writer(writer_body, *, quiescent_first: bool = False, **config):
    """A reader that stays attached, without a quiescent state (it may hold a pointer it loaded
    without a lock), until the writer is done; with `quiescent_first` it passes one after the
    writer's unlink and before the writer's reuse."""
    rt = Runtime(Config(**config))
    install(rt)
    flags = rt.raw_calloc(64)
    unlinked, reader_done, writer_done = flags, flags + 8, flags + 16

    async def reader(t):
        if quiescent_first:
            while not await t.mem.load(unlinked, 8, SEQ_CST):
                pass
            await t.periodic_check()
            await t.mem.store(reader_done, 1, 8, SEQ_CST)
        while not await t.mem.load(writer_done, 8, SEQ_CST):
            pass

    async def writer(t):
        async def unlink_point():
            await t.mem.store(unlinked, 1, 8, SEQ_CST)
            if quiescent_first:
                while not await t.mem.load(reader_done, 8, SEQ_CST):
                    pass
        await writer_body(t, unlink_point)
        await t.mem.store(writer_done, 1, 8, SEQ_CST)

    rt.start_thread(reader, name="reader")
    rt.start_thread(writer, name="writer")
    return rt


async def _free_delayed_then_reuse(t, unlink_point):
    """Free a large array through free_delayed, then make a page of a new size class (which
    takes the first free span of the segment: the array's, if it was freed)."""
    old = await t.malloc(BIG)
    t.mem.store_u64(old + 8, 42)
    await t.free_delayed(old, BIG)
    await unlink_point()
    heap = t.mimalloc.heaps[HeapTag.MEM]
    await heap.malloc(700)


def test_it_fires_when_no_free_delayed_lets_the_memory_be_reused():
    rt = _reader_writer(_free_delayed_then_reuse, mutations=frozenset({"no-free-delayed"}))
    v = _run(rt)
    assert v is not None and v.kind == "premature-reuse", v
    assert "starts a page of" in v.message and "reader" in v.message
    assert "200,000-byte block passed to _PyMem_FreeDelayed" in v.message
    assert any("unlinked and passed to _PyMem_FreeDelayed by" in d for d in v.details)
    assert any(d.startswith("allocated (200,000 bytes, heap MEM) by") for d in v.details)


def test_it_stays_quiet_when_free_delayed_waits():
    rt = _reader_writer(_free_delayed_then_reuse)
    assert _run(rt) is None
    assert rt.stats["delayed_items"] == 1           # still waiting for the reader


def test_it_stays_quiet_when_the_reader_passed_a_quiescent_state_before_the_reuse():
    rt = _reader_writer(_free_delayed_then_reuse, quiescent_first=True,
                        mutations=frozenset({"no-free-delayed"}))
    assert _run(rt) is None


def test_it_fires_on_a_hand_made_early_reuse_by_a_broken_poll(monkeypatch):
    """A `poll` that always says yes lets the processing free the array while the reader may
    still hold it; the oracle sees the reuse without looking at goals or sequences."""
    async def broken_poll(q, goal):
        return True
    from ftlab.runtime import obmalloc
    monkeypatch.setattr(obmalloc._qsbr, "poll", broken_poll)

    async def body(t, unlink_point):
        old = await t.malloc(BIG)
        await t.free_delayed(old, BIG)
        await unlink_point()
        await obmalloc.process_delayed(t)           # "the goal is reached": freed
        await t.mimalloc.heaps[HeapTag.MEM].malloc(700)

    v = _run(_reader_writer(body))
    assert v is not None and v.kind == "premature-reuse", v
    assert any(d.startswith("freed by b:writer") for d in v.details)


def test_it_fires_when_a_free_delayed_block_is_handed_out_again():
    async def body(t, unlink_point):
        old = await t.malloc(64)
        await t.free_delayed(old, 64)
        await unlink_point()
        # the same size class until the freed block comes back from `local_free`
        for _ in range(200):
            p = await t.malloc(64)
            if p == old:
                break

    v = _run(_reader_writer(body, mutations=frozenset({"no-free-delayed"})))
    assert v is not None and v.kind == "premature-reuse", v
    assert "is handed a 64-byte block at" in v.message


def test_it_fires_when_no_page_delay_reuses_a_freed_object_for_another_size_class():
    async def body(t, unlink_point):
        op = await t.new_object(BIG_OBJECT)
        await t.decref(op)                          # freed: its large page is empty
        await unlink_point()
        await t.new_object(SMALL)                   # a new OBJECT page, over the old span

    v = _run(_reader_writer(body, mutations=frozenset({"no-page-delay"})))
    assert v is not None and v.kind == "premature-reuse", v
    assert "freed object" in v.message and "BigItem" in " ".join(v.details)


def test_it_stays_quiet_for_a_freed_object_when_its_page_waits():
    rt = _reader_writer(_object_then_small)
    assert _run(rt) is None
    assert rt.stats["qsbr_pages_deferred"] >= 1


async def _object_then_small(t, unlink_point):
    op = await t.new_object(BIG_OBJECT)
    await t.decref(op)
    await unlink_point()
    await t.new_object(SMALL)


def test_a_new_object_of_the_same_size_class_at_the_same_address_is_allowed():
    async def body(t, unlink_point):
        a = await t.new_object(SMALL)
        b = await t.new_object(SMALL)
        await t.decref(a)
        await unlink_point()
        for _ in range(200):                        # until the block of `a` comes back
            c = await t.new_object(SMALL)
            if c == a:
                break
        assert c == a
        await t.decref(b)

    assert _run(_reader_writer(body)) is None


def test_it_fires_on_a_decommit_of_guarded_memory():
    """A purge of memory that holds a guarded block (driven directly: the runtime's purges come
    thousands of steps after a free)."""
    async def body(t, unlink_point):
        old = await t.malloc(BIG)
        await t.free_delayed(old, BIG)
        await unlink_point()
        ReuseOracle.find(t.rt).mi_decommitted(old & ~0xFFFF, 1 << 16)

    v = _run(_reader_writer(body))
    assert v is not None and v.kind == "premature-reuse", v
    assert "decommits" in v.message


def test_guards_are_dropped_once_every_reader_has_passed_a_quiescent_state():
    rt = _reader_writer(_free_delayed_then_reuse, quiescent_first=True)
    assert _run(rt) is None
    oracle = ReuseOracle.find(rt)
    assert oracle.guards_made >= 1 and not oracle.guards


def test_install_adds_the_oracle_once_in_checked_mode_only():
    rt = Runtime(Config())
    install(rt)
    install(rt)
    assert ReuseOracle.find(rt) is not None
    assert sum(isinstance(o, ReuseOracle) for o in rt.observer.observers) == 1
    rt = Runtime(Config(checked=False))
    install(rt)
    assert ReuseOracle.find(rt) is None


def test_it_reports_the_reclaim_of_a_page_emptied_after_its_abandon():
    """A gap the model inherits from CPython 3.13/3.14 (reported, to be confirmed on CPython):
    a page abandoned while it still holds an object has no QSBR goal; when another thread then
    frees that object (a remote free into the abandoned page), the next reclaim finds the page
    all free with goal 0, which `_PyMem_mi_page_is_safe_to_free` treats as safe, and releases
    it at once, so its memory becomes a page of another size class while a lock-free reader
    may still hold the object's pointer."""
    item, other = PyType("Item", basicsize=48), PyType("Other", basicsize=112)
    rt = Runtime(Config())
    install(rt)
    f = rt.raw_calloc(64)
    slot, loaded, done = f, f + 8, f + 16

    async def wait_for(t, flag):
        while not await t.mem.load(flag, 8, SEQ_CST):
            await t.yield_now()

    async def owner(t):
        x = await t.new_object(item)
        await t.set_maybe_weakref(x)
        await t.mem.store(slot, x, 8, SEQ_CST)      # the slot holds the owner's reference
        await wait_for(t, loaded)                   # then exits: the page is abandoned in use

    async def reader(t):
        await wait_for(t, slot)
        await t.mem.load(slot, 8, SEQ_CST)          # loads the pointer without a lock ...
        await t.mem.store(loaded, 1, 8, SEQ_CST)
        await wait_for(t, done)                     # ... and is preempted before its incref

    async def writer(t):
        await wait_for(t, loaded)
        await t.join(rt.shared)                     # the owner has exited
        x = await t.mem.exchange(slot, 0, 8, SEQ_CST)
        await t.decref(x)                           # the last reference: a remote free
        await t.new_object(other)                   # a fresh page: reclaims the segment
        await t.mem.store(done, 1, 8, SEQ_CST)

    rt.shared = rt.start_thread(owner, name="owner")
    rt.start_thread(reader, name="reader")
    rt.start_thread(writer, name="writer")
    v = _run(rt)
    assert v is not None and v.kind == "premature-reuse", v
    assert "starts a page of 112-byte blocks" in v.message and "reader" in v.message
