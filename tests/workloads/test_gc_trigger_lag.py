"""gc-trigger-lag (ftlab.workloads.gc_trigger_lag): with one thread the collection starts at
the first flush past the threshold (2048 = 4 x 512: lag 48, hand-computed); with more threads
the lag grows and stays within the 511 x N bound."""

from __future__ import annotations

from ftlab import Config
from ftlab.workloads import get
from ftlab.workloads.gc_trigger_lag import measure


def test_one_thread_collects_at_the_fourth_flush():
    r = measure(Config(), 1, seed=1)
    assert r == {"lag": 48, "young_count": 2048, "buffered": 0}


def test_two_threads_lag_more_within_the_bound():
    lags = [measure(Config(), 2, seed=s)["lag"] for s in (1, 2)]
    assert all(48 < lag <= 2 * 511 for lag in lags)


def test_registered():
    w = get("gc-trigger-lag")
    assert w.plot is not None and w.default_threads == 4
