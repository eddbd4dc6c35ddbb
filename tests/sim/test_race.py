"""The happens-before race detector: fires on unordered pairs, quiet when ordered."""

from __future__ import annotations

import pytest

from ftlab.sim import ACQUIRE, DFS, RELAXED, RELEASE, Machine, Random, Replay
from ftlab.sim.race import RaceDetector
from ftlab.sim.sync import Mutex


def _all_schedules(build, bound=None):
    """Run `build(machine)` under every schedule; return the violations seen."""
    dfs = DFS(bound)
    found = []
    i = 0
    while (chooser := dfs.execution(i)) is not None:
        m = Machine(race=RaceDetector(locations=True))
        build(m)
        m.run(chooser)
        found.append(m.violation)
        i += 1
    return found


def _scratch(m):
    base = m.mem.reserve(1 << 16)
    m.mem.commit(base, 4 * 4096)
    return base


def test_unsynchronised_pair_is_a_race_in_every_order():
    def build(m):
        x = _scratch(m)

        async def writer(t):
            await t.yield_now()
            t.mem.store_u64(x, 1)

        async def reader(t):
            await t.yield_now()
            t.mem.load_u64(x)

        m.spawn(writer, name="writer")
        m.spawn(reader, name="reader")

    found = _all_schedules(build)
    assert len(found) == 2
    assert all(v is not None and v.kind == "data-race" for v in found)


def test_race_report_names_both_accesses():
    m = Machine(race=RaceDetector(locations=True))
    x = _scratch(m)

    async def writer(t):
        await t.yield_now()
        t.mem.store_u64(x, 1)

    async def reader(t):
        await t.yield_now()
        t.mem.load_u64(x)

    m.spawn(writer, name="writer")
    m.spawn(reader, name="reader")
    m.run(Replay([0]).execution(0))
    v = m.violation
    assert v.kind == "data-race"
    assert f"{x:#x}" in v.message
    assert "b:reader at step 2" in v.message and "a:writer at step 1" in v.message
    assert len(v.details) == 2
    assert all("test_race.py" in d for d in v.details)
    assert "in reader" in v.details[0] and "in writer" in v.details[1]


def test_mutex_orders_the_accesses():
    def build(m):
        x = _scratch(m)
        mu = Mutex(m, "mu")

        async def body(t):
            await mu.lock()
            t.mem.store_u64(x, t.mem.load_u64(x) + 1)
            await mu.unlock()

        m.spawn(body)
        m.spawn(body)

    found = _all_schedules(build)
    assert len(found) > 2
    assert found == [None] * len(found)


def _message_passing(store_order, load_order):
    def build(m):
        x = _scratch(m)
        flag = x + 64

        async def producer(t):
            t.mem.store_u64(x, 42)
            await t.mem.store(flag, 1, order=store_order)

        async def consumer(t):
            if await t.mem.load(flag, order=load_order):
                assert t.mem.load_u64(x) == 42

        m.spawn(producer)
        m.spawn(consumer)
    return build


def test_release_acquire_orders_the_payload():
    found = _all_schedules(_message_passing(RELEASE, ACQUIRE))
    assert found == [None] * len(found)


@pytest.mark.parametrize("store_order,load_order", [(RELAXED, ACQUIRE), (RELEASE, RELAXED),
                                                    (RELAXED, RELAXED)])
def test_missing_release_or_acquire_is_a_race(store_order, load_order):
    found = _all_schedules(_message_passing(store_order, load_order))
    assert any(v is not None and v.kind == "data-race" for v in found)


def test_start_and_join_order_the_accesses():
    def build(m):
        x = _scratch(m)

        async def child(t):
            t.mem.store_u64(x, t.mem.load_u64(x) + 1)

        async def parent(t):
            t.mem.store_u64(x, 1)
            c = await t.spawn(child)
            await t.yield_now()
            await t.join(c)
            assert t.mem.load_u64(x) == 2

        m.spawn(parent)

    found = _all_schedules(build)
    assert found == [None] * len(found)


def test_without_join_the_parent_races_with_the_child():
    def build(m):
        x = _scratch(m)

        async def child(t):
            await t.yield_now()
            t.mem.store_u64(x, 2)

        async def parent(t):
            await t.spawn(child)
            await t.yield_now()
            t.mem.load_u64(x)

        m.spawn(parent)

    found = _all_schedules(build)
    assert any(v is not None and v.kind == "data-race" for v in found)


def test_atomics_do_not_race_with_each_other():
    def build(m):
        x = _scratch(m)

        async def body(t):
            await t.mem.fetch_add(x, 1, order=RELAXED)
            await t.mem.load(x, order=RELAXED)

        m.spawn(body)
        m.spawn(body)

    found = _all_schedules(build)
    assert found == [None] * len(found)


def test_plain_write_races_with_a_concurrent_atomic_read():
    def build(m):
        x = _scratch(m)

        async def writer(t):
            await t.yield_now()
            t.mem.store_u64(x, 5)

        async def reader(t):
            await t.mem.load(x, order=ACQUIRE)

        m.spawn(writer)
        m.spawn(reader)

    found = _all_schedules(build)
    assert all(v is not None and v.kind == "data-race" for v in found)


