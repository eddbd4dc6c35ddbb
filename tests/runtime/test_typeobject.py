"""Types and the method cache (ftlab.runtime.typeobject), the type-cache oracle
(ftlab.check.typecache) and the scenarios type-cache-consistency and type-bases-change."""

from __future__ import annotations

import pytest

from ftlab import Config, run
from ftlab.check.typecache import TypeCacheOracle
from ftlab.explore.campaign import first_detection
from ftlab.explore.execute import execute
from ftlab.runtime import typeobject as ty
from ftlab.runtime.object import refcnt
from ftlab.scenarios import Scenario, get
from ftlab.scenarios.type_cache import _setup
from ftlab.sim import DFS, PCT, Random, Replay
from ftlab.sim.violation import ViolationError


def _single(fn) -> Scenario:
    return Scenario(name="t", description="", threads=(("main", fn),), setup=_setup)


def _run(fn):
    r = run(_single(fn), Config(), Random(0))
    assert r.ok, r.violation
    return r


def test_a_miss_assigns_a_version_and_publishes_the_entry_a_hit_returns_a_new_reference():
    seen = {}

    async def body(t):
        s = t.shared
        x = s.names["x"]
        a = await ty.type_new(t, "A", [])
        value = await t.new_object(ty_value := __import__("ftlab.runtime.object",
                                                          fromlist=["PyType"]).PyType("V"))
        await ty.type_setattro(t, a, x, value)          # the type owns that reference now
        assert t.mem.peek(a + ty.TP_VERSION_TAG, 4) == 0
        v1 = await ty.lookup_ref(t, a, x)               # miss
        version = t.mem.peek(a + ty.TP_VERSION_TAG, 4)
        entry = ty.entry_addr(t.rt, ty.mcache_hash(version, x))
        seen["entry"] = (t.mem.peek(entry + ty.ENTRY_VERSION, 4),
                         t.mem.peek(entry + ty.ENTRY_NAME), t.mem.peek(entry + ty.ENTRY_VALUE))
        v2 = await ty.lookup_ref(t, a, x)               # hit
        seen["refs"] = refcnt(t.mem, value)
        seen["hits"] = t.rt.stats["type_cache_hits"]
        seen["version"] = version
        seen["x"], seen["value"] = x, value
        await t.decref(v1)
        await t.decref(v2)
        await ty.type_setattro(t, a, x, s.values["A.x"])    # invalidates; drops `value`
        seen["after"] = t.mem.peek(a + ty.TP_VERSION_TAG, 4)
        await ty.type_clear(t, a)

    _run(body)
    assert seen["version"] == ty.TYPE_BASE_VERSION_TAG
    assert seen["entry"] == (seen["version"], seen["x"], seen["value"])
    assert seen["refs"] == 3 and seen["hits"] == 1
    assert seen["after"] == 0


def test_get_mro_and_get_bases_return_new_references():
    seen = {}

    async def body(t):
        p = await ty.type_new(t, "P", [])
        c = await ty.type_new(t, "C", [p])
        mro = await ty.get_mro(t, c)
        bases = await ty.get_bases(t, c)
        seen["mro"] = [ty.type_name(t.rt, x) for x in ty._tuple_items(t.mem, mro)]
        seen["refs"] = (refcnt(t.mem, mro), refcnt(t.mem, bases))
        await t.decref(mro)
        await t.decref(bases)
        await ty.type_clear(t, c)
        await ty.type_clear(t, p)

    _run(body)
    assert seen["mro"] == ["C", "P"]
    assert seen["refs"] == (2, 2)


