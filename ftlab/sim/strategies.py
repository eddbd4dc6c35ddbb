"""Scheduling strategies: who runs next at each decision point.

A strategy hands out one `Chooser` per execution. The machine asks the chooser only at decision
points, where more than one thread is runnable; `runnable` is sorted by thread index and
`current` is the thread that ran the previous step (None at the start). The chooser returns one
of the runnable threads. Execution `i` of a seeded strategy depends only on (seed, i), so a
campaign can split executions across processes and still get the runs a serial loop gets.

- `Random(seed)`: uniform choice among the runnable threads.
- `PCT(seed, depth, steps)`: Burckhardt et al., ASPLOS 2010. Threads get random distinct
  priorities above `depth`; the highest-priority runnable thread runs; at `depth - 1` change
  points drawn uniformly over the estimated number of decisions `steps`, the running thread
  drops to a fresh lowest priority. Finds a bug of depth d with probability at least
  1 / (n * k^(d-1)).
- `DFS(preemption_bound)`: exhaustive, with iterative context bounding (Musuvathi & Qadeer,
  PLDI 2007): every schedule with no preemption first, then those with one, and so on up to the
  bound. Each execution is guided by a prefix of choices; past the prefix it keeps running the
  current thread, and every alternative it passes is queued once, by the number of preemptions
  it costs. So each schedule within the bound runs exactly once.
- `RoundRobin(quantum)`: switch to the next runnable thread after `quantum` steps.
- `Replay(schedule)`: the choices of a schedule string; a choice that does not fit is a
  `ScheduleError` naming the decision, never a silent different run.
"""

from __future__ import annotations

import random
from typing import Protocol, Sequence

from ftlab.sim.schedule import ScheduleError, decode, thread_letter


class ThreadLike(Protocol):
    index: int
    name: str


class Chooser(Protocol):
    def choose(self, runnable: Sequence[ThreadLike], current: ThreadLike | None) -> ThreadLike: ...

    def finish(self) -> None: ...


class Strategy:
    """Base: `execution(i)` gives the chooser of execution i, or None when the space is done."""

    name = "strategy"
    # A strategy whose executions are independent can be split across workers.
    parallel = True

    def execution(self, i: int) -> Chooser | None:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


def _rng(seed: int, i: int) -> random.Random:
    # Integer seeding is independent of PYTHONHASHSEED. Distinct (seed, i) give distinct seeds:
    # random.Random uses |seed|, hence the checks.
    if seed < 0 or not 0 <= i < 1 << 32:
        raise ValueError(f"seed must be >= 0 and execution in [0, 2**32), not ({seed}, {i})")
    return random.Random(seed << 32 | i)


# ---------------------------------------------------------------------------------------------
# Random

class _RandomChooser:
    # `uniform` tells the machine it may inline the choice: runnable[int(uniform() * n)].
    __slots__ = ("uniform",)

    def __init__(self, rng: random.Random) -> None:
        self.uniform = rng.random

    def choose(self, runnable, current):
        return runnable[int(self.uniform() * len(runnable))]

    def finish(self) -> None:
        pass


class Random(Strategy):
    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def execution(self, i: int) -> Chooser:
        return _RandomChooser(_rng(self.seed, i))

    def describe(self) -> str:
        return f"random(seed={self.seed})"


# ---------------------------------------------------------------------------------------------
# PCT

# Bugs of depth above 3 are rare; a depth is d - 1 change points, so this also bounds the work.
MAX_PCT_DEPTH = 64

class _PCTChooser:
    __slots__ = ("_rng", "_depth", "_priority", "_change_points", "_decisions")

    def __init__(self, rng: random.Random, depth: int, steps: int) -> None:
        self._rng = rng
        self._depth = depth
        self._priority: dict[int, float] = {}
        # d - 1 distinct change points among the decisions 1..k; the i-th lowers the running
        # thread to priority d - i, below every initial priority (all >= d).
        k = max(steps, depth)
        points = rng.sample(range(1, k + 1), depth - 1) if depth > 1 else []
        self._change_points = {p: depth - 1 - n for n, p in enumerate(sorted(points))}
        self._decisions = 0

    def _prio(self, t) -> float:
        p = self._priority.get(t.index)
        if p is None:
            # A thread seen for the first time gets a random priority in [d, d + 1).
            p = self._priority[t.index] = self._depth + self._rng.random()
        return p

    def choose(self, runnable, current):
        self._decisions += 1
        low = self._change_points.get(self._decisions)
        if low is not None and current is not None:
            self._priority[current.index] = float(low)
        best = runnable[0]
        best_p = self._prio(best)
        for t in runnable[1:]:
            p = self._prio(t)
            if p > best_p:
                best, best_p = t, p
        return best

    def finish(self) -> None:
        pass


class PCT(Strategy):
    name = "pct"

    def __init__(self, seed: int = 0, depth: int = 2, steps: int = 100) -> None:
        if not 1 <= depth <= MAX_PCT_DEPTH:
            raise ValueError(f"PCT depth must be from 1 to {MAX_PCT_DEPTH}, not {depth}")
        self.seed = seed
        self.depth = depth
        self.steps = steps

    def execution(self, i: int) -> Chooser:
        return _PCTChooser(_rng(self.seed, i), self.depth, self.steps)

    def describe(self) -> str:
        return f"pct(seed={self.seed}, depth={self.depth}, k={self.steps})"


# ---------------------------------------------------------------------------------------------
# DFS with iterative context bounding