def test_random_exploration_is_quiet_on_a_correct_program():
    for seed in range(50):
        m = Machine(race=RaceDetector())
        _message_passing(RELEASE, ACQUIRE)(m)
        m.run(Random(seed).execution(0))
        assert m.violation is None


# ---------------------------------------------------------------------------------------------
# The per-word shadow with byte masks (issue 13 item 5)

def _pair(first, second):
    """Every schedule of two unsynchronised threads doing `first(t, x)` and `second(t, x)`."""
    def build(m):
        x = _scratch(m)

        async def a(t):
            await t.yield_now()
            await first(t, x)

        async def b(t):
            await t.yield_now()
            await second(t, x)

        m.spawn(a)
        m.spawn(b)
    return _all_schedules(build)


async def _u32_lo(t, x):
    t.mem.store_u32(x, 1)


async def _u32_hi(t, x):
    t.mem.store_u32(x + 4, 1)


async def _u16_at_2(t, x):
    t.mem.load_u16(x + 2)


async def _u64(t, x):
    t.mem.store_u64(x, 1)


def test_neighbouring_fields_in_one_word_do_not_race():
    assert _pair(_u32_lo, _u32_hi) == [None, None]
    assert _pair(_u16_at_2, _u32_hi) == [None, None]


def test_a_word_store_races_with_each_field_inside_it():
    for inner in (_u32_lo, _u32_hi, _u16_at_2):
        found = _pair(_u64, inner)
        assert len(found) == 2 and all(v is not None and v.kind == "data-race" for v in found)


def test_the_report_names_both_extents_when_they_differ():
    found = _pair(_u64, _u32_hi)
    assert "of 4 bytes at" in found[0].message and "of 8 bytes at" in found[0].message


def test_a_memset_races_with_an_atomic_store_into_the_range():
    async def memset(t, x):
        t.mem.fill(x, 64, 0)

    async def publish(t, x):
        await t.mem.store(x + 40, 7, order=RELEASE)

    found = _pair(memset, publish)
    assert all(v is not None and v.kind == "data-race" for v in found)


def test_a_memcpy_races_with_a_plain_store_of_one_item_but_not_with_reads():
    async def memcpy(t, x):
        t.mem.write_bytes(x + 256, t.mem.read_bytes(x + 3, 100))   # unaligned at both ends

    async def store_last_byte(t, x):
        t.mem.store_u8(x + 102, 1)

    async def store_after(t, x):
        t.mem.store_u8(x + 103, 1)

    async def reader(t, x):
        t.mem.load_u64(x + 96)

    assert all(v is not None and v.kind == "data-race" for v in _pair(memcpy, store_last_byte))
    assert _pair(memcpy, store_after) == [None, None]
    assert _pair(memcpy, reader) == [None, None]


def test_reads_of_the_two_halves_of_a_word_keep_their_own_epochs():
    """a reads the low half under the lock and the high half after it; b writes the low half
    under the lock. One merged epoch for the word would make b's write race with a's second
    read, which it does not overlap."""
    def build(m):
        x = _scratch(m)
        mu = Mutex(m, "mu")

        async def a(t):
            await mu.lock()
            t.mem.load_u32(x)
            await mu.unlock()
            t.mem.load_u32(x + 4)        # outside the lock

        async def b(t):
            await mu.lock()
            t.mem.store_u32(x, 2)        # ordered with a's first read, not with its second
            await mu.unlock()

        m.spawn(a)
        m.spawn(b)

    found = _all_schedules(build)
    assert len(found) > 2 and found == [None] * len(found)


def test_long_ranges_across_pages_race_with_what_they_overlap_only():
    """Ranges of more than RANGE_WORDS words are page records: compared with word accesses and
    with other ranges, across a page boundary, and not with what lies beside them."""
    async def memset_two_pages(t, x):
        t.mem.fill(x + 4000, 200, 0)                          # crosses into the next page

    async def store_in_second_page(t, x):
        await t.mem.store(x + 4096 + 64, 1, order=RELEASE)

    async def store_beside(t, x):
        t.mem.store_u64(x + 4200, 1)                          # the first byte after it

    async def copy_over(t, x):
        t.mem.write_bytes(x + 4100, t.mem.read_bytes(x + 8192, 100))

    async def copy_beside(t, x):
        t.mem.write_bytes(x + 4200, bytes(100))

    for other in (store_in_second_page, copy_over):
        found = _pair(memset_two_pages, other)
        assert all(v is not None and v.kind == "data-race" for v in found), other.__name__
    for other in (store_beside, copy_beside):
        assert _pair(memset_two_pages, other) == [None, None], other.__name__


def test_long_reads_do_not_race_with_each_other_and_a_long_write_supersedes():
    async def long_read(t, x):
        t.mem.read_bytes(x, 1000)

    assert _pair(long_read, long_read) == [None, None]

    def build(m):
        x = _scratch(m)
        mu = Mutex(m, "mu")

        async def a(t):
            await mu.lock()
            t.mem.store_u64(x + 8, 1)
            t.mem.fill(x, 1000, 0)       # covers a's own word entry
            await mu.unlock()

        async def b(t):
            await mu.lock()
            t.mem.load_u64(x + 8)
            t.mem.write_bytes(x, bytes(1000))
            await mu.unlock()

        m.spawn(a)
        m.spawn(b)

    found = _all_schedules(build)
    assert len(found) >= 2 and found == [None] * len(found)
