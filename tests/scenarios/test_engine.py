"""The engine scenarios: each mutation is found, each fixed program is clean, replay is exact."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ftlab import Config, run
from ftlab.explore.execute import execute
from ftlab.scenarios import get
from ftlab.sim import DFS, PCT, Random, Replay
from ftlab.sim.schedule import ScheduleError


def _first_failure(name: str, mutation: str | None, strategy, budget: int):
    scenario = get(name)
    config = Config(mutations=frozenset([mutation]) if mutation else frozenset())
    for i in range(budget):
        chooser = strategy.execution(i)  # DFS hands out each execution once
        if chooser is None:
            return None, i
        r = execute(scenario, config, chooser)
        if r.violations:
            return r, i + 1
    return None, budget


@pytest.mark.parametrize("name,mutation,kind", [
    ("lost-update", "unsync-rmw", "check"),
    ("lock-order", "lock-order-inversion", "deadlock"),
    ("message-passing", "relaxed-message", "data-race"),
])
def test_random_finds_each_engine_mutation_within_1000_schedules(name, mutation, kind):
    r, n = _first_failure(name, mutation, Random(seed=1), 1000)
    assert r is not None, f"{mutation} not found in 1000 schedules"
    assert r.violation.kind == kind


@pytest.mark.parametrize("name", ["lost-update", "lock-order", "message-passing"])
def test_engine_scenarios_are_clean_under_every_schedule(name):
    r, n = _first_failure(name, None, DFS(), 10_000)
    assert r is None
    assert n < 10_000  # exhausted, not cut off


def test_replay_reproduces_100_failing_schedules_exactly():
    scenario = get("lost-update")
    config = Config(mutations=frozenset(["unsync-rmw"]), trace=True)
    failures = 0
    i = 0
    while failures < 100:
        r = run(scenario, config, PCT(seed=5, depth=2, steps=8), execution=i)
        i += 1
        if not r.violations:
            continue
        failures += 1
        again = run(scenario, config, Replay(r.schedule))
        assert again.violations == r.violations
        assert again.trace == r.trace
        assert again.schedule == r.schedule


def test_a_stale_schedule_is_refused_not_replayed_differently():
    scenario = get("lock-order")
    config = Config(mutations=frozenset(["lock-order-inversion"]))
    r, _ = _first_failure("lock-order", "lock-order-inversion", Random(2), 1000)
    # the same schedule on the fixed program does not fit: the threads never block
    with pytest.raises(ScheduleError):
        run(scenario, replace(config, mutations=frozenset()), Replay(r.schedule))


def test_data_race_report_names_source_lines():
    found, _ = _first_failure("message-passing", "relaxed-message", Random(0), 1000)
    # exploration runs without source locations; `run` replays a race once to add them
    r = run(get("message-passing"), found.config, Replay(found.schedule))
    v = r.violation
    assert v.kind == "data-race"
    assert any("engine.py" in d and "_consumer" in d for d in v.details)
    assert any("engine.py" in d and "_producer" in d for d in v.details)