class _DFSChooser:
    __slots__ = ("_dfs", "_prefix", "_preemptions", "_n")

    def __init__(self, dfs: "DFS", prefix: tuple[int, ...], preemptions: int) -> None:
        self._dfs = dfs
        self._prefix = prefix
        self._preemptions = preemptions
        self._n = 0

    def choose(self, runnable, current):
        n = self._n
        self._n = n + 1
        prefix = self._prefix
        if n < len(prefix):
            want = prefix[n]
            for t in runnable:
                if t.index == want:
                    return t
            raise ScheduleError(f"DFS prefix diverged at decision {n}: the program is not deterministic")
        # Past the prefix: keep the current thread if it can run (no preemption), else the
        # lowest index. Queue every other runnable thread as an alternative, once.
        keep = current is not None and current in runnable
        chosen = current if keep else runnable[0]
        base = tuple(self._dfs._path)  # the n choices made so far
        for t in runnable:
            if t is not chosen:
                cost = self._preemptions + (1 if keep else 0)
                self._dfs._push(base + (t.index,), cost)
        self._dfs._path.append(chosen.index)
        return chosen

    def finish(self) -> None:
        pass


class DFS(Strategy):
    """Exhaustive search; `preemption_bound=None` means no bound."""

    name = "dfs"
    parallel = False

    def __init__(self, preemption_bound: int | None = None) -> None:
        self.preemption_bound = preemption_bound
        # levels[p]: prefixes whose schedules have exactly p preemptions so far (LIFO: DFS order)
        self._levels: list[list[tuple[int, ...]]] = [[()]]
        self._level = 0
        self._path: list[int] = []
        self.executions = 0
        self.pruned = 0

    def _push(self, prefix: tuple[int, ...], preemptions: int) -> None:
        if self.preemption_bound is not None and preemptions > self.preemption_bound:
            self.pruned += 1
            return
        while len(self._levels) <= preemptions:
            self._levels.append([])
        self._levels[preemptions].append(prefix)

    @property
    def exhausted(self) -> bool:
        return all(not level for level in self._levels[self._level:])

    def execution(self, i: int) -> Chooser | None:
        while self._level < len(self._levels) and not self._levels[self._level]:
            self._level += 1
        if self._level >= len(self._levels):
            return None
        prefix = self._levels[self._level].pop()
        self._path = list(prefix)
        self.executions += 1
        return _DFSChooser(self, prefix, self._level)

    def snapshot(self) -> dict:
        """The frontier, as plain JSON-able data: a search can stop, cross a process boundary
        and go on with `DFS.restore`, visiting each schedule once overall."""
        return {"bound": self.preemption_bound, "levels": [[list(p) for p in level] for level in self._levels],
                "level": self._level, "executions": self.executions, "pruned": self.pruned}

    @classmethod
    def restore(cls, state: dict) -> "DFS":
        dfs = cls(state["bound"])
        dfs._levels = [[tuple(p) for p in level] for level in state["levels"]]
        dfs._level = state["level"]
        dfs.executions = state["executions"]
        dfs.pruned = state["pruned"]
        return dfs

    def describe(self) -> str:
        bound = "none" if self.preemption_bound is None else self.preemption_bound
        return f"dfs(preemption_bound={bound})"


# ---------------------------------------------------------------------------------------------
# RoundRobin and Replay

class _RoundRobinChooser:
    __slots__ = ("_quantum", "_run")

    def __init__(self, quantum: int) -> None:
        self._quantum = quantum
        self._run = 0

    def choose(self, runnable, current):
        if current is not None and current in runnable:
            self._run += 1
            if self._run < self._quantum:
                return current
        self._run = 0
        last = -1 if current is None else current.index
        for t in runnable:
            if t.index > last:
                return t
        return runnable[0]

    def finish(self) -> None:
        pass


class RoundRobin(Strategy):
    name = "roundrobin"
    parallel = False

    def __init__(self, quantum: int = 1) -> None:
        if quantum < 1:
            raise ValueError(f"round-robin quantum must be at least 1, not {quantum}")
        self.quantum = quantum

    def execution(self, i: int) -> Chooser | None:
        # Deterministic: one schedule only.
        return _RoundRobinChooser(self.quantum) if i == 0 else None

    def describe(self) -> str:
        return f"roundrobin(quantum={self.quantum})"


class _ReplayChooser:
    __slots__ = ("_choices", "_n", "_names")

    def __init__(self, choices: list[int]) -> None:
        self._choices = choices
        self._n = 0

    def choose(self, runnable, current):
        n = self._n
        if n >= len(self._choices):
            names = ", ".join(f"{thread_letter(t.index)} ({t.name})" for t in runnable)
            raise ScheduleError(
                f"schedule ends at decision {n}, but the program goes on with {names} runnable")
        want = self._choices[n]
        self._n = n + 1
        for t in runnable:
            if t.index == want:
                return t
        names = ", ".join(f"{thread_letter(t.index)} ({t.name})" for t in runnable)
        raise ScheduleError(
            f"schedule diverges at decision {n}: it picks thread {thread_letter(want)}, "
            f"which is not runnable there (runnable: {names})")

    def finish(self) -> None:
        left = len(self._choices) - self._n
        if left:
            raise ScheduleError(
                f"the run ended after decision {self._n}, but the schedule has {left} more choice(s)")


class Replay(Strategy):
    name = "replay"
    parallel = False

    def __init__(self, schedule: str | list[int]) -> None:
        self.choices = decode(schedule) if isinstance(schedule, str) else list(schedule)

    def execution(self, i: int) -> Chooser | None:
        return _ReplayChooser(self.choices) if i == 0 else None
