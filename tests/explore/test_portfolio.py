"""The portfolio: strategy specs, the batch plan, the DFS frontier as bytes."""

from __future__ import annotations

import pytest

from ftlab.explore.portfolio import (
    ExploreError, StrategySpec, default_portfolio, dfs_restore, dfs_state, parse_spec, plan_batches,
)
from ftlab.scenarios import get
from ftlab.sim import Machine


def test_specs_parse_and_print_back():
    for text in ("random", "pct:1", "pct:3", "dfs", "dfs:2"):
        assert str(parse_spec(text)) == text
    assert parse_spec("pct") == StrategySpec("pct", 2)


@pytest.mark.parametrize("text", ["pct:0", "pct:-1", "dfs:x", "random:3", "roundrobin", "zzz"])
def test_bad_specs_are_refused(text):
    with pytest.raises(ExploreError):
        parse_spec(text)


def test_default_portfolio_adds_dfs_and_dpor_only_where_the_scenario_asks_for_them():
    from dataclasses import replace

    s = get("lost-update")
    assert [str(x) for x in default_portfolio(s)] == [
        "random", "pct:1", "pct:2", "pct:3", "dfs", "dpor"]
    assert [str(x) for x in default_portfolio(replace(s, dpor=False))] == [
        "random", "pct:1", "pct:2", "pct:3", "dfs"]
    assert str(default_portfolio(replace(s, dfs_bound=2, dpor=False))[-1]) == "dfs:2"
    assert [str(x) for x in default_portfolio(get("mimalloc-stress"))] == [
        "random", "pct:1", "pct:2", "pct:3"]


def test_plan_shares_the_budget_and_interleaves_round_robin():
    plan = plan_batches(3, 100, 20)
    assert sum(b.count for b in plan) == 100
    per = [sum(b.count for b in plan if b.strategy == s) for s in range(3)]
    assert per == [34, 33, 33]
    assert [b.strategy for b in plan[:6]] == [0, 1, 2, 0, 1, 2]
    assert [b.seq for b in plan] == list(range(len(plan)))
    for s in range(3):
        starts = [b.start for b in plan if b.strategy == s]
        assert starts == list(range(0, len(starts) * 20, 20))


def _run_dfs_pieces(piece: int) -> list[tuple[int, ...]]:
    seen, blob, i = [], None, 0
    while True:
        dfs = dfs_restore(1, blob)
        for _ in range(piece):
            chooser = dfs.execution(i)
            if chooser is None:
                return seen
            i += 1
            m = Machine()
            base = m.mem.reserve(1 << 16)
            m.mem.commit(base, 4096)

            async def body(t):
                for _ in range(3):
                    await t.mem.fetch_add(base, 1)

            m.spawn(body)
            m.spawn(body)
            m.run(chooser)
            seen.append(tuple(m.choices))
        blob = dfs_state(dfs)


def test_dfs_frontier_survives_a_round_trip_through_bytes():
    whole = _run_dfs_pieces(10_000)
    assert whole and len(set(whole)) == len(whole)
    assert _run_dfs_pieces(1) == whole
    assert _run_dfs_pieces(3) == whole
