"""The workload catalog: longer programs that measure what the mechanisms cost (DESIGN §1).

A `Workload` has a name, a one-line description and `run(config, threads)`, which runs the
program on a fresh runtime and returns named numbers (pages held back by QSBR, merge-queue
lengths, peak memory ...). `ftlab simulate WORKLOAD` runs one and prints (or plots) them.
Modules add their workloads to `_MODULES` below, the way scenarios are registered.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

# Modules (under ftlab.workloads) that define WORKLOADS, a tuple of Workload.
_MODULES: tuple[str, ...] = ("free_delayed",
                             "gc_trigger_lag",  # the free-threaded GC
                             "refleak_hunt")  # block counting and the ref total


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    run: Callable[[Any, int], dict[str, float]]
    # `plot(config, threads)`: a PNG of how the numbers evolve (default: a bar chart of `run`)
    plot: Callable[[Any, int], bytes] | None = None
    default_threads: int = 4


class UnknownWorkload(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def catalog() -> dict[str, Workload]:
    workloads: dict[str, Workload] = {}
    for name in _MODULES:
        module = importlib.import_module(f"ftlab.workloads.{name}")
        for w in module.WORKLOADS:
            workloads[w.name] = w
    return workloads


def get(name: str) -> Workload:
    c = catalog()
    if name not in c:
        known = ", ".join(sorted(c)) or "none yet"
        raise UnknownWorkload(f"unknown workload {name!r} (known: {known})")
    return c[name]
