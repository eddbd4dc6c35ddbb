"""Finalization phases and PythonFinalizationError raise points, per version."""

from __future__ import annotations

import pytest

from ftlab.runtime.pylifecycle import (Finalization, Phase, PythonFinalizationError,
                                       raise_points)

ALL_OPS = ("thread_start", "fork", "fork1", "forkpty", "popen_preexec_fn",
           "join_running_thread")


def test_hierarchy():
    assert issubclass(PythonFinalizationError, RuntimeError)
    assert not issubclass(PythonFinalizationError, (SystemExit, KeyboardInterrupt))


@pytest.mark.parametrize("version, raising", [
    ("3.13.0", {"thread_start", "fork", "fork1", "forkpty", "popen_preexec_fn"}),
    ("3.14", {"thread_start", "fork", "fork1", "forkpty", "popen_preexec_fn",
              "join_running_thread"}),
])
def test_raise_points_per_version(version, raising):
    assert set(raise_points(version)) == raising
    f = Finalization(version)
    tstate = object()
    for phase in (Phase.WAIT_FOR_THREADS, Phase.ATEXIT):
        f.advance(phase)
        for op in ALL_OPS:
            f.check(op)  # threads may still start during threading._shutdown and atexit
    f.advance(Phase.FINALIZING, tstate)
    for op in ALL_OPS:
        if op in raising:
            with pytest.raises(PythonFinalizationError):
                f.check(op)
        else:
            f.check(op)
    f.check("join_running_thread", target_running=False)


@pytest.mark.parametrize("op, message", [
    ("thread_start", "can't create new thread at interpreter shutdown"),
    ("fork", "can't fork at interpreter shutdown"),
    ("popen_preexec_fn", "preexec_fn not supported at interpreter shutdown"),
    ("join_running_thread", "cannot join thread at interpreter shutdown"),
])
def test_messages(op, message):
    f = Finalization("3.14")
    f.advance(Phase.WAIT_FOR_THREADS)
    f.advance(Phase.ATEXIT)
    f.advance(Phase.FINALIZING, "main")
    with pytest.raises(PythonFinalizationError, match=message):
        f.check(op)


def test_getters_and_phase_order():
    f = Finalization("3.13.0")
    assert f.interp_get_finalizing() is None and f.runtime_get_finalizing() is None
    with pytest.raises(ValueError, match="cannot go from RUNNING to FINALIZING"):
        f.advance(Phase.FINALIZING, "main")
    f.advance(Phase.WAIT_FOR_THREADS)
    f.advance(Phase.ATEXIT)
    with pytest.raises(ValueError, match="needs the finalizing thread state"):
        f.advance(Phase.FINALIZING)
    f.advance(Phase.FINALIZING, "main")
    assert f.interp_get_finalizing() == "main" == f.runtime_get_finalizing()
    assert f.finalizing
    f.advance(Phase.FINI)
    with pytest.raises(ValueError):
        f.advance(Phase.RUNNING)
    with pytest.raises(ValueError, match="unknown operation"):
        f.check("spawn")


@pytest.mark.parametrize("version", ["3.13.0", "3.14"])
def test_runtime_spawn_raises_once_finalizing(version):
    """`ThreadState.spawn` (do_start_joinable_thread) checks the interpreter flag before it
    creates the thread state; `Runtime.finalizing` reads the same state."""
    from ftlab import Config, Runtime
    rt = Runtime(Config(version=version))
    out = {}

    async def child(t):
        out["child"] = True

    async def main(t):
        w = await t.spawn(child, name="child")      # running: allowed
        await t.join(w)
        for phase in (Phase.WAIT_FOR_THREADS, Phase.ATEXIT):
            rt.lifecycle.advance(phase)
        w = await t.spawn(child, name="child2")     # atexit may still start threads
        await t.join(w)
        rt.lifecycle.advance(Phase.FINALIZING, t)
        assert rt.finalizing
        try:
            await t.spawn(child, name="late")
        except PythonFinalizationError as e:
            out["error"] = str(e)
        rt.lifecycle = Finalization(version)        # let the thread exit normally

    rt.run_main(main)
    assert out == {"child": True, "error": "can't create new thread at interpreter shutdown"}
    assert [u.name for u in rt.machine.threads] == ["main", "child", "child2"]


# issue 11: the two flags of finalize_ex, and exit vs hang per version

def test_flags_set_in_c_order():
    from ftlab.runtime.pylifecycle import hangs_at_shutdown

    f = Finalization("3.14")
    with pytest.raises(ValueError, match="set in RUNNING"):
        f.set_interp_finalizing("main")
    f.advance(Phase.WAIT_FOR_THREADS)
    f.advance(Phase.ATEXIT)
    with pytest.raises(ValueError, match="before the interpreter's"):
        f.set_runtime_finalizing("main")
    f.set_interp_finalizing("main")
    assert f.phase == Phase.FINALIZING and f.finalizing
    assert f.runtime_get_finalizing() is None       # between the two stores
    f.set_runtime_finalizing("main")
    assert f.runtime_get_finalizing() == "main" and not f.finalized
    f.advance(Phase.FINI)
    assert f.finalized
    assert [hangs_at_shutdown(v) for v in ("3.13.0", "3.14", "main")] == [False, True, True]
