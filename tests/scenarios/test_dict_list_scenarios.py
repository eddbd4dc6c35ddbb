"""The dict and list scenarios of issue 10 (ftlab.scenarios.dict, list-append-index) and the type
cache scenario that needs the type dicts (type-cache-shadow): each clean
unmutated (a few hundred schedules here; 10,000 Random+PCT and an exhaustive DFS at its bound in the slow
run), each mutation found within 1,000 schedules of the default portfolio, with the kind the
scenario names, and replayed exactly."""

from __future__ import annotations

import pytest

from ftlab import Config, run
from ftlab.explore.campaign import first_detection
from ftlab.explore.execute import execute
from ftlab.scenarios import catalog, get
from ftlab.sim import DFS, PCT, Random, Replay

NAMES = ("dict-setdefault", "dict-resize-read", "list-append-index", "type-cache-shadow")
ROWS = [(name, m) for name in NAMES for m in get(name).mutations]


def _clean(name: str, strategy, budget: int) -> int:
    sc = get(name)
    config = Config(**sc.config)
    n = 0
    while n < budget and (chooser := strategy.execution(n)) is not None:
        r = execute(sc, config, chooser)
        assert r.ok, f"{name} {strategy.describe()} execution {n}: {r.violation} [{r.schedule}]"
        n += 1
    return n


def test_the_scenarios_and_their_mutations_are_in_the_catalog():
    c = catalog()
    assert all(name in c for name in NAMES)
    assert set(c["dict-setdefault"].mutations) == {"borrowed-setdefault"}
    assert set(c["dict-resize-read"].mutations) == {"dict-keys-freed-at-once",
                                                   "dict-lookup-no-keys-recheck"}
    assert set(c["list-append-index"].mutations) == {"list-items-freed-at-once",
                                                    "no-free-delayed"}
    assert set(c["type-cache-shadow"].mutations) == {"type-cache-version-first"}


@pytest.mark.parametrize("name,mutation", ROWS)
def test_each_mutation_is_found_within_1000_schedules_and_replays(name, mutation):
    sc = get(name)
    r, n = first_detection(sc, mutation, 1000)
    assert r is not None, f"{mutation} not found on {name} in 1000 schedules"
    assert r.violation.kind in sc.mutations[mutation], str(r.violation)
    again = run(sc, r.config, Replay(r.schedule))
    v, w = again.violation, r.violation
    assert (w.kind, w.message, w.step, w.thread) == (v.kind, v.message, v.step, v.thread)


def test_dict_lookup_no_keys_recheck_returns_another_object_at_the_old_values_address():
    r, _ = first_detection(get("dict-resize-read"), "dict-lookup-no-keys-recheck", 1000)
    assert r.violation.kind == "dict-lookup"
    assert "after the key's value there was freed" in r.violation.message


def test_borrowed_setdefault_uses_the_freed_value():
    r, _ = first_detection(get("dict-setdefault"), "borrowed-setdefault", 1000)
    assert "freed Value object" in r.violation.message


@pytest.mark.parametrize("name", NAMES)
def test_clean_under_random_and_pct(name):
    sc = get(name)
    for strategy in (Random(7), PCT(7, 2, sc.pct_steps)):
        assert _clean(name, strategy, 60) == 60


def test_dict_resize_read_processes_the_queue_while_the_reader_runs():
    """The old keys are queued in every run; some schedules free them during the run (the
    reader having passed its quiescent state when a queue is processed), some do not."""
    sc = get("dict-resize-read")
    freed = [run(sc, Config(), Random(s)).stats["delayed_freed"] for s in range(30)]
    assert 1 in freed and 0 in freed


@pytest.mark.slow
@pytest.mark.timeout(3600)                  # list-append-index: ~12 ms a run
@pytest.mark.parametrize("name", NAMES)
def test_clean_under_10000_random_and_pct_schedules_and_an_exhaustive_dfs(name):
    """The DFS at the scenario's own bound (2; type-cache-shadow 1: its DFS(2) did not end
    within 6,000 schedules), exhausted."""
    sc = get(name)
    for strategy in (Random(101), PCT(101, 1, sc.pct_steps), PCT(102, 2, sc.pct_steps),
                     PCT(103, 3, sc.pct_steps)):
        assert _clean(name, strategy, 2500) == 2500
    n = _clean(name, DFS(preemption_bound=sc.dfs_bound), 200_000)
    assert n < 200_000, f"DFS({sc.dfs_bound}) is exhausted"


def test_the_dict_lookup_oracle_compares_objects_not_addresses():
    from ftlab.check.dictlookup import DictLookupOracle
    from ftlab.sim.violation import ViolationError

    class T:
        name = "reader"

    o = DictLookupOracle()
    o.object_created(None, 100, 32, "Value", False)
    o.dict_value_set(None, 1, 7, 100)
    o.dict_lookup_started(T, 1, 7)
    o.object_created(None, 200, 32, "Value", False)
    o.dict_value_set(None, 1, 7, 200)       # replaced during the lookup: both admissible
    o.dict_lookup_finished(T, 1, 7, 100)
    o.dict_lookup_started(T, 1, 7)
    o.dict_lookup_finished(T, 1, 7, 200)
    assert o.lookups_checked == 2
    o.dict_lookup_started(T, 1, 7)
    o.object_created(None, 200, 32, "Value", False)     # 200 freed, its address reused
    with pytest.raises(ViolationError) as e:
        o.dict_lookup_finished(T, 1, 7, 200)
    assert e.value.kind == "dict-lookup" and "another object" in str(e.value)
    o.dict_lookup_started(T, 1, 7)
    with pytest.raises(ViolationError) as e:
        o.dict_lookup_finished(T, 1, 7, 0)
    assert "not found" in str(e.value)
