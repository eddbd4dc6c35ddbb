"""The scenario catalog: small programs, each exercising one mechanism.

A `Scenario` names its threads (coroutine functions taking a thread state), an optional
`setup` that prepares shared state before any thread starts, an optional `check` that runs
after every thread has finished, and the mutations it must expose. Unmutated, a scenario must
be clean under every schedule; with each of its mutations, the explorer must find a violation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Coroutine

ThreadFn = Callable[..., Coroutine[Any, Any, Any]]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    threads: tuple[tuple[str, ThreadFn], ...]
    setup: Callable[[Any], Any] | None = None
    check: Callable[[Any], None] | None = None
    # mutation -> the violation kinds that count as exposing it
    mutations: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # whether the default portfolio has a DFS (for spaces small enough to matter), and its
    # preemption bound (None: no bound, every schedule)
    dfs: bool = True
    dfs_bound: int | None = 2
    # whether the default portfolio has DPOR (ftlab/sim/dpor.py): for scenarios whose every
    # Mazurkiewicz trace fits a row's share of the default budget, so the row is verified
    dpor: bool = False
    # estimated decisions per run, for PCT's change points
    pct_steps: int = 50
    # Config fields the scenario needs, applied over the run's config (debug_allocator=True)
    config: dict[str, Any] = field(default_factory=dict)
    # The version policies a campaign runs its rows under (empty: every one in VERSIONS): a
    # scenario about one policy's fix is not a row of the policies that lack the fix.
    versions: tuple[str, ...] = ()
    # False: bare threads with no thread state (the engine scenarios, which exercise the
    # machine alone); True: each thread is a Python thread attached to the interpreter.
    interpreter: bool = True
    # A gap the faithful model inherits from CPython (issue 12 item 4): the unmutated row must
    # find one of these kinds ("known gap (found)"), never be clean.
    known_gap: tuple[str, ...] = ()
    # issue 11: the names of the threads started as daemon threads (`Runtime.finalize_ex` does
    # not wait for them). A scenario whose thread runs `finalize_ex` finalizes under the
    # scheduler; otherwise the run finalizes after every thread has exited (`Runtime.finalize`).
    daemon: tuple[str, ...] = ()


class UnknownName(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def catalog() -> dict[str, Scenario]:
    from ftlab.scenarios import engine, list_resize, mimalloc_stress, refcount
    from ftlab.scenarios import gc  # the free-threaded GC
    from ftlab.scenarios import critical_section, type_cache     # types
    from ftlab.scenarios import blockcount  # block counting for leak hunts
    from ftlab.scenarios import lifecycle  # thread lifecycle, batched waits
    from ftlab.scenarios import pagelist  # QSBR page lists (gh-145615)
    from ftlab.scenarios import abandoned  # checker coverage: known gaps (issue 12 item 4)
    from ftlab.scenarios import xthread_free  # checker coverage: xthread_free (issue 12 item 2)
    from ftlab.scenarios import dict as dict_scenarios     # dicts with lock-free reads
    from ftlab.scenarios import delayed  # checker coverage: delayed-free processing (issue 12)
    from ftlab.scenarios import reclaim  # checker coverage: third-thread reclaim (issue 12)
    from ftlab.scenarios import tryincref_owner  # checker coverage: owner's try-incref (12)

    scenarios: dict[str, Scenario] = {}
    for module in (engine, refcount, mimalloc_stress, list_resize, gc,
                   critical_section, type_cache, blockcount, lifecycle,
                   pagelist, abandoned, xthread_free, dict_scenarios,
                   delayed, reclaim, tryincref_owner):
        for s in module.SCENARIOS:
            scenarios[s.name] = s
    return scenarios


def get(name: str) -> Scenario:
    c = catalog()
    if name not in c:
        raise UnknownName(f"unknown scenario {name!r} (known: {', '.join(sorted(c))})")
    return c[name]


# c11 memory model (ftlab/sim/c11.py, issue 14): a scenario's own model is the one its config
# sets (its rows need C11 atomics to expose their mutations), else SC. Explored under the other
# model (`ftlab explore --memory-model`), the row's model replaces the scenario's own: the same
# program, threads and checks, only the atomics' semantics differ.

def own_memory_model(scenario) -> str:
    """The memory model `scenario` runs under when nothing else is asked: "sc" or "c11"."""
    return getattr(scenario, "config", {}).get("memory_model", "sc")


def in_memory_model(scenario, model: str | None):
    """`scenario` run under `model` (None or its own model: the scenario itself)."""
    if not model or model == own_memory_model(scenario):
        return scenario
    from dataclasses import replace

    return replace(scenario, config={**scenario.config, "memory_model": model})
