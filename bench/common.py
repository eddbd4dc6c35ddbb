"""What every benchmark returns: a figure, the baseline measured in the same run, the ratio.

The machines are noisy, so absolute numbers mean little; each figure is compared with a
baseline that runs in the same process, interleaved with it, and the ratio is what we track.
Each benchmark module has `run(quick: bool) -> list[Figure]`; `ftlab bench` runs them all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Figure:
    name: str
    value: float           # higher is better (a rate), unless `lower_is_better`
    baseline: float
    baseline_name: str
    unit: str
    goal: str = ""
    lower_is_better: bool = False

    @property
    def ratio(self) -> float:
        """How many times slower (or more costly) than the baseline; 1.0 = as good."""
        if self.lower_is_better:
            return self.value / self.baseline if self.baseline else float("inf")
        return self.baseline / self.value if self.value else float("inf")

    def row(self) -> str:
        return (f"{self.name:<44} {self.value:>12,.0f} {self.unit:<14} "
                f"{self.baseline_name}: {self.baseline:>12,.0f}  ratio {self.ratio:5.2f}x"
                + (f"  (goal {self.goal})" if self.goal else ""))


def rate(fn: Callable[[], int], seconds: float,
         clock: Callable[[], float] = time.perf_counter) -> float:
    """Operations per second of `fn` (which returns how many operations it did). `clock`:
    time.process_time counts this process's CPU time only, which the other processes of a
    loaded machine disturb far less than wall time (for single-threaded work)."""
    done = 0
    start = clock()
    while True:
        done += fn()
        elapsed = clock() - start
        if elapsed >= seconds:
            return done / elapsed


def paired_rates(a: Callable[[], int], b: Callable[[], int], seconds: float,
                 rounds: int = 5,
                 clock: Callable[[], float] = time.perf_counter) -> tuple[float, float]:
    """Alternate a and b in short rounds so drift in machine speed hits both; best round each."""
    best_a = best_b = 0.0
    for _ in range(rounds):
        best_a = max(best_a, rate(a, seconds / rounds / 2, clock))
        best_b = max(best_b, rate(b, seconds / rounds / 2, clock))
    return best_a, best_b
