"""Helpers for the mimalloc model's tests: runtimes with the heap oracles, run to the end."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from ftlab import Config, Runtime
from ftlab.check import heap as heap_check
from ftlab.runtime.mimalloc.segment import segment_page_of
from ftlab.runtime.mimalloc.types import MI_SEGMENT_MASK
from ftlab.sim import Random
from ftlab.sim.violation import ViolationError


class Run:
    """A runtime with the heap oracles installed; `go` runs its threads to the end and does
    the end-of-run check."""

    def __init__(self, pydebug: bool = False, checked: bool = True, **config: Any) -> None:
        config.setdefault("max_steps", 1_000_000)
        self.rt = Runtime(Config(pydebug=pydebug, checked=checked, **config))
        self.checker = heap_check.install(self.rt) if checked else None

    @property
    def mi(self):
        return self.rt.mimalloc

    def page_of(self, p: int):
        seg = self.mi.segments[(p - 1) & ~MI_SEGMENT_MASK]
        return segment_page_of(seg, p)

    def main(self, fn: Callable) -> Any:
        """Run `fn` as the only thread; raises the violation if there is one."""
        result = self.rt.run_main(fn)
        if self.checker is not None:
            self.checker.full_check()
        return result

    def go(self, *fns: Callable, strategy=None) -> Any:
        """Run threads `fns` under `strategy` (Random(0)); returns the violation or None."""
        m = self.rt.machine
        for i, fn in enumerate(fns):
            self.rt.start_thread(fn, name=f"T{i}")
        m.run((strategy or Random(0)).execution(0))
        if m.violation is None and self.checker is not None:
            try:
                self.checker.full_check()
            except ViolationError as e:
                return e
        return m.violation


@pytest.fixture
def make_run():
    return Run
