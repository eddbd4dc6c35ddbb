"""Shrinking a failing schedule: fewer preemptions first, then fewer steps (DESIGN §3).

A counterexample found by a random strategy is full of context switches that have nothing to
do with the bug. `shrink` searches for a schedule that fails with the same violation kind and
is smaller by the key

    (preemptions, steps, decisions)

so a schedule with fewer preemptions always wins, however many steps it takes.

Two views of a schedule, two kinds of candidates (delta debugging over each):

1. As a *plan of switches* (`PlanChooser`): "when thread x has run k steps, switch to y", and
   no preemption anywhere else. Switches are placed by the switching thread's own step count,
   so dropping one leaves the others where they were in their threads. Candidates drop one
   preempting switch (earliest first); keep only k of them, for k = 0, 1, ... (with and
   without the free switches, made where the running thread could not go on); then drop
   chunks of switches (halves, quarters, ... one).
   This is what removes preemptions: in a plain choice list, removing one choice shifts every
   later choice to a different decision point and the run falls apart.
2. As the *choice list* (`ContinueChooser`): the list followed strictly — a choice that is not
   runnable makes the candidate invalid (`ScheduleError`), never a silently different run —
   and past its end no preemption (keep the current thread, else the lowest-numbered one).
   Candidates remove chunks of decisions, then cut the list at every length. This trims steps.

3. When neither improves the schedule: preemption-bounded DFS for bounds 0, 1, ... below the
   current count, on half of the remaining run budget (for small programs this finds the
   minimum outright, as iterative context bounding does).

After every improvement everything is restarted from the new best. Each accepted candidate is kept
as the full choice list its run actually made, and the result is checked by strict `Replay` of
that list, which is what `ftlab replay` runs; if that ever failed, the original is kept.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

from ftlab.config import Config
from ftlab.sim.schedule import ScheduleError, decode, encode, thread_letter
from ftlab.sim.strategies import DFS, Replay

DEFAULT_MAX_RUNS = 400
SUBSETS_PER_SIZE = 60   # candidates "keep only these k preempting switches", per k

Switch = tuple[int, int, int]  # (thread x, x's steps so far, thread y)


# ---------------------------------------------------------------------------------------------
# Choosers for candidates

class ContinueChooser:
    """Follows `choices` strictly; past their end it never preempts."""

    __slots__ = ("_choices", "_n")

    def __init__(self, choices: Sequence[int]) -> None:
        self._choices = tuple(choices)
        self._n = 0

    def ident(self) -> tuple:
        return ("list", self._choices)

    def choose(self, runnable, current):
        n = self._n
        self._n = n + 1
        if n < len(self._choices):
            want = self._choices[n]
            for t in runnable:
                if t.index == want:
                    return t
            raise ScheduleError(f"candidate diverges at decision {n}: thread "
                                f"{thread_letter(want)} is not runnable there")
        if current is not None and current in runnable:
            return current
        return runnable[0]

    def finish(self) -> None:
        pass


class PlanChooser:
    """Runs a plan of switches; where none is due it keeps the current thread, else the
    lowest-numbered runnable one.

    A thread's step count is kept from the machine's step counter: the steps since the last
    decision go to the thread that ran last if it also ran at that decision, else one to that
    one and the rest to the one that ran last. (Exact except when a thread ran alone between
    two decisions after another blocked; the count is deterministic either way, which is all
    a plan needs.) `log` records `(x, k, chosen, default)` at every decision.
    """

    __slots__ = ("_plan", "_due", "_counts", "_last", "_last_steps", "_force", "log")

    def __init__(self, plan: Sequence[Switch]) -> None:
        self._plan = tuple(plan)
        due: dict[int, list[tuple[int, int]]] = {}
        for x, k, y in self._plan:
            due.setdefault(x, []).append((k, y))
        for v in due.values():
            v.reverse()  # pop() from the end gives the earliest
        self._due = due
        self._counts: dict[int, int] = {}
        self._last = None
        self._last_steps = 0
        self._force: Sequence[int] | None = None
        self.log: list[tuple[int, int, int, int]] = []

    @classmethod
    def recording(cls, choices: Sequence[int]) -> "PlanChooser":
        """Replays `choices` strictly, only to record the run's plan in `log`."""
        c = cls(())
        c._force = tuple(choices)
        return c

    def ident(self) -> tuple:
        return ("plan", self._plan)

    def choose(self, runnable, current):
        steps = runnable[0].machine.steps
        delta = steps - self._last_steps
        counts = self._counts
        last = self._last
        if current is not None:
            if last is None or last is current:
                counts[current.index] = counts.get(current.index, 0) + delta
            else:
                counts[last.index] = counts.get(last.index, 0) + 1
                counts[current.index] = counts.get(current.index, 0) + max(delta - 1, 0)
        x = current.index if current is not None else -1
        k = counts.get(x, 0)
        cur = current if current is not None and current in runnable else None
        chosen = default = cur if cur is not None else runnable[0]
        n = len(self.log)
        if self._force is not None:
            if n >= len(self._force):
                raise ScheduleError(f"schedule ends at decision {n}")
            want = self._force[n]
        else:
            pending = self._due.get(x)
            want = pending.pop()[1] if pending and pending[-1][0] <= k else None
        if want is not None:
            for t in runnable:
                if t.index == want:
                    chosen = t
                    break
            else:
                if self._force is not None:
                    raise ScheduleError(f"schedule diverges at decision {n}")
        self.log.append((x, k, chosen.index, default.index))
        self._last = chosen
        self._last_steps = steps
        return chosen

    def finish(self) -> None:
        if self._force is not None and len(self.log) != len(self._force):
            raise ScheduleError("the run ended before the schedule did")


