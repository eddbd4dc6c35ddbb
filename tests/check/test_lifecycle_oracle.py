"""The `lifecycle` oracle: no thread attaches once another has started finalizing."""

from __future__ import annotations

import pytest

from ftlab import Config
from ftlab.check.lifecycle import LifecycleOracle
from ftlab.runtime import Runtime
from ftlab.runtime.pylifecycle import Phase
from ftlab.sim.violation import ViolationError


async def _idle(t) -> None:
    await t.yield_now()


def _runtime():
    rt = Runtime(Config())
    main = rt.start_thread(_idle, name="main")
    other = rt.start_thread(_idle, name="daemon")
    return rt, main, other


def test_quiet_before_finalization_and_for_the_finalizing_thread():
    rt, main, other = _runtime()
    oracle = LifecycleOracle(rt)
    oracle.thread_attached(other)
    rt.lifecycle.advance(Phase.WAIT_FOR_THREADS)
    rt.lifecycle.advance(Phase.ATEXIT)
    rt.lifecycle.set_interp_finalizing(main)
    oracle.thread_attached(other)       # only the interpreter's flag: MustExit reads the runtime's
    rt.lifecycle.set_runtime_finalizing(main)
    oracle.thread_attached(main)


def test_fires_when_another_thread_attaches_after_the_runtime_flag():
    rt, main, other = _runtime()
    oracle = LifecycleOracle(rt)
    for phase in (Phase.WAIT_FOR_THREADS, Phase.ATEXIT, Phase.FINALIZING):
        rt.lifecycle.advance(phase, main)
    with pytest.raises(ViolationError, match="attached after a:main started finalizing") as e:
        oracle.thread_attached(other)
    assert e.value.kind == "lifecycle"


def test_installed_in_checked_mode():
    import ftlab.check

    rt = Runtime(Config())
    ftlab.check.install(rt)
    assert rt.find_observer(LifecycleOracle) is not None
