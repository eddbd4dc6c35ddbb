"""The fraction of memory accesses shown with a symbolic name in the shrunk counterexamples
stored in an explore database (issue 16), and each counterexample's timeline length in lines
before and after folding.

    python -m ftlab explore --workers 1 --db /tmp/all.db
    python -m ftlab.report.naming_survey /tmp/all.db
"""

from __future__ import annotations

import json
import sys

from ftlab.config import Config
from ftlab.explore.execute import run
from ftlab.explore.store import Store
from ftlab.report.names import named_accesses
from ftlab.report.timeline import format_timeline
from ftlab.scenarios import get
from ftlab.sim.strategies import Replay


def measure(db: str, verbose: bool = True) -> tuple[int, int]:
    store = Store.open(db, create=False)
    try:
        violations = store.violations()
    finally:
        store.close()
    named = total = 0
    for v in violations:
        schedule = v["shrunk_schedule"] or v["schedule"]
        if not schedule:
            continue
        config = Config(version=v["version"], mutations=frozenset(json.loads(v["mutations"])))
        r = run(get(v["scenario"]), config, Replay(schedule), trace=True)
        n, t = named_accesses(r.trace or [])
        named += n
        total += t
        if verbose:
            full = format_timeline(r.trace, r.threads, r.violation, full=True)
            folded = format_timeline(r.trace, r.threads, r.violation)
            muts = ",".join(json.loads(v["mutations"])) or "-"
            print(f"#{v['id']:<4} {v['scenario']:<24} {muts:<34} named {n}/{t}  "
                  f"lines {len(full.splitlines())} -> {len(folded.splitlines())}")
    return named, total


if __name__ == "__main__":
    n, t = measure(sys.argv[1])
    print(f"named accesses: {n}/{t} = {n / max(t, 1):.4f}")
