"""How late a threshold-triggered collection starts: the cost of buffered allocation counts
(gh-112529, PR #114880; `ftlab.runtime.gc`).

`gc-trigger-lag`: N threads each allocate small GC objects in a loop and keep them (a growing
data structure), passing the eval loop's periodic check every CHECK_EVERY allocations. Each
thread buffers its count and adds it to the interpreter's `young.count` 512 at a time; the
flush that takes the count past the threshold (2000) sets GC_SCHEDULED on that thread, which
runs the collection at its next periodic check; the collection then waits for every other
thread to stop at its own periodic check. Meanwhile everybody keeps allocating.

The lag is the number of GC objects allocated net beyond the threshold when the collection
actually starts (the world stopped, the `gc_collection_started` event). The buffers alone
allow up to 511 per thread to be invisible to the interpreter's count, and the count moves in
steps of 512, so the bound to compare with is about 511 x N (plus the allocations made while
the stop request waits for the periodic checks). Runs are unchecked and deterministic: one
Random schedule per seed, SEEDS seeds, mean and maximum reported.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ftlab.config import Config
from ftlab.runtime.listobject import LIST
from ftlab.runtime.observer import Observer
from ftlab.runtime.pystate import Runtime
from ftlab.sim.strategies import Random
from ftlab.sim.violation import ViolationError
from ftlab.workloads import Workload

CHECK_EVERY = 8                 # allocations between two periodic checks
SEEDS = 5
THRESHOLD = 2000                # _PyGC_InitState
MAX_PER_THREAD = 4000           # a safety cap: no thread allocates more than this


class _Lag(Observer):
    """Counts GC objects net and records the count when the first collection starts."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.net = 0
        self.at_start: int | None = None
        self.young_count_at_start = 0
        self.buffered_at_start = 0

    def gc_object_allocated(self, t, op) -> None:
        self.net += 1

    def gc_object_freed(self, t, op) -> None:
        self.net -= 1

    def gc_collection_started(self, t) -> None:
        if self.at_start is None:
            self.at_start = self.net
            self.young_count_at_start = self.rt.gc.peek_count()
            self.buffered_at_start = sum(p.gc.alloc_count for p in self.rt.tstates)


async def _allocator(t, lag: _Lag) -> None:
    kept = 0
    while lag.at_start is None and kept < MAX_PER_THREAD:
        await t.new_object(LIST)        # kept alive: a growing structure (never freed here)
        kept += 1
        if kept % CHECK_EVERY == 0:
            await t.periodic_check()
    await t.periodic_check()


def measure(config: Config, threads: int, seed: int) -> dict[str, int]:
    """One run: the net GC allocations past the threshold when the first collection starts."""
    config = replace(config, checked=False, race_detection=False, trace=False,
                     gc_threshold=THRESHOLD, gc_local_threshold=512,
                     max_steps=50 * MAX_PER_THREAD * threads + 100_000)
    rt = Runtime(config)
    lag = _Lag(rt)
    rt.add_observer(lag)
    for i in range(threads):
        rt.start_thread(_allocator, lag, name=f"alloc{i}")
    m = rt.machine
    m.run(Random(seed).execution(0))
    if m.violation is not None:
        v = m.violation
        raise ViolationError(v.kind, v.message, v.details)
    if lag.at_start is None:
        raise ViolationError("check", f"no collection started after {lag.net} allocations")
    return {"lag": lag.at_start - THRESHOLD, "young_count": lag.young_count_at_start,
            "buffered": lag.buffered_at_start}


def lags(config: Config, threads: int) -> list[int]:
    return [measure(config, threads, seed)["lag"] for seed in range(1, SEEDS + 1)]


def run(config: Any, threads: int) -> dict[str, float]:
    runs = [measure(config, threads, seed) for seed in range(1, SEEDS + 1)]
    ls = [r["lag"] for r in runs]
    return {
        "threshold": THRESHOLD,
        f"lag: allocations past the threshold at collection start, mean of {SEEDS}":
            sum(ls) / len(ls),
        "lag, max": max(ls),
        "lag, min": min(ls),
        "buffered in threads at the start, mean": sum(r["buffered"] for r in runs) / len(runs),
        "bound 511 x N": 511 * threads,
    }


def plot(config: Any, threads: int) -> bytes:
    """Lag (mean and max over the seeds) against thread counts 1, 2, 4 ... up to `threads`,
    with the 511 x N line."""
    from ftlab.report.plots import line_panels_png

    counts = []
    n = 1
    while n <= threads:
        counts.append(n)
        n *= 2
    if counts[-1] != threads:
        counts.append(threads)
    mean, mx = [], []
    for n in counts:
        ls = lags(config, n)
        mean.append((n, sum(ls) / len(ls)))
        mx.append((n, max(ls)))
    panels = {"allocations past the threshold when the collection starts": {
        "mean": mean, "max": mx, "511 x N": [(n, 511 * n) for n in counts]}}
    return line_panels_png(panels, f"gc-trigger-lag: threshold {THRESHOLD}, "
                                   f"{CHECK_EVERY} allocations per periodic check", "threads")


WORKLOADS = (
    Workload(
        name="gc-trigger-lag",
        description="how many GC allocations past the threshold a collection starts, against "
                    "the thread count (buffered counts; bound 511 x N)",
        run=run,
        plot=plot,
        default_threads=4,
    ),
)
