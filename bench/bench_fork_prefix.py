"""Issue 13 item 3: does forking at the first decision pay for Random/PCT batches? (It does not
here.)

Every execution of a row repeats the same prefix before its first scheduling decision: `Runtime`
construction, the oracles' install, the scenario's set-up, the thread starts and the main
thread's solo steps. The model's threads are coroutines, which cannot be copied, so the only way
to share that prefix is to fork the process at the first decision: a batch runs the prefix once,
then forks one child per execution (a child consumes the state it inherits, so it runs one
execution); each child goes on with that execution's own chooser and sends its result back
through a pipe. Random and PCT choosers are pure functions of (seed, i) and the decisions, and
the prefix makes no decision, so the children make exactly the choices a plain loop makes; this
benchmark checks that every forked result (schedule, steps, violations) equals the plain one.

What it measures, per scenario, in a fresh spawned process (a worker's size: the catalog
imported, nothing else), executions of Random(0) in batches of `BATCH` (a campaign batch):
CPU time (this process and its children: `getrusage`) and wall time per execution, plain
against forked, alternated round by round, the best round of each; the prefix's share of a
plain execution; and the copy-on-write page faults each child takes.

Measured on the 2-core Firecracker VM this project runs on (Python 3.11, a ~26 MB worker), the
forked batch costs more CPU than the plain one on every catalog scenario (1.1x to 8.8x): fork
and exit of the worker cost ~2-2.5 ms CPU by themselves, and a child then runs its part of the
execution 3-6 ms slower than the same steps run in place, from its ~500-3,000 copy-on-write
faults (CPython 3.11 writes the reference count of every object it touches: code, functions,
the runtime's state) at some 3 us each. That is more than the 0.2-9 ms prefix it saves. Hence
the explorer does not fork. End to end, with the fork wired into `worker.run_batch` for the
Random and PCT batches (a throwaway patch; identical verdicts, schedules to detection and
counterexamples), `ftlab explore merge-vs-reader dict-resize-read type-cache-consistency
--budget 300 --workers 2` took 154 s wall and 66 s CPU against 106 s and 49 s without it; the
unmutated rows ran 1.35-1.49x fewer executions per second (2.3x on merge-vs-reader and 19x on
lost-update at the default budget). On a machine where fork and page faults are an order of
magnitude cheaper (bare metal) the balance may differ: this benchmark is the way to find out.

Run: python bench/bench_fork_prefix.py [SCENARIO ...]; `run(quick)` gives the catalog-wide CPU
figure for `ftlab bench`.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import resource
import statistics
import sys
import time

from common import Figure

BATCH = 20          # executions per batch, as a campaign's (portfolio.DEFAULT_BATCH)
ROUNDS = 3
QUICK = ("merge-vs-reader", "type-cache-consistency", "dict-resize-read")


class _Unwind(BaseException):
    """Raised in the parent once every child has reported: abandons the parent's run (a
    BaseException, so the machine's step handler passes it on rather than calling it a crash)."""


def _summary(result) -> tuple:
    return (result.schedule, result.steps,
            tuple((v.kind, v.message, v.thread, v.step) for v in result.violations))


def _cpu() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt


class _Forker:
    """The chooser of the shared run. At its first decision it forks one child per execution;
    a child makes that execution's choices from then on, the parent collects the results."""

    uniform = None      # the machine must call `choose`: the fork happens there

    def __init__(self, strategy, start: int, count: int, stop=None) -> None:
        self.strategy = strategy
        self.stop = stop
        self.start = start
        self.count = count
        self.results: list[tuple] = []
        self.inner = None           # the child's chooser's choice function
        self.pipe: int | None = None    # the child's write end
        self.prefix_done = 0.0

    def choose(self, runnable, current):
        if self.inner is not None:
            return self.inner(runnable, current)
        self.prefix_done = time.perf_counter()
        gc.freeze()     # the children's collections need not traverse (and so copy) the prefix
        try:
            for i in range(self.start, self.start + self.count):
                r, w = os.pipe()
                pid = os.fork()
                if pid == 0:
                    os.close(r)
                    self.pipe = w
                    chooser = self.strategy.execution(i)
                    u = getattr(chooser, "uniform", None)
                    # the machine's inlined uniform choice, the same float drawn
                    self.inner = ((lambda rn, cur: rn[int(u() * len(rn))]) if u is not None
                                  else chooser.choose)
                    return self.inner(runnable, current)
                os.close(w)
                with os.fdopen(r, "rb") as f:
                    data = f.read()
                os.waitpid(pid, 0)
                if not data:
                    raise RuntimeError(f"the child of execution {i} died without a result")
                self.results.append(pickle.loads(data))
                if self.stop is not None and self.stop(self.results[-1]):
                    break       # a decisive violation ends the batch (worker.run_batch)
        finally:
            if self.pipe is None:
                gc.unfreeze()
        raise _Unwind

    def finish(self) -> None:
        pass


