"""Memory held back by delayed frees: the gh-132519 shape (fixed by gh-133136 in 3.14).

`free-delayed-growth`: one thread (the grower) keeps replacing a large array, the way a growing
shared list does: it allocates the new array (24 MiB, a list of ~3.1 million items; 254 of them
are about the 6.7 GB peak reported in gh-132519) and hands the old one to `_PyMem_FreeDelayed`.
The other threads run Python code (scheduling points) and pass the eval loop's periodic check,
a quiescent state, only every WORK_PER_CHECK steps. The grower also
hands a small object it owns to a worker now and then (a producer/consumer program); the worker
drops it, which queues it to the grower's biased-refcount queue and raises the grower's
EXPLICIT_MERGE eval-breaker bit, so the grower's periodic checks sometimes reach
`_Py_HandlePending`.

The same program runs under both version policies (the `--version` option is ignored):

- 3.13.0: goals from `deferred_advance` (a real advance on every 10th free); the queue is
  processed only when a 254-item chunk fills, so up to 254 arrays wait at a time.
- 3.14: each free of more than 1 MiB advances `wr_seq` and sets `should_process`, and the next
  `_Py_HandlePending` processes the queue. (In the model `should_process` waits for some
  eval-breaker event, here the merge requests: reference §2.6 could not confirm that CPython
  sets a bit of its own.)

It prints, for each version, the peak bytes held by the delayed-free queues (the items queued
and not yet freed, thread and interpreter queues) and the peak committed memory of the
simulated address space (mimalloc commits its 1 GiB arenas eagerly, so this moves in steps of
1 GiB), and the ratio 3.13.0 / 3.14 of each. Runs are unchecked (no oracles, no race detector)
and deterministic (one Random schedule, seed 1). With one thread there is no worker, hence no
eval-breaker event: 3.14 then also waits for full chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ftlab.config import Config
from ftlab.runtime.object import PyType
from ftlab.runtime.pystate import Runtime
from ftlab.sim.atomics import ACQ_REL, RELAXED, SEQ_CST
from ftlab.sim.memory import Tag
from ftlab.sim.strategies import Random
from ftlab.sim.violation import ViolationError
from ftlab.workloads import Workload

MiB = 1024 * 1024
ARRAY_SIZE = 24 * MiB           # each replaced array: a list of ~3.1 million items
ARRAYS = 600                    # arrays freed through _PyMem_FreeDelayed per run
WORK_PER_CHECK = 100            # a worker's scheduling points between two periodic checks
HAND_OFF_EVERY = 2              # the grower hands a worker an object every this many arrays
SEED = 1

TOKEN = PyType("Token", basicsize=48)


@dataclass
class _Shared:
    flags: int                  # +0 done, +8 hand-off slot
    # (arrays replaced, bytes the delayed-free queues hold, committed bytes) after each array:
    # read off the runtime's statistics, so sampling does not change the run
    samples: list[tuple[int, int, int]]


async def _grower(t, arrays: int, workers: int) -> None:
    s = t.shared
    mem = t.mem
    slot = s.flags + 8
    old = 0
    for i in range(arrays):
        new = await t.malloc(ARRAY_SIZE)
        mem.store_u64(new, ARRAY_SIZE // 8 - 1, Tag.PAYLOAD)     # the array's `allocated`
        if old:
            await t.free_delayed(old, ARRAY_SIZE)
        old = new
        if workers and i % HAND_OFF_EVERY == 0:
            token = await t.new_object(TOKEN)
            left = await mem.exchange(slot, token, 8, ACQ_REL)
            if left:
                await t.decref(left)            # not taken yet: ours again
        await t.periodic_check()
        s.samples.append((i + 1, t.rt.stats["delayed_bytes"], mem.committed_bytes))
    await t.free(old)
    await mem.store(s.flags, 1, 8, SEQ_CST)


async def _worker(t) -> None:
    s = t.shared
    mem = t.mem
    slot = s.flags + 8
    while not await mem.load(s.flags, 8, RELAXED):
        for _ in range(WORK_PER_CHECK):
            await t.yield_now()
        token = await mem.exchange(slot, 0, 8, ACQ_REL)
        if token:
            await t.decref(token)               # the owner's queue: EXPLICIT_MERGE
        await t.periodic_check()
    token = await mem.exchange(slot, 0, 8, ACQ_REL)
    if token:
        await t.decref(token)


def measure(config: Config, threads: int, arrays: int = ARRAYS) -> dict[str, Any]:
    """One run of the program under `config` (its version and mutations): peak bytes held by
    the delayed-free queues, peak committed bytes, and a few counts."""
    config = replace(config, checked=False, race_detection=False, trace=False,
                     max_steps=200 * arrays * max(threads, 1) + 100_000)
    rt = Runtime(config)
    rt.shared = _Shared(rt.raw_calloc(64), [])
    workers = threads - 1
    rt.start_thread(_grower, arrays, workers, name="grower")
    for i in range(workers):
        rt.start_thread(_worker, name=f"worker{i}")
    m = rt.machine
    m.run(Random(SEED).execution(0))
    if m.violation is not None:
        v = m.violation
        raise ViolationError(v.kind, v.message, v.details)
    return {
        "delayed_bytes_peak": rt.stats["delayed_bytes_peak"],
        "committed_peak": rt.mem.peak_committed_bytes,
        "delayed_items_peak": rt.stats["delayed_items_peak"],
        "delayed_freed": rt.stats["delayed_freed"],
        "wr_seq": rt.qsbr.peek_wr_seq(),
        "steps": m.steps,
        "samples": rt.shared.samples,
    }


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def run(config: Any, threads: int) -> dict[str, float]:
    old = measure(replace(config, version="3.13.0"), threads)
    new = measure(replace(config, version="3.14"), threads)
    return {
        "peak held by delayed-free queues, 3.13.0 (MiB)": old["delayed_bytes_peak"] / MiB,
        "peak held by delayed-free queues, 3.14 (MiB)": new["delayed_bytes_peak"] / MiB,
        "ratio 3.13.0 / 3.14, delayed-free queues": _ratio(old["delayed_bytes_peak"],
                                                           new["delayed_bytes_peak"]),
        "peak committed memory, 3.13.0 (MiB)": old["committed_peak"] / MiB,
        "peak committed memory, 3.14 (MiB)": new["committed_peak"] / MiB,
        "ratio 3.13.0 / 3.14, committed memory": _ratio(old["committed_peak"],
                                                        new["committed_peak"]),
        "arrays passed to _PyMem_FreeDelayed": ARRAYS - 1,
        "array size (MiB)": ARRAY_SIZE / MiB,
    }


def plot(config: Any, threads: int) -> bytes:
    """Bytes held by the delayed-free queues and committed memory as the arrays are replaced,
    both versions on each panel."""
    from ftlab.report.plots import line_panels_png

    series = {v: measure(replace(config, version=v), threads)["samples"]
              for v in ("3.13.0", "3.14")}
    panels = {
        "held by delayed-free queues (MiB)":
            {v: [(n, held / MiB) for n, held, _ in s] for v, s in series.items()},
        "committed memory (MiB)":
            {v: [(n, com / MiB) for n, _, com in s] for v, s in series.items()},
    }
    return line_panels_png(panels, f"free-delayed-growth, {threads} threads: 24 MiB arrays "
                                   "passed to _PyMem_FreeDelayed", "arrays replaced")


WORKLOADS = (
    Workload(
        name="free-delayed-growth",
        description="gh-132519: one thread frees 24 MiB arrays through _PyMem_FreeDelayed "
                    "while others rarely pass a quiescent state; queue and memory peaks, "
                    "3.13.0 vs 3.14",
        run=run,
        plot=plot,
        default_threads=4,
    ),
)
