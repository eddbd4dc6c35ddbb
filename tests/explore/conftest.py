"""Scenarios made for campaign tests: ones that crash, miss or violate on purpose."""

from __future__ import annotations

import pytest

from ftlab.scenarios import Scenario
from ftlab.sim.violation import ViolationError


async def _steps(t, n: int = 3) -> None:
    for _ in range(n):
        await t.yield_now()


async def _crasher(t) -> None:
    await t.yield_now()
    if t.rt.mutated("unsync-rmw"):
        raise RuntimeError("a bug in the model")


async def _checker(t) -> None:
    await t.yield_now()
    if t.rt.mutated("unsync-rmw"):
        raise ViolationError("check", "found, but not the kind the mutation is exposed by")


async def _always_fails(t) -> None:
    await t.yield_now()
    raise ViolationError("check", "broken even without a mutation")


async def _worker(t) -> None:
    await _steps(t, 2)


def _scenario(name: str, fn, mutations=None, dfs_bound=None) -> Scenario:
    return Scenario(name=name, description=name, threads=(("a", fn), ("b", _worker)),
                    mutations=mutations if mutations is not None else {"unsync-rmw": ("data-race",)},
                    dfs=dfs_bound is not None, dfs_bound=dfs_bound, pct_steps=6)


@pytest.fixture
def odd_scenarios() -> dict[str, Scenario]:
    return {
        "crasher": _scenario("crasher", _crasher),
        "wrong-kind": _scenario("wrong-kind", _checker),
        "never-fails": _scenario("never-fails", _worker),
        "always-fails": _scenario("always-fails", _always_fails, mutations={}),
        "small-space": _scenario("small-space", _worker, mutations={}, dfs_bound=1),
    }
