"""The fraction of memory accesses shown with a symbolic name in the shrunk counterexamples
stored in an explore database (issue 16), and each counterexample's timeline length in lines
before and after folding.

    python -m ftlab explore --workers 1 --version 3.14 --budget 200 --db /tmp/all.db
    python -m ftlab.report.naming_survey /tmp/all.db

One line per counterexample: the accesses named symbolically, those named down to a field or an
item (not an offset in an object or a block), and the timeline's lines in full -> folded.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from ftlab.config import Config
from ftlab.explore.execute import run
from ftlab.explore.store import Store
from ftlab.report.names import named_accesses
from ftlab.report.timeline import format_timeline
from ftlab.scenarios import get
from ftlab.sim.strategies import Replay


@dataclass(frozen=True)
class Row:
    """One stored counterexample, measured."""
    id: int
    scenario: str
    mutations: str
    named: int
    fields: int
    total: int
    full_lines: int
    folded_lines: int

    def line(self) -> str:
        frac = self.named / self.total if self.total else 1.0
        return (f"#{self.id:<4} {self.scenario:<24} {self.mutations:<34} named {self.named}/"
                f"{self.total} = {frac:.4f}  by field {self.fields}  "
                f"lines {self.full_lines} -> {self.folded_lines}")


def survey(db: str) -> list[Row]:
    store = Store.open(db, create=False)
    try:
        violations = store.violations()
    finally:
        store.close()
    rows = []
    for v in violations:
        schedule = v["shrunk_schedule"] or v["schedule"]
        if not schedule:
            continue
        config = Config(version=v["version"], mutations=frozenset(json.loads(v["mutations"])))
        r = run(get(v["scenario"]), config, Replay(schedule), trace=True)
        trace = r.trace or []
        n, t = named_accesses(trace)
        f, _ = named_accesses(trace, by_field=True)
        full = format_timeline(trace, r.threads, r.violation, full=True)
        folded = format_timeline(trace, r.threads, r.violation)
        rows.append(Row(v["id"], v["scenario"], ",".join(json.loads(v["mutations"])) or "-",
                        n, f, t, len(full.splitlines()), len(folded.splitlines())))
    return rows


def measure(db: str, verbose: bool = True) -> tuple[int, int]:
    """(named, total) over every stored counterexample; `verbose` prints a line per row."""
    rows = survey(db)
    if verbose:
        for row in rows:
            print(row.line())
    return sum(r.named for r in rows), sum(r.total for r in rows)


if __name__ == "__main__":
    rows = survey(sys.argv[1])
    for row in rows:
        print(row.line())
    n, f, t = (sum(r.named for r in rows), sum(r.fields for r in rows),
               sum(r.total for r in rows))
    print(f"named accesses: {n}/{t} = {n / max(t, 1):.4f}; "
          f"named by field or item: {f}/{t} = {f / max(t, 1):.4f}")
