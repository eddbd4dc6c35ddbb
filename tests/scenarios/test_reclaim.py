"""The abandoned-reclaim-reader scenario (ftlab.scenarios.reclaim, issue 12 item 2): a third
thread reclaims an abandoned segment whose emptied page waits for its QSBR goal while a reader
holds a pointer into it. Clean unmutated; `reclaim-ignores-goal` is found."""

from __future__ import annotations

import pytest

from ftlab import Config
from ftlab.explore.campaign import first_detection
from ftlab.explore.execute import execute
from ftlab.scenarios import get
from ftlab.sim import DFS, PCT, Random

NAME = "abandoned-reclaim-reader"
VERSIONS = ["3.13.0", "3.14", "main"]


def _clean(strategy, budget: int, config: Config) -> int:
    sc = get(NAME)
    n = 0
    while n < budget and (chooser := strategy.execution(n)) is not None:
        r = execute(sc, config, chooser)
        assert r.ok, f"{strategy.describe()} execution {n}: {r.violation} [{r.schedule}]"
        n += 1
    return n


@pytest.mark.parametrize("version", VERSIONS)
def test_clean_under_a_few_random_and_pct_schedules(version):
    config = Config(version=version)
    _clean(Random(4), 10, config)
    _clean(PCT(4, 2, get(NAME).pct_steps), 10, config)


def test_the_reclaimer_keeps_the_emptied_page_waiting_for_its_goal(monkeypatch):
    """The scenario reaches what it is about: the reclaim asks about an all-free page with a
    goal, is told it is not safe, and the page goes to the reclaimer's QSBR page list."""
    from ftlab.check import install
    from ftlab.runtime import Runtime
    from ftlab.runtime.obmalloc import QsbrPageHooks

    asked: list[tuple[int, bool]] = []
    real = QsbrPageHooks.page_is_safe_to_free

    async def spy(self, page):
        goal = page.qsbr_goal
        safe = await real(self, page)
        asked.append((goal, safe))
        return safe

    monkeypatch.setattr(QsbrPageHooks, "page_is_safe_to_free", spy)
    sc = get(NAME)
    rt = Runtime(Config())
    install(rt)
    sc.setup(rt)
    for name, fn in sc.threads:
        rt.start_thread(fn, name=name)
    rt.machine.run(Random(2).execution(0))
    assert rt.machine.violation is None, rt.machine.violation
    assert any(goal != 0 and not safe for goal, safe in asked), asked


@pytest.mark.parametrize("version", ["3.13.0", "3.14"])
def test_a_reclaim_that_ignores_the_goal_is_found(version):
    sc = get(NAME)
    r, n = first_detection(sc, "reclaim-ignores-goal", version=version)
    assert r is not None, f"reclaim-ignores-goal not found in {n} schedules"
    assert r.violation.kind in sc.mutations["reclaim-ignores-goal"], r.violation
    assert n <= 10, f"reclaim-ignores-goal needed {n} schedules"


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("version", VERSIONS)
def test_clean_under_10000_random_and_pct_schedules_and_dfs(version):
    sc = get(NAME)
    config = Config(version=version)
    for strategy in (Random(101), PCT(101, 1, sc.pct_steps), PCT(102, 2, sc.pct_steps),
                     PCT(103, 3, sc.pct_steps)):
        assert _clean(strategy, 2500, config) == 2500
    _clean(DFS(preemption_bound=sc.dfs_bound), 20000, config)
