"""The tryincref-owner scenario (ftlab.scenarios.tryincref_owner, issue 12 item 2): the owner's
fast path of try-incref (`_Py_TryIncrefFast`, the local count) raced with the free of its
merged object by another thread. Clean unmutated; `merge-keeps-tid` is found; the refcount
oracle catches a non-owner on the local path."""

from __future__ import annotations

import pytest

from ftlab import Config
from ftlab.explore.campaign import first_detection
from ftlab.explore.execute import execute
from ftlab.scenarios import get
from ftlab.sim import DFS, PCT, Random

NAME = "tryincref-owner"


def _clean(strategy, budget: int, config: Config) -> int:
    sc = get(NAME)
    n = 0
    while n < budget and (chooser := strategy.execution(n)) is not None:
        r = execute(sc, config, chooser)
        assert r.ok, f"{strategy.describe()} execution {n}: {r.violation} [{r.schedule}]"
        n += 1
    return n


@pytest.mark.parametrize("version", ["3.13.0", "3.14"])
def test_clean_under_a_few_random_and_pct_schedules(version):
    config = Config(version=version)
    _clean(Random(4), 10, config)
    _clean(PCT(4, 2, get(NAME).pct_steps), 10, config)


def test_the_owner_takes_the_local_fast_path(monkeypatch):
    from ftlab.runtime import object as obj

    taken: list[str] = []
    real = obj.try_incref_fast

    def spy(t, op):
        ok = real(t, op)
        taken.append(f"{t.name}:{ok}")
        return ok

    monkeypatch.setattr(obj, "try_incref_fast", spy)
    r = execute(get(NAME), Config(), Random(1).execution(0))
    assert r.ok, r.violation
    assert "owner:True" in taken and "owner:False" in taken, taken


def test_a_merge_that_keeps_ob_tid_is_found():
    sc = get(NAME)
    r, n = first_detection(sc, "merge-keeps-tid")
    assert r is not None, f"merge-keeps-tid not found in {n} schedules"
    assert r.violation.kind in sc.mutations["merge-keeps-tid"], r.violation
    assert n <= 30, f"merge-keeps-tid needed {n} schedules"


def test_the_refcount_oracle_catches_a_non_owner_on_the_local_path(monkeypatch):
    """A fast path that accepts any owned object (not only the caller's) lets the other thread
    write ob_ref_local: `refcount`, although every count still adds up."""
    from ftlab.runtime import object as obj
    from ftlab.sim.memory import Tag

    def any_owner(t, op):
        mem = t.mem
        if obj._peek(mem, op + obj.OB_TID, 8) == 0:
            return False
        mem.store_u32(op + obj.OB_REF_LOCAL, mem.load_u32(op + obj.OB_REF_LOCAL) + 1,
                      Tag.HEADER)
        obj.inc_ref_total(t)
        t.rt.observer.ref_added(t, op, "try-incref (owner)")
        return True

    monkeypatch.setattr(obj, "try_incref_fast", any_owner)
    r = execute(get(NAME), Config(), Random(0).execution(0))
    assert not r.ok and r.violation.kind == "refcount", r.violation
    assert "writes ob_ref_local" in str(r.violation), r.violation


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("version", ["3.14"])
def test_clean_under_10000_random_and_pct_schedules_and_dfs(version):
    sc = get(NAME)
    config = Config(version=version)
    for strategy in (Random(101), PCT(101, 1, sc.pct_steps), PCT(102, 2, sc.pct_steps),
                     PCT(103, 3, sc.pct_steps)):
        assert _clean(strategy, 2500, config) == 2500
    _clean(DFS(preemption_bound=sc.dfs_bound), 20000, config)
