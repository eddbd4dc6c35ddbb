"""Issue 2: schedules per second for 2 threads x 50 atomic steps under Random, against a bare
coroutine loop that makes the same random choices with no model at all."""

from __future__ import annotations

import random
import time
import types

from common import Figure, paired_rates

from ftlab.sim import Machine, Random
from ftlab.sim.race import RaceDetector

THREADS, STEPS = 2, 50


def _model_schedule(seed: int, race: bool) -> None:
    m = Machine(race=RaceDetector() if race else None)
    base = m.mem.reserve(1 << 16)
    m.mem.commit(base, 4096)

    async def body(t):
        addr = base + 8 * t.index
        for _ in range(STEPS):
            await t.mem.fetch_add(addr, 1)

    for i in range(THREADS):
        m.spawn(body)
    m.run(Random(seed).execution(0))


@types.coroutine
def _bare_point():
    yield


def _bare_schedule(seed: int) -> None:
    rnd = random.Random(seed).random

    async def body():
        for _ in range(STEPS):
            await _bare_point()

    live = [body() for _ in range(THREADS)]
    for c in live:
        c.send(None)
    while live:
        c = live[int(rnd() * len(live))] if len(live) > 1 else live[0]
        try:
            c.send(None)
        except StopIteration:
            live.remove(c)


def run(quick: bool = False) -> list[Figure]:
    seconds = 2.0 if quick else 10.0
    batch = 20
    seeds = iter(range(10**9))

    def model(race: bool):
        def go() -> int:
            for _ in range(batch):
                _model_schedule(next(seeds), race)
            return batch
        return go

    def bare() -> int:
        for _ in range(batch):
            _bare_schedule(next(seeds))
        return batch

    figures = []
    for race in (False, True):
        # CPU time of this process: both sides are single-threaded, and wall time on a shared
        # machine mostly measures the other processes
        m, b = paired_rates(model(race), bare, seconds, rounds=10, clock=time.process_time)
        figures.append(Figure(
            name=f"sim: 2x50 atomic steps, race detector {'on' if race else 'off'}",
            value=m, baseline=b, baseline_name="bare coroutine loop", unit="schedules/s",
            goal="<= 3x" if not race else ""))
    return figures


if __name__ == "__main__":
    for f in run(quick=False):
        print(f.row())
