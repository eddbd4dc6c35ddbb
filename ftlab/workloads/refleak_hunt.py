"""A regrtest `-R` leak hunt on the free-threaded runtime (`Lib/test/libregrtest/refleak.py`,
gh-115184; `ftlab.runtime.obmalloc` block counting, `ftlab.runtime.object` ref total).

`refleak-hunt`: the main thread runs a small multi-threaded test body WARMUPS + RUNS times.
After each round it does what `runtest_refleak` does after `dash_R_cleanup`: `gc.collect()`
(which merges the BRC queues and processes the delayed frees with the world stopped), then
reads `sys.getallocatedblocks()` and `sys.gettotalrefcount()`, and records the difference from
the previous reading. regrtest reports a leak for a counter only when *every* delta after the
warmups is >= 1; a leak-free body must give stable counts.

The body leaks nothing. Each round, N worker threads (`--threads`): each makes two objects
(one dropped at once, one handed to main), two PyMem blocks (one freed, one handed to main),
and, every other round, a "cache" block that main keeps until the next round (a per-round
cache, refilled by whichever thread gets to it first: main fills it in the other rounds,
so there is always one block per worker); each drops an object main handed it (its shared field is 0: the reference goes to
main's BRC queue, which the collection merges); then it exits, abandoning its segments with
the handed blocks still live. Main then frees the handed blocks and drops the handed objects
from its side (cross-thread frees into abandoned pages, merges for owners that are gone) and
frees the previous round's cache. Throughout the hunt a background thread (a thread pool's
idle worker) allocates and frees a block between periodic checks, so it holds nothing when
the world is stopped, but holds a block at times when it is not.

With every fix the deltas are 0. Under `--mutate`: `blockcount-no-collect` counts the frees
waiting on abandoned pages' `xthread_free` (they pile up round after round: a spurious leak);
`blockcount-skips-abandoned` misses the cache blocks in the rounds where dead workers
allocated them, and whatever else abandoned pages hold until some thread reclaims them; `blockcount-no-stw` counts while the background thread holds a block
or not; `reftotal-untracked-brc` leaves the ref total short of the queued references the
collection then drops. Runs are unchecked (the oracles would stop a mutated run at the first
wrong count) and deterministic: one Random schedule, seed 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ftlab.config import Config
from ftlab.runtime.object import PyType
from ftlab.runtime.pystate import Runtime
from ftlab.sim.strategies import Random
from ftlab.sim.violation import ViolationError
from ftlab.workloads import Workload

WARMUPS = 3                     # regrtest -R 3:3
RUNS = 3
SEED = 1
THING = PyType("Thing", basicsize=32)


@dataclass
class _Hunt:
    done: bool = False
    given: list[int] = field(default_factory=list)      # main's objects, one per worker
    handed_objects: list[int] = field(default_factory=list)
    handed_blocks: list[int] = field(default_factory=list)
    cache: list[int] = field(default_factory=list)
    cache_next: list[int] = field(default_factory=list)
    readings: list[tuple[int, int]] = field(default_factory=list)   # (blocks, refs)


async def _worker(t, s: _Hunt, k: int, fill_cache: bool) -> None:
    keep = await t.new_object(THING)
    drop = await t.new_object(THING)
    await t.decref(drop)
    s.handed_objects.append(keep)
    block = await t.malloc(48)
    await t.free(await t.malloc(48))
    s.handed_blocks.append(block)
    if fill_cache:
        s.cache_next.append(await t.malloc(64))
    await t.decref(s.given[k])          # main's object: queued to main's BRC queue
    await t.periodic_check()


async def _background(t, s: _Hunt) -> None:
    while not s.done:
        p = await t.malloc(96)
        await t.yield_now()             # between two operations: another thread may run
        await t.free(p)
        await t.periodic_check()


async def _round(t, s: _Hunt, workers: int, i: int) -> None:
    s.given = [await t.new_object(THING) for _ in range(workers)]
    fill = i % 2 == 0                   # the workers fill the cache, or main does
    ws = [await t.spawn(_worker, s, k, fill, name=f"w{k}") for k in range(workers)]
    for w in ws:
        await t.join(w)
    if not fill:
        s.cache_next = [await t.malloc(64) for _ in range(workers)]
    for p in s.handed_blocks:
        await t.free(p)
    for o in s.handed_objects:
        await t.decref(o)
    for p in s.cache:
        await t.free(p)
    s.handed_blocks.clear()
    s.handed_objects.clear()
    s.cache, s.cache_next = s.cache_next, []


async def _main(t, s: _Hunt, workers: int) -> None:
    bg = await t.spawn(_background, s, name="background")
    await t.gc_collect()
    s.readings.append((await t.get_allocated_blocks(), await t.get_total_refcount()))
    for i in range(WARMUPS + RUNS):
        await _round(t, s, workers, i)
        await t.gc_collect()            # support.gc_collect()
        s.readings.append((await t.get_allocated_blocks(), await t.get_total_refcount()))
    s.done = True
    await t.join(bg)
    for p in s.cache:
        await t.free(p)


def hunt(config: Config, workers: int) -> list[tuple[int, int]]:
    """The (blocks, refs) deltas of each round, warmups first."""
    config = replace(config, checked=False, race_detection=False, trace=False,
                     max_steps=2_000_000)
    rt = Runtime(config)
    s = _Hunt()
    rt.start_thread(_main, s, workers, name="regrtest")
    m = rt.machine
    m.run(Random(SEED).execution(0))
    if m.violation is not None:
        v = m.violation
        raise ViolationError(v.kind, v.message, v.details)
    r = s.readings
    return [(r[i][0] - r[i - 1][0], r[i][1] - r[i - 1][1]) for i in range(1, len(r))]


def leaked(deltas: list[int]) -> bool:
    """regrtest's rule: a leak only if every delta after the warmups is >= 1."""
    return all(d >= 1 for d in deltas[WARMUPS:])


def run(config: Any, threads: int) -> dict[str, float]:
    deltas = hunt(config, threads)
    out: dict[str, float] = {}
    for i, (blocks, refs) in enumerate(deltas, 1):
        kind = "warmup" if i <= WARMUPS else "run"
        out[f"round {i} ({kind}): blocks delta"] = blocks
        out[f"round {i} ({kind}): refs delta"] = refs
    out["regrtest verdict, blocks (1 = leak reported)"] = int(leaked([b for b, _ in deltas]))
    out["regrtest verdict, refs (1 = leak reported)"] = int(leaked([r for _, r in deltas]))
    return out


WORKLOADS = (
    Workload(
        name="refleak-hunt",
        description="regrtest -R 3:3: block and ref-total deltas per round of a multi-threaded "
                    "body (0 with every fix; --mutate blockcount-*/reftotal-* to see them move)",
        run=run,
        default_threads=2,
    ),
)
