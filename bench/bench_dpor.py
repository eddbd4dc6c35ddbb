"""Issue 13 item 4: DPOR against the DFS, per catalog scenario, unmutated.

For each scenario (its first version policy, 3.14 where it has it): the executions DPOR needs to
run every Mazurkiewicz trace, against the schedules the scenario's own bounded DFS
(`dfs_bound` preemptions) needs to exhaust its smaller space, each capped at `--cap`
executions. A scenario whose DPOR search finishes within a row's share of the default budget
(1000 / 6 strategies) can be verified by the default `ftlab explore`.

The figure is the ratio of executions (DFS / DPOR) where both finish; the baseline is 1 (DPOR
explores no more than DFS). Run: python bench/bench_dpor.py [--cap N] [SCENARIO ...]
"""

from __future__ import annotations

import argparse
import time

from common import Figure

from ftlab.config import Config
from ftlab.explore.execute import execute
from ftlab.scenarios import catalog
from ftlab.sim.dpor import DPOR
from ftlab.sim.strategies import DFS

SHARE = 1000 // 6


def _exhaust(scenario, config: Config, strategy, cap: int) -> tuple[int, bool, str, float]:
    """Executions run, whether the strategy finished, the first violation kind, seconds."""
    started = time.perf_counter()
    n = 0
    while n < cap:
        chooser = strategy.execution(n)
        if chooser is None:
            break
        r = execute(scenario, config, chooser)
        n += 1
        if r.violation is not None:
            return n, False, r.violation.kind, time.perf_counter() - started
    return n, strategy.exhausted, "", time.perf_counter() - started


def table(names: list[str], cap: int) -> list[tuple]:
    rows = []
    for name in names:
        sc = catalog()[name]
        if sc.known_gap or sc.config.get("memory_model") == "c11":
            continue            # a gap fires; DPOR runs under sequential consistency only
        versions = sc.versions or ("3.14",)
        config = Config(version="3.14" if "3.14" in versions else versions[0])
        dpor = _exhaust(sc, config, DPOR(), cap)
        dfs = _exhaust(sc, config, DFS(preemption_bound=sc.dfs_bound), cap) if sc.dfs else None
        rows.append((name, config.version, dpor, dfs))
        d = f"{dpor[0]:>6}{' done' if dpor[1] else ' open'}{' ' + dpor[2] if dpor[2] else ''}"
        f = "-" if dfs is None else f"{dfs[0]:>6}{' done' if dfs[1] else ' open'} (bound {sc.dfs_bound})"
        verdict = "verifiable" if dpor[1] and dpor[0] <= SHARE else ""
        print(f"{name:28s} {config.version:7s} dpor {d:18s} {dpor[3]:6.1f}s | dfs {f:24s} {verdict}",
              flush=True)
    return rows


def run(quick: bool = False) -> list[Figure]:
    names = ["lost-update", "lock-order", "message-passing", "tryincref-zero", "merge-vs-reader"]
    rows = table(names, 300 if quick else 2000)
    both = [(d[0], f[0]) for _, _, d, f in rows if f is not None and d[1] and f[1]]
    dpor_runs = sum(d for d, _ in both)
    dfs_runs = sum(f for _, f in both)
    return [Figure("DPOR executions to exhaust, against unbounded or bounded DFS", dfs_runs / max(1, dpor_runs),
                   1.0, "DPOR = DFS", "x fewer", goal="> 1")]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--cap", type=int, default=1000)
    ap.add_argument("scenarios", nargs="*")
    args = ap.parse_args()
    table(args.scenarios or list(catalog()), args.cap)
