"""One execution: a scenario on a fresh runtime under one chooser, and what came of it.

The result carries the schedule string, so any run, failing or not, can be replayed exactly.
A data race found without source locations (exploration runs without them, for speed) is
replayed once with locations on, so the report names both accesses' lines.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from typing import Any

import ftlab.check
from ftlab.config import Config
from ftlab.runtime.pystate import Runtime
from ftlab.scenarios import Scenario
from ftlab.sim.machine import Event
from ftlab.sim.schedule import encode
from ftlab.sim.strategies import Chooser, Random, Replay, Strategy
from ftlab.sim.violation import Violation, ViolationError


@dataclass
class RunResult:
    scenario: str
    config: Config
    violations: list[Violation]
    schedule: str
    steps: int
    decisions: int
    preemptions: int
    threads: list[str]
    stats: dict[str, Any] = field(default_factory=dict)
    trace: list[Event] | None = None

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def violation(self) -> Violation | None:
        return self.violations[0] if self.violations else None


def _execute(scenario: Scenario, rt: Runtime, chooser: Chooser) -> None:
    """Set up, run the threads, finalize and check at the end: the run proper."""
    m = rt.machine
    if scenario.setup is not None:
        scenario.setup(rt)
    for name, fn in scenario.threads:
        rt.start_thread(fn, name=name, interpreter=scenario.interpreter,
                        daemon=name in scenario.daemon)
        if m.violation is not None:
            break
    m.run(chooser)
    if m.pruned:
        return      # the strategy cut the run short (DPOR: equivalent to one it has run)
    if m.violation is None and scenario.interpreter and not rt.lifecycle.finalized:
        rt.finalize()                                   # no choice to make: one thread
    if m.violation is None:
        try:
            rt.observer.run_finished(rt)                # end-of-run oracles (leaks)
            if scenario.check is not None:
                scenario.check(rt)
        except ViolationError as e:
            m.fail(Violation(e.kind, e.message, m.steps, None, e.details))


def execute(scenario: Scenario, config: Config, chooser: Chooser, *,
            race_locations: bool = False) -> RunResult:
    if scenario.config:
        config = replace(config, **scenario.config)     # what the scenario needs (debug hooks)
    rt = Runtime(config, race_locations=race_locations)
    ftlab.check.install(rt)                             # checked-mode oracles
    if config.trace:                                    # counterexamples in words (issue 16)
        from ftlab.report.names import Namer

        namer = Namer(rt)
        rt.add_observer(namer)
        rt.machine.namer = namer.name
    m = rt.machine
    if config.trace:                                    # the calls' results (Machine.results_hook)
        profile = sys.getprofile()
        sys.setprofile(m.results_hook)
        try:
            _execute(scenario, rt, chooser)
        finally:
            sys.setprofile(profile)
    else:
        _execute(scenario, rt, chooser)
    if config.trace and m.trace is not None:
        namer.rename_trace(m.trace)
    stats: dict[str, Any] = {"switches": m.switches, **rt.stats}
    if m.race is not None:
        stats["race_checks"] = m.race.checks
    return RunResult(
        scenario=scenario.name,
        config=config,
        violations=[m.violation] if m.violation is not None else [],
        schedule=encode(m.choices),
        steps=m.steps,
        decisions=len(m.choices),
        preemptions=m.preemptions,
        threads=[t.label for t in m.threads],
        stats=stats,
        trace=m.trace,
    )


def run(scenario: Scenario, config: Config | None = None, strategy: Strategy | None = None,
        *, execution: int = 0, trace: bool = False) -> RunResult:
    """Run one execution of `scenario` (execution `execution` of `strategy`)."""
    strategy = strategy or Random(0)
    chooser = strategy.execution(execution)
    if chooser is None:
        raise ValueError(f"{strategy.describe()} has no execution {execution}")
    return run_chooser(scenario, config, chooser, trace=trace)


def run_chooser(scenario: Scenario, config: Config | None, chooser: Chooser, *,
                trace: bool = False) -> RunResult:
    """Run `scenario` under `chooser`; a data race is replayed once to add source locations."""
    config = config or Config()
    if trace and not config.trace:
        config = replace(config, trace=True)
    result = execute(scenario, config, chooser)
    v = result.violation
    if v is not None and v.kind == "data-race" and not v.details:
        again = execute(scenario, config, Replay(result.schedule).execution(0), race_locations=True)
        if again.violation is not None:
            result.violations = again.violations
    return result
