"""Issue 6: campaign throughput, through the real campaign machinery (planning, task sizing,
the store, the process pool).

- schedules per second per worker over the catalog: every scenario of the catalog, unmutated
  (so no row stops early), the same budget per row, run by a pool of 1 worker process; the
  baseline is the same campaign run in this process, with no pool;
- parallel efficiency with 2 local workers: rate(2 workers) / (2 x rate(1 worker)), the two
  measured alternately in the same run; the baseline is the efficiency of a plain CPU-bound loop
  in 2 processes measured at the same time (the most this machine gives right now, if something
  else is running on it);
- worker utilisation with 2 workers: the share of the wall time each worker had a task (what
  the campaign's dispatch loses to planning, commits and the tail, whatever else runs);
- the wall time of the default `ftlab explore` (quick: with --budget 100).

Run: python bench/bench_explore.py   (or `ftlab bench --only explore`)

Issue 13: the same code against another commit, in the same run:

    python bench/bench_explore.py --against REV [--budget N] [--workers W] [--rates N]
                                  [--no-explore] [SCENARIO ...]

exports REV (`git archive`) beside the working tree and runs, alternately in each, `python -m
ftlab explore` with a fresh --db (wall time, then the ratio working tree / REV), and a probe of
executions per second per scenario (unmutated, default version, Random, `--rates` executions,
the best of `--rounds` rounds). Both trees run under the same load at the same time, so the
ratio is what to quote; say the load (printed) with it.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import time

from common import Figure

from ftlab.explore.backends import ProcessBackend, SerialBackend
from ftlab.explore.campaign import Campaign, _row_params, campaign_key, select_rows
from ftlab.explore.store import Store
from ftlab.scenarios import catalog


def _campaign_rate(backend, budget: int) -> tuple[float, float]:
    """Schedules per second of one campaign over every unmutated scenario, and the share of
    the wall time the workers were busy with a task."""
    rows = [_row_params(s, m, None, budget, "3.14") for s, m in select_rows(catalog(), None, ["none"])]
    params = {"rows": rows, "seed": 1, "batch": 20, "version": "3.14", "shrink": False,
              "shrink_runs": 0}
    store = Store.memory()
    try:
        cid = store.new_campaign(campaign_key(params), params, "bench",
                                 [dict(r, ord=i) for i, r in enumerate(rows)])
        campaign = Campaign(store, cid, params, backend=backend)
        start = time.perf_counter()
        campaign.run()
        elapsed = time.perf_counter() - start
        done, _ = campaign.counts()
        return done / elapsed, campaign.worker_seconds / (backend.workers * elapsed)
    finally:
        store.close()


def _burn(n: int) -> int:
    s = 0
    for i in range(n):
        s += i * i
    return s


def _burn_efficiency(seconds: float = 0.5) -> float:
    """Efficiency of a trivially parallel CPU-bound loop in 2 spawned processes."""
    n = 2_000_000
    start = time.perf_counter()
    _burn(n)
    one = time.perf_counter() - start
    n = max(1, int(n * seconds / max(one, 1e-3)))
    with cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
        list(ex.map(_burn, [10, 10]))
        start = time.perf_counter()
        _burn(n)
        one = time.perf_counter() - start
        start = time.perf_counter()
        list(ex.map(_burn, [n, n]))
        two = time.perf_counter() - start
    return one / two


def _default_explore_seconds(quick: bool) -> tuple[float, str]:
    from ftlab.explore.campaign import explore

    budget = 100 if quick else None
    start = time.perf_counter()
    result = explore(workers=os.cpu_count() or 1, budget=budget)
    elapsed = time.perf_counter() - start
    label = "default `ftlab explore` wall time" + (" (quick: --budget 100)" if quick else "")
    if not result.ok:
        label += f" [not all as expected: {result.summary()}]"
    return elapsed, label


def run(quick: bool = False) -> list[Figure]:
    budget = 40 if quick else 150
    rounds = 1 if quick else 3
    one, two = ProcessBackend(1), ProcessBackend(2)
    try:
        for b in (one, two):  # start the workers and import everything before timing
            _campaign_rate(b, 2)
        serial = r1 = r2 = ceiling = busy = 0.0
        for _ in range(rounds):
            serial = max(serial, _campaign_rate(SerialBackend(), budget)[0])
            r1 = max(r1, _campaign_rate(one, budget)[0])
            rate, used = _campaign_rate(two, budget)
            if rate > r2:
                r2, busy = rate, used
            ceiling = max(ceiling, _burn_efficiency())
    finally:
        one.close()
        two.close()
    seconds, label = _default_explore_seconds(quick)
    return [
        Figure(name="explore: schedules/s per worker over the catalog", value=r1,
               baseline=serial, baseline_name="same campaign in-process", unit="schedules/s"),
        Figure(name="explore: parallel efficiency, 2 local workers", value=r2 / (2 * r1),
               baseline=ceiling, baseline_name="CPU loop in 2 processes now", unit="",
               goal=">= 0.85"),
        Figure(name="explore: worker utilisation, 2 local workers", value=busy, baseline=1.0,
               baseline_name="always busy", unit=""),
        Figure(name=label, value=seconds, baseline=300.0, baseline_name="goal", unit="s",
               goal="< 300 s", lower_is_better=True),
    ]


# ---------------------------------------------------------------------------------------------
# Issue 13: this tree against another commit, in the same run

# Run in each tree (cwd first on sys.path), as a server: reads "SCENARIO N" lines, answers
# each with the executions per second (and steps per execution) of N executions of SCENARIO,
# unmutated, default version, Random(1). The two trees' servers are asked in turn, scenario by
# scenario, so a change in the machine's load hits both alike.
_RATE_PROBE = r"""
import json, sys, time
from ftlab.config import Config
from ftlab.explore.execute import run
from ftlab.scenarios import catalog
from ftlab.sim.strategies import Random
cat = catalog()
print(json.dumps(list(cat)), flush=True)
for line in sys.stdin:
    name, n = line.split()
    sc, n = cat[name], int(n)
    run(sc, Config(), Random(1), execution=0)          # warm: imports, caches
    start = time.perf_counter()
    steps = 0
    for i in range(n):
        steps += run(sc, Config(), Random(1), execution=i).steps
    elapsed = time.perf_counter() - start
    print(json.dumps([n / elapsed, steps / n]), flush=True)
