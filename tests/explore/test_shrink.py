"""Shrinking: the result fails with the same kind, has no more preemptions (here: the fewest
possible), and replays strictly."""

from __future__ import annotations

import pytest

from ftlab import Config
from ftlab.explore.execute import execute
from ftlab.explore.shrink import ContinueChooser, PlanChooser, shrink
from ftlab.scenarios import get
from ftlab.sim import DFS, Random, Replay, ScheduleError, decode


def _failures(name: str, mutation: str, n: int, seed: int = 3):
    scenario, config = get(name), Config(mutations=frozenset([mutation]))
    found = []
    for i in range(2000):
        r = execute(scenario, config, Random(seed).execution(i))
        if r.violations:
            found.append(r)
            if len(found) == n:
                break
    return scenario, config, found


def _fewest_preemptions(scenario, config, kind: str) -> int:
    """Iterative context bounding: the first bound at which DFS finds the violation."""
    for bound in range(4):
        dfs = DFS(preemption_bound=bound)
        i = 0
        while (chooser := dfs.execution(i)) is not None:
            i += 1
            r = execute(scenario, config, chooser)
            if r.violation is not None and r.violation.kind == kind:
                return bound
    raise AssertionError("not found within 3 preemptions")


@pytest.mark.parametrize("name,mutation", [
    ("lost-update", "unsync-rmw"),
    ("lock-order", "lock-order-inversion"),
    ("message-passing", "relaxed-message"),
])
def test_shrunk_schedule_has_the_fewest_preemptions_and_the_same_kind(name, mutation):
    scenario, config, found = _failures(name, mutation, 5)
    kind = found[0].violation.kind
    fewest = _fewest_preemptions(scenario, config, kind)
    for r in found:
        s = shrink(scenario, config, r.schedule, kind)
        assert s.verified and s.kind == kind
        assert s.preemptions == fewest <= r.preemptions
        assert (s.preemptions, s.steps) <= (r.preemptions, r.steps)
        again = execute(scenario, config, Replay(s.schedule).execution(0))  # strict replay
        assert again.violation.kind == kind
        assert (again.preemptions, again.steps) == (s.preemptions, s.steps)


def test_shrinking_is_deterministic():
    scenario, config, found = _failures("lock-order", "lock-order-inversion", 1)
    a = shrink(scenario, config, found[0].schedule)
    b = shrink(scenario, config, found[0].schedule)
    assert (a.schedule, a.runs, a.accepted) == (b.schedule, b.runs, b.accepted)


def test_a_schedule_that_does_not_fail_is_not_shrunk():
    scenario, config = get("lost-update"), Config()
    r = execute(scenario, config, Random(0).execution(0))
    s = shrink(scenario, config, r.schedule, "check")
    assert not s.verified and s.schedule == r.schedule and "does not fail" in s.note


def test_a_schedule_that_does_not_fit_is_an_error():
    scenario, config = get("lost-update"), Config(mutations=frozenset(["unsync-rmw"]))
    with pytest.raises(ScheduleError):
        shrink(scenario, config, [5, 5, 5])


def test_continue_chooser_adds_no_preemption_past_its_list():
    scenario, config = get("lost-update"), Config()
    r = execute(scenario, config, ContinueChooser([]))
    assert r.preemptions == 0 and r.ok


def test_continue_chooser_refuses_a_choice_that_is_not_runnable():
    scenario, config = get("lost-update"), Config()
    with pytest.raises(ScheduleError, match="not runnable"):
        execute(scenario, config, ContinueChooser([7]))


def test_plan_chooser_replays_the_plan_it_recorded():
    scenario, config = get("lock-order"), Config()
    for i in range(20):
        r = execute(scenario, config, Random(11).execution(i))
        rec = PlanChooser.recording(decode(r.schedule))
        execute(scenario, config, rec)
        plan = [(x, k, c) for x, k, c, d in rec.log if c != d]
        again = execute(scenario, config, PlanChooser(plan))
        assert again.schedule == r.schedule
