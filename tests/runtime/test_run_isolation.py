"""Issue 13 item 2: what the runtime computes once per process (mimalloc's build constants,
`MiBuild`'s cached properties, the queue block sizes, the observer dispatch) is immutable, so a
run cannot see what an earlier run in the same process left: runs in one process equal the same
runs each in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ftlab.config import Config
from ftlab.explore.execute import execute
from ftlab.scenarios import catalog
from ftlab.sim.strategies import Random

ROOT = Path(__file__).resolve().parents[2]
# a short run and two that allocate through mimalloc (threads' heaps, pages, abandonment)
RUNS = (("lost-update", 0), ("gc-cycle", 1), ("thread-churn", 2))

_ONE = """
import json, sys
from ftlab.config import Config
from ftlab.explore.execute import execute
from ftlab.scenarios import catalog
from ftlab.sim.strategies import Random
name, i = sys.argv[1], int(sys.argv[2])
r = execute(catalog()[name], Config(version="3.14"), Random(3).execution(i))
print(json.dumps([r.schedule, r.steps, [v.kind for v in r.violations],
                  sorted((k, repr(v)) for k, v in r.stats.items())]))
"""


def _summary(name: str, i: int) -> list:
    r = execute(catalog()[name], Config(version="3.14"), Random(3).execution(i))
    return json.loads(json.dumps([r.schedule, r.steps, [v.kind for v in r.violations],
                                  sorted((k, repr(v)) for k, v in r.stats.items())]))


def test_runs_in_one_process_equal_runs_in_fresh_processes() -> None:
    here = [_summary(name, i) for name, i in RUNS]
    again = [_summary(name, i) for name, i in RUNS]      # after every run has been made once
    assert again == here, "a second run in the same process differs from the first"
    for (name, i), mine in zip(RUNS, here):
        out = subprocess.run([sys.executable, "-c", _ONE, name, str(i)], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        assert json.loads(out) == mine, f"{name} execution {i} differs in a fresh process"
