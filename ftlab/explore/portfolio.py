"""The strategy portfolio of a campaign row, and the plan of its batches.

A row (one scenario under one set of mutations) is explored by several strategies. Each
strategy gets an equal share of the row's budget, cut into batches of `batch` executions, and
the batches of all strategies are interleaved round-robin into one canonical order:

    random[0:20] pct:1[0:20] pct:2[0:20] pct:3[0:20] dfs:2[0:20] random[20:40] ...

Everything a campaign reports — schedules run, schedules to first detection, which strategy
found it — is counted in this canonical order, so the answer does not depend on how many
workers ran the batches, on which finished first, or on how batches were grouped into tasks.

Seeded strategies (random, pct) run execution i as a pure function of (seed, i), so their
batches are independent. DFS keeps a frontier, DPOR its exploration stack; the batches of
either form a chain, each starting from the state the previous one left (`dfs_state` /
`dfs_restore`), and once the search has exhausted its space its remaining batches are void
(they run nothing). A DPOR search that exhausts has run every Mazurkiewicz trace of the
scenario: the row is verified, not merely clean.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

from ftlab.sim.dpor import DPOR
from ftlab.sim.strategies import DFS, MAX_PCT_DEPTH, PCT, Random, Strategy

# Schedules per row when `--budget` is not given, and executions per batch (the granularity of
# the canonical interleaving; changing it changes which schedules a row runs).
DEFAULT_BUDGET = 1000
DEFAULT_BATCH = 20


class ExploreError(ValueError):
    """Bad input to a campaign: one line for the user, exit status 2."""


# ---------------------------------------------------------------------------------------------
# Strategy specs

@dataclass(frozen=True, order=True)
class StrategySpec:
    """`random`, `pct:DEPTH`, `dfs[:BOUND]` or `dpor`, as written on the command line."""

    kind: str
    param: int | None = None

    def __str__(self) -> str:
        return self.kind if self.param is None else f"{self.kind}:{self.param}"

    @property
    def chained(self) -> bool:
        """True when batches depend on the previous batch (DFS's frontier, DPOR's stack)."""
        return self.kind in ("dfs", "dpor")

    def make(self, seed: int, pct_steps: int) -> Strategy:
        if self.kind == "random":
            return Random(seed)
        if self.kind == "pct":
            return PCT(seed, depth=self.param or 1, steps=pct_steps)
        if self.kind == "dpor":
            return DPOR()
        return DFS(preemption_bound=self.param)


def parse_spec(text: str) -> StrategySpec:
    name, colon, arg = text.strip().partition(":")
    param: int | None = None
    if colon:
        if not (arg.isascii() and arg.lstrip("-").isdigit() and len(arg) <= 9):
            raise ExploreError(f"bad strategy parameter {arg!r} in {text!r}: expected a whole number")
        param = int(arg)
        if param < 0:
            raise ExploreError(f"bad strategy parameter {arg!r} in {text!r}: must not be negative")
    if name == "random":
        if colon:
            raise ExploreError(f"strategy 'random' takes no parameter (got {text!r}); use --seed")
        return StrategySpec("random")
    if name == "pct":
        if param is None:
            param = 2
        if not 1 <= param <= MAX_PCT_DEPTH:
            raise ExploreError(f"PCT depth must be from 1 to {MAX_PCT_DEPTH}, not {param}")
        return StrategySpec("pct", param)
    if name == "dfs":
        return StrategySpec("dfs", param)
    if name == "dpor":
        if colon:
            raise ExploreError(f"strategy 'dpor' takes no parameter (got {text!r}): it has no bound")
        return StrategySpec("dpor")
    if name in ("roundrobin", "rr", "replay"):
        raise ExploreError(f"strategy {name!r} runs a single schedule: use `ftlab run` or `ftlab replay`")
    raise ExploreError(f"unknown strategy {text!r} (known: random, pct:DEPTH, dfs[:BOUND], dpor)")


def default_portfolio(scenario) -> list[StrategySpec]:
    """Random, PCT with depths 1-3 and, where the scenario says its space is small enough
    (`scenario.dfs`), a DFS bounded by `scenario.dfs_bound` preemptions (None: unbounded), and
    DPOR where its whole space fits the budget (`scenario.dpor`)."""
    specs = [StrategySpec("random"), StrategySpec("pct", 1), StrategySpec("pct", 2),
             StrategySpec("pct", 3)]
    if scenario.dfs:
        specs.append(StrategySpec("dfs", scenario.dfs_bound))
    if scenario.dpor:
        specs.append(StrategySpec("dpor"))
    return specs


# ---------------------------------------------------------------------------------------------
# The batch plan of a row

@dataclass(frozen=True)
class PlannedBatch:
    seq: int
    strategy: int  # index into the row's portfolio
    start: int     # first execution index of that strategy
    count: int


def plan_batches(n_strategies: int, budget: int, batch: int) -> list[PlannedBatch]:
    """Equal shares of `budget` (the first strategies get the remainder), cut into batches and
    interleaved round-robin."""
    shares = [budget // n_strategies + (1 if s < budget % n_strategies else 0)
              for s in range(n_strategies)]
    plan: list[PlannedBatch] = []
    start = 0
    while True:
        added = False
        for s, share in enumerate(shares):
            if start < share:
                plan.append(PlannedBatch(len(plan), s, start, min(batch, share - start)))
                added = True
        if not added:
            return plan
        start += batch


# ---------------------------------------------------------------------------------------------
# DFS frontier as bytes (so a chain can cross processes and survive an interrupt)

def dfs_state(dfs: DFS) -> bytes:
    return zlib.compress(json.dumps(dfs.snapshot(), separators=(",", ":")).encode(), 6)


def dfs_restore(bound: int | None, blob: bytes | None, kind: str = "dfs") -> DFS | DPOR:
    """The search a chained batch starts from: `kind`'s fresh one, or the one in `blob` (a DFS
    frontier or a DPOR stack, told apart by their keys)."""
    if not blob:
        return DPOR() if kind == "dpor" else DFS(preemption_bound=bound)
    state = json.loads(zlib.decompress(blob))
    if "nodes" in state:
        return DPOR.restore(state)
    state.setdefault("bound", bound)
    return DFS.restore(state)
