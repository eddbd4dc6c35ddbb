"""The c11 rows (ftlab/sim/c11.py): weakened seqlock fences are found under C11 atomics and
not under sequential consistency, where the unmutated program stays clean."""

from __future__ import annotations

import pytest

from ftlab.config import Config, ConfigError
from ftlab.explore.execute import execute
from ftlab.scenarios import get
from ftlab.sim.strategies import Random


def _first_violation(scenario: str, mutation: str | None, runs: int) -> int | None:
    s = get(scenario)
    config = Config(mutations=frozenset([mutation] if mutation else []))
    strategy = Random(2)
    for i in range(runs):
        r = execute(s, config, strategy.execution(i))
        if r.violations:
            return i + 1
    return None


@pytest.mark.parametrize("mutation", ["seqlock-end-read-no-fence", "seqlock-lock-write-no-fence"])
def test_weakened_fence_found_in_c11_not_in_sc(mutation):
    # found at random execution 22 (seed 2) since PyMutex_Lock's retries read the newest store
    assert _first_violation("type-cache-c11", mutation, 60) is not None
    assert _first_violation("type-cache-consistency", mutation, 60) is None


def test_c11_row_is_clean_unmutated():
    assert _first_violation("type-cache-c11", None, 20) is None


def test_bad_memory_model_is_a_config_error():
    with pytest.raises(ConfigError, match="memory model"):
        Config(memory_model="tso")
