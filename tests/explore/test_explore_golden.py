"""Issue 13's invariant: the exploration table on a fixed seed (verdicts, executions to first
detection, failing and shrunk schedules, a digest of every schedule and step count) is the one
stored at the base commit (`golden_explore.py`); a speed optimisation must not change it."""

import json

from tests.explore.golden_explore import GOLDEN, table


def test_table_unchanged_by_optimisations():
    expected = json.loads(GOLDEN.read_text())
    got = json.loads(json.dumps(table(), sort_keys=True))
    for row in expected:
        assert got[row] == expected[row], f"row {row} changed: {got[row]} != {expected[row]}"
    assert set(got) == set(expected), "the golden rows differ from golden_explore.ROWS"
