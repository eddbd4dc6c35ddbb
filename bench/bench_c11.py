"""Issue 14 item 4: what the c11 memory model costs, per catalog scenario, unmutated.

For each scenario (its first version policy, 3.14 where it has it): `--runs` random executions
under SC and the same execution indices under C11 (`ftlab.scenarios.in_memory_model`),
alternated one by one in this process so that machine drift hits both; executions/s of each and
the ratio (SC rate / C11 rate: how many times slower C11 is). C11 executions also make more
decisions (which store each load reads), counted per run. Violations are counted, not
stopped at (an unmutated row is clean under SC; under C11 a scenario written for SC may
expose a weaker order).

Run: python bench/bench_c11.py [--runs N] [SCENARIO ...]
"""

from __future__ import annotations

import argparse
import time

from common import Figure

from ftlab.config import Config
from ftlab.explore.execute import execute
from ftlab.scenarios import catalog, in_memory_model
from ftlab.sim.strategies import Random


def _one(scenario, config: Config, strategy, i: int) -> tuple[float, int, str]:
    started = time.perf_counter()
    try:
        r = execute(scenario, config, strategy.execution(i))
        kind = r.violation.kind if r.violation is not None else ""
        decisions = r.decisions
    except Exception as e:  # a model check that the other memory model trips: reported
        kind, decisions = f"crash ({type(e).__name__})", 0
    return time.perf_counter() - started, decisions, kind


def measure(name: str, runs: int, seed: int = 0) -> dict:
    base = catalog()[name]
    versions = base.versions or ("3.14",)
    config = Config(version="3.14" if "3.14" in versions else versions[0])
    out = {}
    models = {m: in_memory_model(base, m) for m in ("sc", "c11")}
    acc = {m: [0.0, 0, set()] for m in models}
    for m, scenario in models.items():           # warm-up: imports and caches, not timed
        _one(scenario, config, Random(seed), runs)
    for i in range(runs):
        for m, scenario in models.items():       # alternated: drift hits both
            secs, decisions, kind = _one(scenario, config, Random(seed), i)
            acc[m][0] += secs
            acc[m][1] += decisions
            if kind:
                acc[m][2].add(kind)
    for m, (secs, decisions, kinds) in acc.items():
        out[m] = {"rate": runs / secs if secs else float("inf"), "decisions": decisions / runs,
                  "kinds": sorted(kinds), "seconds": secs}
    out["version"] = config.version
    return out


def table(names: list[str], runs: int) -> list[tuple[str, dict]]:
    rows = []
    print(f"{'scenario':28s} {'version':7s} {'SC exec/s':>10s} {'C11 exec/s':>10s} {'ratio':>6s}"
          f" {'SC dec':>7s} {'C11 dec':>7s}  violations under C11")
    for name in names:
        r = measure(name, runs)
        rows.append((name, r))
        sc, c11 = r["sc"], r["c11"]
        print(f"{name:28s} {r['version']:7s} {sc['rate']:10.1f} {c11['rate']:10.1f} "
              f"{sc['rate'] / c11['rate']:5.2f}x {sc['decisions']:7.1f} {c11['decisions']:7.1f}  "
              f"{', '.join(c11['kinds']) or '-'}"
              + (f"  (SC: {', '.join(sc['kinds'])})" if sc["kinds"] else ""), flush=True)
    sc_s = sum(r["sc"]["seconds"] for _, r in rows)
    c11_s = sum(r["c11"]["seconds"] for _, r in rows)
    print(f"{'catalog (time-weighted)':28s} {'':7s} {runs * len(rows) / sc_s:10.1f} "
          f"{runs * len(rows) / c11_s:10.1f} {c11_s / sc_s:5.2f}x")
    return rows


def run(quick: bool = False) -> list[Figure]:
    names = ["lost-update", "message-passing", "tryincref-zero", "type-cache-c11", "list-resize"]
    rows = table(names, 10 if quick else 40)
    sc = sum(r["sc"]["seconds"] for _, r in rows)
    c11 = sum(r["c11"]["seconds"] for _, r in rows)
    n = len(rows) * (10 if quick else 40)
    return [Figure("executions/s under the c11 memory model", n / c11, n / sc, "SC", "exec/s",
                   goal="< 3x slower")]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("scenarios", nargs="*")
    args = ap.parse_args()
    table(args.scenarios or list(catalog()), args.runs)