def forked_batch(scenario, config, strategy, start: int, count: int, stop=None,
                 summary=None) -> tuple[list, float]:
    """The summaries of executions start..start+count-1 (`summary(result)`, picklable), the
    prefix run once, up to the first for which `stop(summary)` is true; and the prefix's
    seconds."""
    from ftlab.explore.execute import execute

    summary = summary or _summary
    forker = _Forker(strategy, start, count, stop)
    started = time.perf_counter()
    try:
        result = execute(scenario, config, forker)
    except _Unwind:
        return forker.results, forker.prefix_done - started
    except BaseException:
        if forker.pipe is not None:
            os._exit(1)     # a child that broke: the parent sees no result
        raise
    if forker.pipe is not None:
        os.write(forker.pipe, pickle.dumps(summary(result)))
        os._exit(0)
    # no decision at all: the chooser played no part, every execution is this one
    first = summary(result)
    n = 1 if stop is not None and stop(first) else count
    return [first] * n, time.perf_counter() - started


def plain_batch(scenario, config, strategy, start: int, count: int) -> list[tuple]:
    from ftlab.explore.execute import execute

    return [_summary(execute(scenario, config, strategy.execution(i)))
            for i in range(start, start + count)]


def measure(name: str) -> dict:
    """One scenario, in the calling process: per-execution figures, plain and forked."""
    from ftlab.config import Config
    from ftlab.scenarios import catalog
    from ftlab.sim.strategies import Random

    scenario = catalog()[name]
    config = Config(version=scenario.versions[0] if scenario.versions else "3.14")
    strategy = Random(0)
    plain_batch(scenario, config, strategy, 0, 2)   # warm caches
    plain_cpu, plain_wall, fork_cpu, fork_wall, prefix, faults = [], [], [], [], [], []
    for k in range(ROUNDS):
        start = k * BATCH
        c0, t0 = _cpu(), time.perf_counter()
        a = plain_batch(scenario, config, strategy, start, BATCH)
        c1, t1, f1 = _cpu(), time.perf_counter(), _faults()
        b, pre = forked_batch(scenario, config, strategy, start, BATCH)
        c2, t2, f2 = _cpu(), time.perf_counter(), _faults()
        if a != b:
            raise RuntimeError(f"{name}: a forked execution differs from the plain one")
        plain_cpu.append((c1 - c0) / BATCH)
        plain_wall.append((t1 - t0) / BATCH)
        fork_cpu.append((c2 - c1) / BATCH)
        fork_wall.append((t2 - t1) / BATCH)
        prefix.append(pre)
        faults.append((f2 - f1) / BATCH)
    return {"scenario": name, "plain_cpu": min(plain_cpu), "fork_cpu": min(fork_cpu),
            "plain_wall": min(plain_wall), "fork_wall": min(fork_wall),
            "prefix": min(prefix), "faults": statistics.median(faults)}


def measure_fresh(names) -> list[dict]:
    """Each scenario in a fresh spawned process (a worker's size, not grown by the others)."""
    ctx = multiprocessing.get_context("spawn")
    out = []
    for name in names:
        with ctx.Pool(1) as pool:
            out.append(pool.apply(measure, (name,)))
    return out


def table(names) -> list[dict]:
    rows = measure_fresh(names)
    print(f"{'scenario':28} {'plain ms':>9} {'fork ms':>9} {'cpu ratio':>9} {'plain/s':>8}"
          f" {'fork/s':>8} {'prefix ms':>9} {'faults':>7}")
    for r in rows:
        print(f"{r['scenario']:28} {1e3 * r['plain_cpu']:9.2f} {1e3 * r['fork_cpu']:9.2f}"
              f" {r['fork_cpu'] / r['plain_cpu']:9.2f} {1 / r['plain_wall']:8.1f}"
              f" {1 / r['fork_wall']:8.1f} {1e3 * r['prefix']:9.2f} {r['faults']:7.0f}",
              flush=True)
    return rows


def run(quick: bool) -> list[Figure]:
    from ftlab.scenarios import catalog

    names = QUICK if quick else list(catalog())
    rows = measure_fresh(names)
    plain = sum(r["plain_cpu"] for r in rows)
    forked = sum(r["fork_cpu"] for r in rows)
    return [Figure("CPU per execution, forked at the first decision, summed over scenarios",
                   1e3 * forked, 1e3 * plain, "plain", "ms", goal="< 1 to pay",
                   lower_is_better=True)]


if __name__ == "__main__":
    if not hasattr(os, "fork"):
        sys.exit("this benchmark needs os.fork (Linux)")
    import argparse

    from ftlab.scenarios import catalog

    ap = argparse.ArgumentParser(prog="bench_fork_prefix.py",
                                 description="per-execution CPU of forking at the first decision "
                                             "against plain runs, per catalog scenario")
    ap.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="default: every one")
    names = ap.parse_args().scenarios or list(catalog())
    unknown = [n for n in names if n not in catalog()]
    if unknown:
        print(f"bench_fork_prefix.py: unknown scenario {unknown[0]!r}", file=sys.stderr)
        sys.exit(2)
    table(names)