def test_the_type_cache_oracle_fires_on_a_value_the_attribute_never_held():
    o = TypeCacheOracle()

    class T:
        name = "reader"

    o.type_attr_set(None, 1, 10, 100)
    o.type_lookup_started(T, 1, 10)
    o.type_attr_set(None, 1, 10, 101)       # changed during the lookup: both admissible
    o.type_lookup_finished(T, 1, 10, 100)
    o.type_lookup_started(T, 1, 10)
    o.type_lookup_finished(T, 1, 10, 101)
    o.type_lookup_started(T, 1, 10)
    with pytest.raises(ViolationError) as e:
        o.type_lookup_finished(T, 1, 10, 100)   # changed before the lookup started
    assert e.value.kind == "type-cache"
    assert "stale value" in str(e.value) and "torn" not in str(e.value)


def test_the_type_cache_oracle_says_torn_for_another_attributes_value_and_names_the_rest():
    o = TypeCacheOracle()

    class T:
        name = "reader"

    o.type_attr_set(None, 1, 10, 100)
    o.type_attr_set(None, 2, 20, 200)
    for got, words in ((200, "value of attribute 0x14 of type 0x2: a torn cache entry"),
                       (0, "said not found"), (999, "no type attribute was ever assigned")):
        o.type_lookup_started(T, 1, 10)
        with pytest.raises(ViolationError) as e:
            o.type_lookup_finished(T, 1, 10, got)
        assert words in str(e.value), str(e.value)


def test_the_type_cache_oracle_follows_the_mro():
    o = TypeCacheOracle()

    class T:
        name = "reader"

    o.type_attr_set(None, 1, 10, 100)
    o.type_attr_set(None, 2, 10, 200)
    o.type_mro_set(None, 3, [3, 1])
    o.type_lookup_started(T, 3, 10)
    o.type_mro_set(None, 3, [3, 2])
    o.type_lookup_finished(T, 3, 10, 200)
    assert o.lookups_checked == 1


@pytest.mark.parametrize("name,stat", [("type-cache-consistency", "type_cache_hits"),
                                       ("type-bases-change", "type_cache_misses")])
def test_scenario_clean_under_random_pct_and_dfs_1(name, stat):
    sc = get(name)
    looked = 0
    for strategy, budget in ((Random(1), 60), (PCT(1, 2, sc.pct_steps), 60),
                             (DFS(preemption_bound=1), 150)):
        n = 0
        while n < budget and (chooser := strategy.execution(n)) is not None:
            r = execute(sc, Config(), chooser)
            assert r.ok, f"{strategy.describe()} {n}: {r.violation} [{r.schedule}]"
            looked += r.stats.get(stat, 0)
            n += 1
    assert looked > 0, f"no run counted {stat}"


@pytest.mark.parametrize("name,mutation,kind", [
    ("type-cache-consistency", "type-cache-no-seqlock", ("type-cache",)),
    ("type-bases-change", "borrowed-mro", ("use-after-free", "data-race")),
])
def test_mutation_found_and_replayed(name, mutation, kind):
    r, n = first_detection(get(name), mutation, 1000, 0)
    assert r is not None, f"{mutation} not found in 1000 schedules"
    assert r.violation.kind in kind, str(r.violation)
    again = run(get(name), r.config, Replay(r.schedule))
    assert (again.violation.kind, again.violation.step) == (r.violation.kind, r.violation.step)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("name", ["type-cache-consistency", "type-bases-change"])
def test_clean_under_10000_random_and_pct_schedules_and_an_exhaustive_dfs_2(name):
    sc = get(name)
    config = Config(**sc.config)
    for strategy, budget in ((Random(101), 2500), (PCT(101, 1, sc.pct_steps), 2500),
                             (PCT(102, 2, sc.pct_steps), 2500), (PCT(103, 3, sc.pct_steps), 2500),
                             (DFS(preemption_bound=2), 200_000)):
        n = 0
        while n < budget and (chooser := strategy.execution(n)) is not None:
            r = execute(sc, config, chooser)
            assert r.ok, f"{name} {strategy.describe()} execution {n}: {r.violation} [{r.schedule}]"
            n += 1
        assert n < 200_000, "DFS(2) is exhausted"