"""


class _Probe:
    """The rate server of one tree: `script` (by default `_RATE_PROBE`) run there, which prints
    the catalog's names, then answers each "SCENARIO N" line with one JSON line."""

    def __init__(self, tree: str, script: str = _RATE_PROBE, who: str = "bench_explore") -> None:
        import json
        import subprocess
        import sys

        self.who = who
        self.p = subprocess.Popen([sys.executable, "-c", script], cwd=tree, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.names = json.loads(self.p.stdout.readline())

    def rate(self, name: str, n: int) -> list[float]:
        import json

        self.p.stdin.write(f"{name} {n}\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise SystemExit(f"{self.who}: the rate probe died on {name}")
        return json.loads(line)

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait()


def _export(rev: str, into: str) -> str:
    """`git archive REV` unpacked into `into`; the commit's full hash."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    full = subprocess.run(["git", "rev-parse", "--verify", rev + "^{commit}"], cwd=root,
                          capture_output=True, text=True)
    if full.returncode != 0:
        raise SystemExit(f"bench_explore: no commit {rev!r} in {root}")
    archive = subprocess.Popen(["git", "archive", full.stdout.strip()], cwd=root,
                               stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", into], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise SystemExit(f"bench_explore: git archive {rev} failed")
    return full.stdout.strip()


def _explore_wall(tree: str, args: list[str], db: str) -> tuple[float, int, str]:
    """Wall seconds of `python -m ftlab explore ARGS --db DB` in `tree`, its exit code and the
    last line it printed (the summary)."""
    import subprocess
    import sys

    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "ftlab", "explore", *args, "--db", db], cwd=tree,
                       capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    lines = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.strip()]
    return elapsed, p.returncode, lines[-1] if lines else ""


def against(argv: list[str] | None = None) -> int:
    import argparse
    import shutil
    import tempfile

    ap = argparse.ArgumentParser(prog="bench_explore.py --against")
    ap.add_argument("--against", required=True, metavar="REV", help="the commit to compare with")
    ap.add_argument("--budget", type=int, default=None, help="explore --budget (default: its own)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rates", type=int, default=30, metavar="N",
                    help="executions per scenario in the rate probe (0: no probe)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternations of the two trees (the best of each is kept)")
    ap.add_argument("--no-explore", action="store_true", help="only the rate probe")
    ap.add_argument("scenarios", nargs="*")
    a = ap.parse_args(argv)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tmp = tempfile.mkdtemp(prefix="bench-explore-")
    try:
        base = os.path.join(tmp, "base")
        os.mkdir(base)
        full = _export(a.against, base)
        trees = {"base": base, "work": here}
        print(f"base = {a.against} ({full[:10]}), work = {here}; "
              f"load average {os.getloadavg()[0]:.2f} at start, {os.cpu_count()} cores")
        args = [*a.scenarios, "--workers", str(a.workers)]
        if a.budget is not None:
            args += ["--budget", str(a.budget)]
        walls: dict[str, float] = {}
        rates: dict[str, dict[str, list[float]]] = {"base": {}, "work": {}}
        if a.rates:
            probes = {label: _Probe(tree) for label, tree in trees.items()}
            try:
                names = [n for n in (a.scenarios or probes["work"].names)
                         if n in probes["base"].names]
                for r in range(a.rounds):
                    for name in names:
                        for label, probe in probes.items():
                            rate, steps = probe.rate(name, a.rates)
                            old = rates[label].get(name)
                            if old is None or rate > old[0]:
                                rates[label][name] = [rate, steps]
            finally:
                for probe in probes.values():
                    probe.close()
        for r in range(a.rounds):
            for label, tree in trees.items():
                if not a.no_explore:
                    db = os.path.join(tmp, f"{label}-{r}.db")
                    wall, code, last = _explore_wall(tree, args, db)
                    walls[label] = min(wall, walls.get(label, wall))
                    print(f"  round {r + 1} {label}: explore {wall:7.1f} s, exit {code}: {last}",
                          flush=True)
        if rates["work"]:
            print(f"\n{'scenario':28} {'base exec/s':>11} {'work exec/s':>11} {'speed-up':>8} "
                  f"{'steps/exec':>10}")
            for name, (w, steps) in rates["work"].items():
                b, bsteps = rates["base"].get(name, [0.0, 0.0])
                # different steps per execution: the scenario itself changed, not only its cost
                note = "" if round(bsteps) == round(steps) else f"  (base: {bsteps:.0f} steps)"
                print(f"{name:28} {b:11.1f} {w:11.1f} {w / b if b else float('inf'):7.2f}x "
                      f"{steps:10.0f}{note}")
        if walls:
            print(f"\nftlab explore {' '.join(args)}: base {walls['base']:.1f} s, work "
                  f"{walls['work']:.1f} s, work/base = {walls['work'] / walls['base']:.2f} "
                  f"(load average {os.getloadavg()[0]:.2f} at the end)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    import sys

    if any(arg in ("-h", "--help", "--against") or arg.startswith("--against=")
           for arg in sys.argv[1:]):
        raise SystemExit(against(sys.argv[1:]))
    for f in run(quick=False):
        print(f.row())
