"""The refleak-hunt workload (ftlab.workloads.refleak_hunt): regrtest -R 3:3 deltas are 0
after the first round with every fix, move under each block-counting / ref-total mutation."""

from __future__ import annotations

import pytest

from ftlab import Config
from ftlab.workloads import catalog
from ftlab.workloads.refleak_hunt import WARMUPS, hunt, leaked, run


def test_registered():
    assert "refleak-hunt" in catalog()


def test_every_delta_is_zero_after_the_first_round_with_every_fix():
    deltas = hunt(Config(), 2)
    # round 1 fills the cache (one block per worker); then nothing moves
    assert deltas == [(2, 0)] + [(0, 0)] * 5


@pytest.mark.parametrize("mutation, blocks, refs", [
    ("blockcount-skips-abandoned", [0, 2, -2, 2, -2, 2], [0] * 6),
    ("blockcount-no-collect", [6, 2, -2, 2, -2, 2], [0] * 6),
    ("blockcount-no-stw", [1, 1, -1, 0, 1, -1], [0] * 6),
    ("reftotal-untracked-brc", [2, 0, 0, 0, 0, 0], [-2] * 6),
])
def test_each_mutation_moves_the_deltas(mutation, blocks, refs):
    deltas = hunt(Config(mutations=frozenset({mutation})), 2)
    assert [b for b, _ in deltas] == blocks
    assert [r for _, r in deltas] == refs


def test_regrtest_rule_needs_every_post_warmup_delta_positive():
    assert leaked([0] * WARMUPS + [1, 2, 1])
    assert not leaked([5] * WARMUPS + [1, 0, 1])
    assert not leaked([0] * WARMUPS + [-1, 3, 3])


def test_run_prints_the_rounds_and_the_verdicts():
    out = run(Config(), 2)
    assert out["round 1 (warmup): blocks delta"] == 2
    assert out["round 6 (run): refs delta"] == 0
    assert out["regrtest verdict, blocks (1 = leak reported)"] == 0
