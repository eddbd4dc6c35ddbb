"""The abandoned-page scenarios (ftlab.scenarios.abandoned, issue 12 item 4): the faithful model
shows the gap CPython has (premature reuse of a page emptied by a cross-thread free after its
owner abandoned it) on every schedule tried; the proposed fix (`Config.abandoned_page_goal`)
gives the page a goal at the reclaim and is clean; the campaign reports the known gap as
expected ("known gap (found …)") and a known-gap row that finds nothing as a failure."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ftlab import Config
from ftlab.explore.campaign import explore
from ftlab.explore.execute import execute
from ftlab.scenarios import Scenario, catalog, get
from ftlab.sim import DFS, PCT, Random

GAP, FIXED = "abandoned-page-goal", "abandoned-page-goal-fixed"


def _runs(name: str, strategy, budget: int, config: Config | None = None):
    sc = get(name)
    n = 0
    while n < budget and (chooser := strategy.execution(n)) is not None:
        yield n, execute(sc, config or Config(), chooser)
        n += 1


def test_both_are_in_the_catalog_and_only_the_faithful_one_is_a_known_gap():
    c = catalog()
    assert c[GAP].known_gap == ("premature-reuse",) and not c[GAP].config
    assert c[FIXED].known_gap == () and c[FIXED].config == {"abandoned_page_goal": True}
    assert c[GAP].threads == c[FIXED].threads


@pytest.mark.parametrize("version", ["3.13.0", "3.14"])
def test_the_faithful_model_reuses_the_page_while_the_reader_holds_the_pointer(version):
    for n, r in _runs(GAP, Random(3), 20, Config(version=version)):
        v = r.violation
        assert v is not None and v.kind == "premature-reuse", (n, v)
        assert "starts a page of 112-byte blocks" in v.message and "reader" in v.message, v
        assert r.stats.get("qsbr_abandoned_pages_given_goal", 0) == 0


@pytest.mark.parametrize("version", ["3.13.0", "3.14"])
def test_the_fix_gives_the_page_a_goal_and_is_clean(version):
    config = Config(version=version)
    for strategy in (Random(7), PCT(7, 2, get(FIXED).pct_steps)):
        for n, r in _runs(FIXED, strategy, 40, config):
            assert r.ok, (strategy.describe(), n, r.violation)
            assert r.stats.get("qsbr_abandoned_pages_given_goal", 0) >= 1, "the fix never ran"


def test_the_campaign_counts_the_known_gap_as_expected():
    res = explore([GAP, FIXED], budget=20, workers=1, shrink=False, version="3.14")
    gap, fixed = res.row(GAP), res.row(FIXED)
    assert gap.verdict == "known gap (found premature-reuse)" and gap.ok and gap.known_gap
    assert fixed.verdict.startswith("clean") and fixed.ok and not fixed.known_gap
    assert res.ok and "1 clean" in res.summary() and "1 known gap found" in res.summary()


def test_a_known_gap_row_that_finds_nothing_fails():
    """The fixed program declared as a known gap: nothing to find, so the row is not ok (a
    known gap is never counted as clean)."""
    liar = replace(get(FIXED), name="liar", known_gap=("premature-reuse",))
    res = explore("liar", budget=10, workers=1, shrink=False, scenarios={"liar": liar},
                  version="3.14")
    row = res.row("liar")
    assert row.verdict.startswith("known gap (missed") and not row.ok and not res.ok


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 10,000 schedules on a loaded 2-core machine
def test_the_fix_is_clean_under_10000_random_and_pct_schedules_and_dfs():
    sc = get(FIXED)
    for strategy in (Random(101), PCT(101, 1, sc.pct_steps), PCT(102, 2, sc.pct_steps),
                     PCT(103, 3, sc.pct_steps)):
        for n, r in _runs(FIXED, strategy, 2500):
            assert r.ok, (strategy.describe(), n, r.violation)
    n = 0
    for n, r in _runs(FIXED, DFS(preemption_bound=sc.dfs_bound), 20_000):
        assert r.ok, ("DFS", n, r.violation)
    assert n + 1 < 20_000, "DFS is exhausted"
