"""What a worker runs: a task of batches (and shrink jobs), as plain picklable data.

This module is the whole interface between a campaign and its workers — local processes
(spawned, so nothing is inherited but what a task carries), Dask workers, or the campaign's
own process when it runs serially. A worker looks scenarios up by name in `catalog()`, runs
each batch's executions in order, and stops a batch at its first decisive violation (for an
unmutated row any violation; for a mutated row one of the kinds that expose the mutation, or a
`crash`, which is never a detection but always stops the row). Later batches of that row in the
same task are skipped: the campaign will not count them.

Nothing here depends on the wall clock except the `seconds` each result reports, which only
feeds the time column and the task-size estimate.
"""

from __future__ import annotations

import signal
import time
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Mapping

from ftlab.config import Config
from ftlab.explore.portfolio import StrategySpec, dfs_restore, dfs_state
from ftlab.scenarios import in_memory_model
from ftlab.sim.schedule import ScheduleError
from ftlab.sim.strategies import Replay

# At most this many non-decisive violations are kept per batch (the rest are only counted).
KEEP_PER_BATCH = 3


@dataclass(frozen=True)
class BatchSpec:
    row: int                      # the row's position in the campaign
    seq: int                      # the batch's position in the row's canonical order
    scenario: str
    mutations: tuple[str, ...]
    version: str
    strategy: str                 # a StrategySpec, as text
    seed: int
    pct_steps: int
    start: int
    count: int
    decisive: tuple[str, ...] | None  # None: every violation is decisive
    dfs_state: bytes | None = None    # DFS: the frontier before this batch
    chain: bool = False               # DFS: continue from the previous batch of the task
    memory_model: str = ""            # the row's (ftlab/sim/c11.py); "": the scenario's own


@dataclass(frozen=True)
class ShrinkSpec:
    row: int
    violation: int                # the stored violation's id
    scenario: str
    mutations: tuple[str, ...]
    version: str
    schedule: str
    kind: str
    max_runs: int
    memory_model: str = ""            # the row's (ftlab/sim/c11.py); "": the scenario's own


@dataclass
class BatchResult:
    row: int
    seq: int
    ran: int = 0
    steps: int = 0
    decisive: int | None = None   # index within the batch of the decisive execution
    violations: list[dict] = field(default_factory=list)
    others: int = 0               # non-decisive violations (kept or not)
    exhausted: bool = False       # DFS: nothing left to explore
    dfs_state: bytes | None = None
    seconds: float = 0.0


@dataclass
class ShrinkOutcome:
    row: int
    violation: int
    result: dict | None           # ShrinkResult.as_dict(), or None when shrinking failed
    error: str = ""
    seconds: float = 0.0


PARENT_POLL = 0.25       # seconds between checks of the parent's pid (the pipe wakes at once)


