"""Issue 13: the exploration table on a fixed seed, stored at a reference commit (now main
e97a6c1), so that every speed optimisation is checked against it: verdicts, schedules to first
detection, the failing schedule and the shrunk counterexample must not change.

Run `python -m tests.explore.golden_explore` at a commit whose results are the reference to
rewrite `golden/explore_table.json`; `test_explore_golden.py` recomputes it and compares.
"""

from __future__ import annotations

import hashlib
import json
import pathlib

from ftlab.config import Config
from ftlab.explore.execute import run
from ftlab.explore.shrink import shrink
from ftlab.scenarios import catalog
from ftlab.sim.strategies import PCT, Random

GOLDEN = pathlib.Path(__file__).parent / "golden" / "explore_table.json"

# (scenario, mutation or None, executions per strategy): cheap rows, covering the engine, the
# refcount paths, the GC and the type cache, clean and mutated.
ROWS = (
    ("lost-update", None, 40), ("lost-update", "unsync-rmw", 40),
    ("message-passing", "relaxed-message", 40), ("lock-order", "lock-order-inversion", 40),
    ("tryincref-zero", "tryincref-accepts-zero", 30), ("merge-vs-reader", None, 6),
    ("gc-cycle", None, 4), ("gc-cycle", "gc-no-merge", 20),
    ("type-cache-consistency", "type-cache-no-seqlock", 20),
)


def row_table(scenario: str, mutation: str | None, n: int) -> dict:
    sc = catalog()[scenario]
    config = Config(mutations=frozenset([mutation] if mutation else []))
    out: dict = {}
    for label, strategy in (("random", Random(7)), ("pct2", PCT(7, 2, sc.pct_steps))):
        digest = hashlib.sha256()
        first = None
        for i in range(n):
            r = run(sc, config, strategy, execution=i)
            v = r.violation
            digest.update(f"{r.schedule}|{r.steps}|{v.kind if v else ''}\n".encode())
            if v is not None and first is None:
                first = {"execution": i, "kind": v.kind, "step": v.step, "schedule": r.schedule}
                s = shrink(sc, config, r.schedule, v.kind, max_runs=200)
                first["shrunk"] = [s.schedule, s.preemptions, s.steps, s.runs]
        out[label] = {"first": first, "digest": digest.hexdigest()}
    return out


def table() -> dict:
    return {f"{s}/{m or 'none'}": row_table(s, m, n) for s, m, n in ROWS}


if __name__ == "__main__":
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(table(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
