"""The sequence lock (ftlab.runtime.lock) in isolation: two writers each store a pair of
fields under the write lock, a reader takes a snapshot; DFS proves no validated snapshot is
torn, and without the seqlock (`type-cache-no-seqlock`) DFS finds a torn one."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ftlab import Config
from ftlab.explore.execute import execute
from ftlab.runtime.lock import (
    seqlock_begin_read,
    seqlock_end_read,
    seqlock_lock_write,
    seqlock_unlock_write,
)
from ftlab.scenarios import Scenario
from ftlab.sim import DFS
from ftlab.sim.atomics import RELAXED
from ftlab.sim.violation import ViolationError


@dataclass
class _Cell:
    seq: int
    a: int
    b: int


def _setup(rt) -> None:
    base = rt.raw_calloc(64)
    rt.shared = _Cell(base, base + 8, base + 16)


async def _writer(t, value: int) -> None:
    c = t.shared
    await seqlock_lock_write(t, c.seq)
    await t.mem.store(c.a, value, 8, RELAXED)
    await t.mem.store(c.b, value, 8, RELAXED)
    await seqlock_unlock_write(t, c.seq)


async def _w1(t) -> None:
    await _writer(t, 1)


async def _w2(t) -> None:
    await _writer(t, 2)


async def _reader(t) -> None:
    c = t.shared
    while True:
        s = await seqlock_begin_read(t, c.seq)
        a = await t.mem.load(c.a, 8, RELAXED)
        b = await t.mem.load(c.b, 8, RELAXED)
        if await seqlock_end_read(t, c.seq, s):
            break
    if a != b:
        raise ViolationError("type-cache", f"torn read: a={a}, b={b} validated by the seqlock")


SEQLOCK = Scenario(name="seqlock", description="two writers, one reader",
                   threads=(("w1", _w1), ("w2", _w2), ("reader", _reader)),
                   setup=_setup, interpreter=False)


def _dfs(config: Config, bound: int = 2, budget: int = 20_000):
    dfs = DFS(preemption_bound=bound)
    n = 0
    while n < budget and (chooser := dfs.execution(n)) is not None:
        r = execute(SEQLOCK, config, chooser)
        n += 1
        if not r.ok:
            return n, r
    return n, None


def test_dfs_2_over_two_writers_and_a_reader_finds_no_torn_read():
    n, bad = _dfs(Config())
    assert bad is None, f"{bad.violation} [{bad.schedule}]"
    assert 100 < n < 20_000, f"DFS(2) was not exhausted ({n} executions)"


@pytest.mark.slow
def test_dfs_3_over_two_writers_and_a_reader_finds_no_torn_read():
    n, bad = _dfs(Config(), bound=3)
    assert bad is None, f"{bad.violation} [{bad.schedule}]"
    assert 1000 < n < 20_000, f"DFS(3) was not exhausted ({n} executions)"


def test_without_the_seqlock_dfs_finds_a_torn_read():
    n, bad = _dfs(Config(mutations=frozenset({"type-cache-no-seqlock"})))
    assert bad is not None, f"no torn read in {n} executions"
    assert bad.violation.kind == "type-cache" and "torn read" in bad.violation.message