def init_worker() -> None:
    """Process-pool initializer: Ctrl-C is the campaign's to handle, not each worker's; and a
    worker never outlives the campaign that started it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Blocked by the parent while it spawned this process (ProcessBackend.submit); a Ctrl-C that
    # came meanwhile is dropped now that it is ignored.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    watch_parent()


def watch_parent() -> None:
    """Exit at once when the parent process is gone, however it ended (normally, Ctrl-C,
    SIGKILL). A pool worker otherwise waits forever on its task queue, whose write end it holds
    itself, and keeps multiprocessing's resource tracker alive with it.

    A spawned child gets the read end of a pipe whose write end only the parent holds
    (`multiprocessing.parent_process().sentinel`): it becomes readable when the parent dies,
    whatever killed it. The parent's pid is checked too (reparenting changes `getppid`), for a
    child started some other way. A daemon thread waits on both, so a worker in the middle of a
    batch goes as promptly as an idle one."""
    import multiprocessing
    import os
    import threading
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    sentinel = parent.sentinel if parent is not None else None
    ppid = os.getppid()

    def watch() -> None:
        while True:
            if sentinel is not None:
                if wait([sentinel], timeout=PARENT_POLL):
                    break
            else:
                time.sleep(PARENT_POLL)
            if os.getppid() != ppid:
                break
        os._exit(1)  # no cleanup to do: results go to the parent, which is gone

    threading.Thread(target=watch, name="ftlab-watch-parent", daemon=True).start()


@lru_cache(maxsize=1)
def _catalog():
    from ftlab.scenarios import catalog

    return catalog()


@lru_cache(maxsize=64)
def _config(version: str, mutations: tuple[str, ...]) -> Config:
    return Config(version=version, mutations=frozenset(mutations))


def _record(index: int, result, decisive: bool) -> dict:
    v = result.violation
    return {"execution": index, "kind": v.kind, "message": v.message, "thread": v.thread,
            "step": v.step, "details": list(v.details), "schedule": result.schedule,
            "steps": result.steps, "decisions": result.decisions,
            "preemptions": result.preemptions, "decisive": decisive}


def _crash(index: int, exc: BaseException, decisive: bool = True) -> dict:
    tb = traceback.extract_tb(exc.__traceback__)
    return {"execution": index, "kind": "crash", "message": f"{type(exc).__name__}: {exc}",
            "thread": None, "step": -1,
            "details": [f"{f.filename}:{f.lineno} in {f.name}" for f in tb[-4:]],
            "schedule": None, "steps": 0, "decisions": 0, "preemptions": 0, "decisive": decisive}


def run_batch(spec: BatchSpec, scenario, dfs=None) -> tuple[BatchResult, object]:
    from ftlab.explore.execute import execute

    started = time.perf_counter()
    out = BatchResult(spec.row, spec.seq)
    config = _config(spec.version, spec.mutations)
    strat = _spec(spec.strategy)
    if strat.chained:
        strategy = (dfs if spec.chain and dfs is not None
                    else dfs_restore(strat.param, spec.dfs_state, strat.kind))
    else:
        strategy = strat.make(spec.seed, spec.pct_steps)
    decisive_kinds = spec.decisive
    for k in range(spec.count):
        index = spec.start + k
        chooser = strategy.execution(index)
        if chooser is None:
            out.exhausted = True
            break
        try:
            result = execute(scenario, config, chooser)
        except ScheduleError as e:  # DFS saw the program take a different path: not deterministic
            out.ran += 1
            out.violations.append(_crash(index, e))
            out.decisive = k
            break
        except Exception as e:  # set-up or check code that broke: a crash, never a detection
            out.ran += 1
            out.violations.append(_crash(index, e))
            out.decisive = k
            break
        out.ran += 1
        out.steps += result.steps
        v = result.violation
        if v is None:
            continue
        if v.kind == "data-race" and not v.details:
            again = execute(scenario, config, Replay(result.schedule).execution(0),
                            race_locations=True)
            if again.violation is not None:
                result.violations = again.violations
        decisive = decisive_kinds is None or v.kind in decisive_kinds or v.kind == "crash"
        if decisive:
            out.violations.append(_record(index, result, True))
            out.decisive = k
            break
        out.others += 1
        if len(out.violations) < KEEP_PER_BATCH:
            out.violations.append(_record(index, result, False))
    if strat.chained:
        out.exhausted = out.exhausted or strategy.exhausted
        out.dfs_state = dfs_state(strategy)
    out.seconds = time.perf_counter() - started
    return out, (strategy if strat.chained else None)


@lru_cache(maxsize=64)
def _spec(text: str) -> StrategySpec:
    from ftlab.explore.portfolio import parse_spec

    return parse_spec(text)


def run_shrink(spec: ShrinkSpec, scenario) -> ShrinkOutcome:
    from ftlab.explore.shrink import shrink

    started = time.perf_counter()
    try:
        result = shrink(scenario, _config(spec.version, spec.mutations), spec.schedule, spec.kind,
                        max_runs=spec.max_runs)
        return ShrinkOutcome(spec.row, spec.violation, result.as_dict(),
                             seconds=time.perf_counter() - started)
    except Exception as e:  # a schedule that no longer fits: keep the unshrunk one
        return ShrinkOutcome(spec.row, spec.violation, None, f"{type(e).__name__}: {e}",
                             seconds=time.perf_counter() - started)


def run_task(task: tuple, scenarios: Mapping[str, object] | None = None) -> list:
    """Run the items of one task in order; the campaign's unit of work on a worker."""
    catalog = scenarios if scenarios is not None else _catalog()
    results: list = []
    stopped: set[int] = set()        # rows whose decisive execution this task found
    chains: dict[int, object] = {}   # row -> the DFS object its last batch left
    for item in task:
        # the row's memory model replaces the scenario's own (ftlab.scenarios.in_memory_model)
        scenario = in_memory_model(catalog[item.scenario], item.memory_model)
        if isinstance(item, ShrinkSpec):
            results.append(run_shrink(item, scenario))
            continue
        if item.row in stopped:
            continue
        out, dfs = run_batch(item, scenario, chains.get(item.row))
        if dfs is not None:
            chains[item.row] = dfs
        results.append(out)
        if out.decisive is not None:
            stopped.add(item.row)
    return results
