"""Golden text timelines (issue 16): one shrunk counterexample per mechanism family, in words
and folded, as `ftlab replay` prints it. Each file was read by eye before it was accepted; a
change to naming, grouping or folding shows here as a diff to read again.

    FTLAB_REGEN_GOLDEN=1 python -m pytest tests/report/test_timeline_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ftlab import Config, run
from ftlab.report.timeline import format_timeline
from ftlab.scenarios import get
from ftlab.sim import Replay

GOLDEN = Path(__file__).parent / "golden"
CASES = {
    # reference counting / biased RC: a try-incref that resurrects a freed object
    "refcount-tryincref-zero": ("tryincref-zero", "tryincref-accepts-zero", "S1:ab4a6.rko5zv"),
    # QSBR-delayed reuse: a page reused while a reader may still hold a block of it
    "qsbr-gc-reader-page": ("gc-reader-page", "no-page-delay", "S1:a27b3a6.1u3ul29"),
    # mimalloc: an abandoned segment reclaimed, its page reused, before the readers' QSBR goal
    "mimalloc-abandoned-reclaim": ("abandoned-reclaim-reader", "reclaim-ignores-goal",
                                   "S1:a16b7a63.ng6lwb"),
}


def _text(case: tuple[str, str, str]) -> str:
    name, mutation, schedule = case
    r = run(get(name), Config(mutations=frozenset([mutation])), Replay(schedule), trace=True)
    return format_timeline(r.trace, r.threads, r.violation) + "\n"


@pytest.mark.parametrize("key", sorted(CASES))
def test_timeline_matches_its_golden_file(key):
    path = GOLDEN / f"{key}.txt"
    text = _text(CASES[key])
    if os.environ.get("FTLAB_REGEN_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} is missing: FTLAB_REGEN_GOLDEN=1 writes it (read it first)"
    assert text == path.read_text(), f"the timeline of {key} changed: diff it against {path}"