# ---------------------------------------------------------------------------------------------
# Attempts

@dataclass(frozen=True)
class Attempt:
    choices: tuple[int, ...]
    preemptions: int
    steps: int
    plan: tuple[Switch, ...]
    preempting: tuple[bool, ...]   # per switch: the thread could have gone on

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.preemptions, self.steps, len(self.choices))


@dataclass(frozen=True)
class ShrinkResult:
    kind: str
    original: str
    schedule: str          # the full, strict choice list of the shrunk run
    preemptions: int
    steps: int
    decisions: int
    original_preemptions: int
    original_steps: int
    runs: int              # candidate runs tried
    accepted: int          # candidates that improved the schedule
    verified: bool         # strict replay of `schedule` fails with `kind`
    seconds: float
    note: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _execute(scenario, config: Config, chooser, kind: str):
    from ftlab.explore.execute import execute

    try:
        result = execute(scenario, config, chooser)
    except ScheduleError:
        return None  # an invalid candidate
    if result.violation is None or result.violation.kind != kind:
        return None
    return result


def _read_plan(scenario, config: Config, choices: Sequence[int], kind: str) -> Attempt | None:
    """The run of `choices`, with its plan of switches."""
    rec = PlanChooser.recording(choices)
    result = _execute(scenario, config, rec, kind)
    if result is None:
        return None
    plan = tuple((x, k, c) for x, k, c, d in rec.log if c != d)
    preempting = tuple(d == x for x, k, c, d in rec.log if c != d)
    return Attempt(tuple(choices), result.preemptions, result.steps, plan, preempting)


# ---------------------------------------------------------------------------------------------
# Candidates

def _chunks(seq: tuple, n: int) -> Iterator[tuple]:
    """`seq` without one chunk: halves, quarters, ... single items (ddmin)."""
    size = n // 2
    while size >= 1:
        for lo in range(0, n, size):
            yield seq[:lo] + seq[lo + size:]
        size //= 2


