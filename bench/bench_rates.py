"""Issue 13 (item 2): executions per second of each catalog scenario, checked.

Each scenario runs unmutated, checked (race detector and every oracle, as `ftlab explore` runs
it), under Random(seed 1), executions 0..N-1, at version 3.14 unless the scenario restricts its
versions (then its first). The same N executions every time, so two measurements run the same
schedules and differ only in what each one costs.

- `ftlab bench --only rates` / `python bench/bench_rates.py`: in this process, each scenario's
  checked rate against its rate unchecked (no race detector, no oracles) in alternation: the
  ratio is what checking costs.
- `python bench/bench_rates.py --against REV [-n N] [--rounds R] [SCENARIO ...]`: this tree
  against commit REV (`git archive` beside it), one rate server per tree, asked in turn
  scenario by scenario for `--rounds` rounds (the best of each kept), so load drift hits both
  alike. Prints exec/s before (REV) and after (this tree), the speed-up, and checks that both
  trees ran the same steps and verdicts (a speed-up that changes results is a bug).
"""

from __future__ import annotations

import os
import time

from common import Figure

SEED = 1

# Run in each tree (cwd first on sys.path), as a server: prints the catalog's names, then reads
# "SCENARIO N" lines and answers each with [executions/s, total steps, verdict digest] of N
# checked executions of SCENARIO.
_PROBE = r"""
import hashlib, json, sys, time
from ftlab.config import Config
from ftlab.explore.execute import execute
from ftlab.scenarios import catalog
from ftlab.sim.strategies import Random
cat = catalog()
print(json.dumps(list(cat)), flush=True)
for line in sys.stdin:
    name, n = line.split()
    sc, n = cat[name], int(n)
    version = "3.14" if not sc.versions or "3.14" in sc.versions else sc.versions[0]
    config = Config(version=version)
    execute(sc, config, Random(%(seed)d).execution(0))      # warm: imports, caches
    digest = hashlib.sha256()
    steps = 0
    start = time.perf_counter()
    for i in range(n):
        r = execute(sc, config, Random(%(seed)d).execution(i))
        steps += r.steps
        digest.update(repr((r.schedule, [(v.kind, v.message) for v in r.violations])).encode())
    elapsed = time.perf_counter() - start
    print(json.dumps([n / elapsed, steps, digest.hexdigest()[:12]]), flush=True)
""" % {"seed": SEED}


def version_of(scenario) -> str:
    return "3.14" if not scenario.versions or "3.14" in scenario.versions else scenario.versions[0]


def _rates(scenario, n: int, checked: bool) -> float:
    from dataclasses import replace

    from ftlab.config import Config
    from ftlab.explore.execute import _execute, execute
    from ftlab.runtime.pystate import Runtime
    from ftlab.sim.strategies import Random

    config = Config(version=version_of(scenario))
    unchecked = replace(config, race_detection=False, **(scenario.config or {}))

    def one(i: int) -> None:
        chooser = Random(SEED).execution(i)
        if checked:
            execute(scenario, config, chooser)
        else:
            _execute(scenario, Runtime(unchecked), chooser)

    one(0)                              # warm: the oracles' imports, caches
    start = time.process_time()         # CPU time: see `against`
    for i in range(n):
        one(i)
    return n / (time.process_time() - start)


def run(quick: bool = False) -> list[Figure]:
    from ftlab.scenarios import catalog

    n = 5 if quick else 30
    rounds = 2 if quick else 3
    figures = []
    for name, sc in catalog().items():
        checked = unchecked = 0.0
        for _ in range(rounds):
            checked = max(checked, _rates(sc, n, True))
            unchecked = max(unchecked, _rates(sc, n, False))
        figures.append(Figure(name=f"rates: {name} ({version_of(sc)})", value=checked,
                              baseline=unchecked, baseline_name="unchecked", unit="exec/s"))
    return figures


def against(argv: list[str]) -> int:
    import argparse
    import shutil
    import statistics
    import tempfile

    from bench_explore import _export, _Probe

    ap = argparse.ArgumentParser(prog="bench_rates.py --against")
    ap.add_argument("--against", required=True, metavar="REV")
    ap.add_argument("-n", type=int, default=40, help="executions per scenario per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("scenarios", nargs="*")
    a = ap.parse_args(argv)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tmp = tempfile.mkdtemp(prefix="bench-rates-")
    try:
        base = os.path.join(tmp, "base")
        os.mkdir(base)
        full = _export(a.against, base)
        print(f"before = {a.against} ({full[:10]}), after = {here}; Random({SEED}), "
              f"executions 0..{a.n - 1}, best of {a.rounds} rounds; load average "
              f"{os.getloadavg()[0]:.2f} at start, {os.cpu_count()} cores", flush=True)
        probes = {"before": _Probe(base, _PROBE, "bench_rates"),
                  "after": _Probe(here, _PROBE, "bench_rates")}
        best: dict[str, dict[str, list]] = {"before": {}, "after": {}}
        try:
            names = [x for x in (a.scenarios or probes["after"].names)
                     if x in probes["before"].names]
            for _ in range(a.rounds):
                for name in names:
                    for label, probe in probes.items():
                        got = probe.rate(name, a.n)
                        old = best[label].get(name)
                        if old is None or got[0] > old[0]:
                            best[label][name] = got
        finally:
            for probe in probes.values():
                probe.close()
        print(f"\n{'scenario':28} {'before/s':>9} {'after/s':>9} {'speed-up':>8} {'steps':>8}")
        ups = []
        same = True
        for name in names:
            b, bsteps, bdig = best["before"][name]
            w, wsteps, wdig = best["after"][name]
            note = "" if (bsteps, bdig) == (wsteps, wdig) else "  RESULTS DIFFER"
            same &= not note
            ups.append(w / b)
            print(f"{name:28} {b:9.1f} {w:9.1f} {w / b:7.2f}x {wsteps // a.n:8d}{note}")
        print(f"\nspeed-up: median {statistics.median(ups):.2f}x, geometric mean "
              f"{statistics.geometric_mean(ups):.2f}x, min {min(ups):.2f}x, max {max(ups):.2f}x; "
              f"results {'identical' if same else 'DIFFER'}; load average "
              f"{os.getloadavg()[0]:.2f} at the end")
        return 0 if same else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    import sys

    if any(arg in ("-h", "--help", "--against") or arg.startswith("--against=")
           for arg in sys.argv[1:]):
        raise SystemExit(against(sys.argv[1:]))
    for f in run(quick="--quick" in sys.argv):
        print(f.row())
