"""PCT finds a depth-2 bug at least as often as its guarantee 1/(n * k^(d-1)) says."""

from __future__ import annotations

from ftlab.sim import PCT, Machine, Random


def _window_bug(m: Machine) -> None:
    """Depth 2: thread b's check must fall after a opens the window and before a closes it."""
    base = m.mem.reserve(1 << 16)
    m.mem.commit(base, 4096)
    flag, other = base, base + 8

    async def a(t):
        await t.mem.store(other, 1)
        await t.mem.store(flag, 1)      # opens the window
        await t.mem.store(flag, 0)      # closes it
        await t.mem.store(other, 2)

    async def b(t):
        await t.mem.load(other)
        if await t.mem.load(flag):
            m.shared = "hit"
        await t.mem.load(other)
        await t.mem.load(other)

    m.spawn(a)
    m.spawn(b)


def _hits(strategy, runs: int) -> int:
    hits = 0
    for i in range(runs):
        m = Machine()
        _window_bug(m)
        m.run(strategy.execution(i))
        hits += m.shared == "hit"
    return hits


def test_pct_meets_its_depth_2_bound():
    n, k, d, runs = 2, 8, 2, 2000
    bound = 1 / (n * k ** (d - 1))
    hits = _hits(PCT(seed=11, depth=d, steps=k), runs)
    # the guarantee is a lower bound per run; allow three standard deviations of sampling noise
    expected = bound * runs
    assert hits >= expected - 3 * (expected * (1 - bound)) ** 0.5
    assert hits > 0


def test_pct_depth_1_never_finds_a_depth_2_bug():
    # with no change point the highest-priority thread runs to completion: no window
    assert _hits(PCT(seed=3, depth=1, steps=8), 200) == 0


def test_random_finds_it_too():
    assert _hits(Random(1), 500) > 0
