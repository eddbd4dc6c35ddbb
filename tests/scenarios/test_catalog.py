"""The catalog and the mutation table agree: no mutation that no scenario exposes."""

from ftlab.config import MUTATIONS
from ftlab.scenarios import catalog


def test_every_mutation_is_exposed_by_some_scenario():
    exposed = {m for s in catalog().values() for m in s.mutations}
    assert sorted(MUTATIONS.keys() - exposed) == []


def test_every_scenario_mutation_is_a_known_mutation_with_expected_kinds():
    for s in catalog().values():
        for mutation, kinds in s.mutations.items():
            assert mutation in MUTATIONS, (s.name, mutation)
            assert kinds, (s.name, mutation)
