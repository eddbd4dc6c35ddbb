"""The QSBR page-list scenario (ftlab.scenarios.pagelist): clean under Random, PCT and bounded
DFS schedules (a few by default; 10,000 and its DFS bound in the slow run), each gh-145615
mutation found within 1,000 schedules of the default portfolio by `page-list`."""

from __future__ import annotations

import pytest

from ftlab import Config
from ftlab.explore.campaign import first_detection
from ftlab.explore.execute import execute
from ftlab.scenarios import catalog, get
from ftlab.scenarios.pagelist import SCENARIOS
from ftlab.sim import DFS, PCT, Random

NAMES = [s.name for s in SCENARIOS]


def _clean(name: str, strategy, budget: int) -> int:
    sc = get(name)
    n = 0
    while n < budget and (chooser := strategy.execution(n)) is not None:
        r = execute(sc, Config(), chooser)
        assert r.ok, f"{name} {strategy.describe()} execution {n}: {r.violation} [{r.schedule}]"
        n += 1
    return n


def test_in_the_catalog_pinned_to_main():
    c = catalog()
    for s in SCENARIOS:
        assert c[s.name] is s
        assert s.config == {"version": "main"}
    assert {"qsbr-page-list-current-thread", "qsbr-page-stranded"} <= {
        m for s in SCENARIOS for m in s.mutations}


@pytest.mark.parametrize("name", NAMES)
def test_clean_under_a_few_random_and_pct_schedules(name):
    sc = get(name)
    _clean(name, Random(7), 8)
    _clean(name, PCT(7, 2, sc.pct_steps), 8)


@pytest.mark.parametrize("name,mutation",
                         [(s.name, m) for s in SCENARIOS for m in s.mutations])
def test_each_mutation_is_found_within_1000_schedules(name, mutation):
    r, n = first_detection(get(name), mutation, 1000)
    assert r is not None, f"{mutation} not found in {name} within 1000 schedules"
    assert r.violation.kind in get(name).mutations[mutation], str(r.violation)


@pytest.mark.slow
@pytest.mark.timeout(3600)      # qsbr-page-small-reuse's 15,000 runs exceed pytest's 300 s
@pytest.mark.parametrize("name", NAMES)
def test_clean_under_10000_random_and_pct_schedules_and_dfs(name):
    sc = get(name)
    for strategy in (Random(101), PCT(101, 1, sc.pct_steps), PCT(102, 2, sc.pct_steps),
                     PCT(103, 3, sc.pct_steps)):
        assert _clean(name, strategy, 2500) == 2500
    _clean(name, DFS(preemption_bound=sc.dfs_bound), 5000)
