"""Issue 6: campaign throughput, through the real campaign machinery (planning, task sizing,
the store, the process pool).

- schedules per second per worker over the catalog: every scenario of the catalog, unmutated
  (so no row stops early), the same budget per row, run by a pool of 1 worker process; the
  baseline is the same campaign run in this process, with no pool;
- parallel efficiency with 2 local workers: rate(2 workers) / (2 x rate(1 worker)), the two
  measured alternately in the same run; the baseline is the efficiency of a plain CPU-bound loop
  in 2 processes measured at the same time (the most this machine gives right now, if something
  else is running on it);
- worker utilisation with 2 workers: the share of the wall time each worker had a task (what
  the campaign's dispatch loses to planning, commits and the tail, whatever else runs);
- the wall time of the default `ftlab explore` (quick: with --budget 100).

Run: python bench/bench_explore.py   (or `ftlab bench --only explore`)
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import time

from common import Figure

from ftlab.explore.backends import ProcessBackend, SerialBackend
from ftlab.explore.campaign import Campaign, _row_params, campaign_key, select_rows
from ftlab.explore.store import Store
from ftlab.scenarios import catalog


def _campaign_rate(backend, budget: int) -> tuple[float, float]:
    """Schedules per second of one campaign over every unmutated scenario, and the share of
    the wall time the workers were busy with a task."""
    rows = [_row_params(s, m, None, budget, "3.14") for s, m in select_rows(catalog(), None, ["none"])]
    params = {"rows": rows, "seed": 1, "batch": 20, "version": "3.14", "shrink": False,
              "shrink_runs": 0}
    store = Store.memory()
    try:
        cid = store.new_campaign(campaign_key(params), params, "bench",
                                 [dict(r, ord=i) for i, r in enumerate(rows)])
        campaign = Campaign(store, cid, params, backend=backend)
        start = time.perf_counter()
        campaign.run()
        elapsed = time.perf_counter() - start
        done, _ = campaign.counts()
        return done / elapsed, campaign.worker_seconds / (backend.workers * elapsed)
    finally:
        store.close()


def _burn(n: int) -> int:
    s = 0
    for i in range(n):
        s += i * i
    return s


def _burn_efficiency(seconds: float = 0.5) -> float:
    """Efficiency of a trivially parallel CPU-bound loop in 2 spawned processes."""
    n = 2_000_000
    start = time.perf_counter()
    _burn(n)
    one = time.perf_counter() - start
    n = max(1, int(n * seconds / max(one, 1e-3)))
    with cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
        list(ex.map(_burn, [10, 10]))
        start = time.perf_counter()
        _burn(n)
        one = time.perf_counter() - start
        start = time.perf_counter()
        list(ex.map(_burn, [n, n]))
        two = time.perf_counter() - start
    return one / two


def _default_explore_seconds(quick: bool) -> tuple[float, str]:
    from ftlab.explore.campaign import explore

    budget = 100 if quick else None
    start = time.perf_counter()
    result = explore(workers=os.cpu_count() or 1, budget=budget)
    elapsed = time.perf_counter() - start
    label = "default `ftlab explore` wall time" + (" (quick: --budget 100)" if quick else "")
    if not result.ok:
        label += f" [not all as expected: {result.summary()}]"
    return elapsed, label


def run(quick: bool = False) -> list[Figure]:
    budget = 40 if quick else 150
    rounds = 1 if quick else 3
    one, two = ProcessBackend(1), ProcessBackend(2)
    try:
        for b in (one, two):  # start the workers and import everything before timing
            _campaign_rate(b, 2)
        serial = r1 = r2 = ceiling = busy = 0.0
        for _ in range(rounds):
            serial = max(serial, _campaign_rate(SerialBackend(), budget)[0])
            r1 = max(r1, _campaign_rate(one, budget)[0])
            rate, used = _campaign_rate(two, budget)
            if rate > r2:
                r2, busy = rate, used
            ceiling = max(ceiling, _burn_efficiency())
    finally:
        one.close()
        two.close()
    seconds, label = _default_explore_seconds(quick)
    return [
        Figure(name="explore: schedules/s per worker over the catalog", value=r1,
               baseline=serial, baseline_name="same campaign in-process", unit="schedules/s"),
        Figure(name="explore: parallel efficiency, 2 local workers", value=r2 / (2 * r1),
               baseline=ceiling, baseline_name="CPU loop in 2 processes now", unit="",
               goal=">= 0.85"),
        Figure(name="explore: worker utilisation, 2 local workers", value=busy, baseline=1.0,
               baseline_name="always busy", unit=""),
        Figure(name=label, value=seconds, baseline=300.0, baseline_name="goal", unit="s",
               goal="< 300 s", lower_is_better=True),
    ]


if __name__ == "__main__":
    for f in run(quick=False):
        print(f.row())