def _candidates(best: Attempt) -> Iterator:
    plan = best.plan
    pre = [i for i, p in enumerate(best.preempting) if p]
    free = tuple(s for s, p in zip(plan, best.preempting) if not p)
    for i in pre:                               # 1. drop one preempting switch
        yield PlanChooser(plan[:i] + plan[i + 1:])
    for size in range(len(pre) - 1):            #    keep only `size` of them (fewest first)
        for n, keep in enumerate(itertools.combinations(pre, size)):
            if n >= SUBSETS_PER_SIZE:
                break
            kept = tuple(plan[i] for i in keep)
            yield PlanChooser(tuple(sorted(kept + free, key=lambda s: plan.index(s))))
            yield PlanChooser(kept)
    for cand in _chunks(plan, len(plan)):       #    drop chunks of switches
        yield PlanChooser(cand)
    c = best.choices
    for cand in _chunks(c, len(c)):             # 2. remove chunks of decisions
        yield ContinueChooser(cand)
    for k in range(len(c)):                     #    cut the list at every length
        yield ContinueChooser(c[:k])


# ---------------------------------------------------------------------------------------------
# shrink

def shrink(scenario, config: Config, schedule: str | Sequence[int], kind: str | None = None,
           *, max_runs: int = DEFAULT_MAX_RUNS) -> ShrinkResult:
    """Minimise `schedule`, a failing schedule of `scenario` under `config`, keeping its
    violation kind (`kind`, or whatever the schedule fails with). A schedule that does not fit
    the program raises `ScheduleError`."""
    from ftlab.explore.execute import execute

    started = time.perf_counter()
    choices = decode(schedule) if isinstance(schedule, str) else list(schedule)
    original = encode(choices)
    first = execute(scenario, config, Replay(choices).execution(0))

    def result(best: Attempt | None, runs: int, accepted: int, verified: bool, note: str = ""):
        if best is None:
            return ShrinkResult(kind or "", original, original, first.preemptions, first.steps,
                                first.decisions, first.preemptions, first.steps, runs, 0,
                                verified, time.perf_counter() - started, note)
        return ShrinkResult(kind, original, encode(best.choices), best.preemptions, best.steps,
                            len(best.choices), first.preemptions, first.steps, runs, accepted,
                            verified, time.perf_counter() - started, note)

    if first.violation is None or (kind is not None and first.violation.kind != kind):
        got = first.violation.kind if first.violation else "no violation"
        kind = kind or got
        return result(None, 1, 0, False, f"the schedule does not fail with {kind} ({got})")
    kind = first.violation.kind
    best = _read_plan(scenario, config, choices, kind)
    runs, accepted = 2, 0
    if best is None:  # cannot happen for a deterministic program
        return result(None, runs, 0, True, "the schedule did not replay the same way twice")
    seen: set[tuple] = set()
    searched: set[int] = set()   # preemption bounds the DFS step has tried
    while runs < max_runs:
        improved = False
        for chooser in _candidates(best):
            ident = chooser.ident()
            if ident in seen:
                continue
            seen.add(ident)
            if runs >= max_runs:
                break
            runs += 1
            r = _execute(scenario, config, chooser, kind)
            if r is None or (r.preemptions, r.steps, r.decisions) >= best.key:
                continue
            got = _read_plan(scenario, config, decode(r.schedule), kind)
            runs += 1
            if got is not None:
                best = got
                accepted += 1
                improved = True
                break
        if improved:
            continue
        # 3. Nothing local helps: search schedules with fewer preemptions outright, with
        # preemption-bounded DFS (fewest first), on part of what is left of the run budget.
        found = None
        for bound in range(best.preemptions):
            if bound in searched:
                continue
            searched.add(bound)
            dfs = DFS(preemption_bound=bound)
            cap = runs + max(1, (max_runs - runs) // 2)
            i = 0
            while runs < cap:
                chooser = dfs.execution(i)
                if chooser is None:
                    break
                i += 1
                runs += 1
                r = _execute(scenario, config, chooser, kind)
                if r is not None and (r.preemptions, r.steps, r.decisions) < best.key:
                    found = _read_plan(scenario, config, decode(r.schedule), kind)
                    runs += 1
                    break
            if found is not None:
                break
        if found is None:
            break
        best = found
        accepted += 1

    final = execute(scenario, config, Replay(list(best.choices)).execution(0))
    if final.violation is None or final.violation.kind != kind:
        return result(None, runs + 1, 0, True, "the shrunk schedule did not replay; kept the original")
    note = f"stopped after {max_runs} candidate runs" if runs >= max_runs else ""
    return result(best, runs + 1, accepted, True, note)
