"""Interpreter finalization phases (Python/pylifecycle.c `Py_FinalizeEx`) and the points where
3.13 and 3.14 raise `PythonFinalizationError` (gh-114570, PR #115352; 3.13+).

`Py_FinalizeEx` on the main thread goes through these phases, in order:

1. RUNNING: nothing is finalizing.
2. WAIT_FOR_THREADS: `threading._shutdown` joins the non-daemon threads.
3. ATEXIT: the atexit callbacks run.
4. FINALIZING: `_PyInterpreterState_SetFinalizing(interp, tstate)` then
   `_PyRuntimeState_SetFinalizing(runtime, tstate)` record the finalizing thread state; from here
   on `_PyInterpreterState_GetFinalizing` and `_PyRuntimeState_GetFinalizing` (`Py_IsFinalizing`)
   return it. Module teardown runs `__del__` methods in this phase.
5. FINI: thread states, heaps and QSBR are torn down (`_PyMem_FiniDelayed` and friends).

gh-113964 (PR #116677, 3.13) made thread start test the *interpreter* flag and set it only after
phases 2 and 3, so a non-daemon thread or an atexit callback can still start threads; code that
runs later (a `__del__` during teardown, a daemon thread) gets the error. Invariants: the phases
only move forward; the finalizing thread state is set once, by the thread that finalizes; both
getters return None before phase 4.

Raise points (`raise_points(version)`): thread start, `os.fork`/`fork1`/`forkpty`,
`_posixsubprocess.fork_exec` with a `preexec_fn` (3.13 and 3.14), and in 3.14 joining a thread
that is still running (`ThreadHandle.join`, tested with `Py_IsFinalizing()`, gh-123940). The
`_winapi.Overlapped` deallocation with I/O in flight only reports an unraisable error.
"""

from __future__ import annotations

import enum
from typing import Any


class PythonFinalizationError(RuntimeError):
    """`PyExc_PythonFinalizationError`: an operation blocked during interpreter shutdown. A
    `RuntimeError` subclass, so code that caught the pre-3.13 `RuntimeError` still works."""


class Phase(enum.IntEnum):
    RUNNING = 0
    WAIT_FOR_THREADS = 1
    ATEXIT = 2
    FINALIZING = 3
    FINI = 4


# operation -> (message, which flag it tests, first version that raises)
_RAISE_POINTS: dict[str, tuple[str, str, str]] = {
    "thread_start": ("can't create new thread at interpreter shutdown", "interp", "3.13.0"),
    "fork": ("can't fork at interpreter shutdown", "interp", "3.13.0"),
    "fork1": ("can't fork at interpreter shutdown", "interp", "3.13.0"),
    "forkpty": ("can't fork at interpreter shutdown", "interp", "3.13.0"),
    "popen_preexec_fn": ("preexec_fn not supported at interpreter shutdown", "interp", "3.13.0"),
    "join_running_thread": ("cannot join thread at interpreter shutdown", "runtime", "3.14"),
}


def _version_key(v: str) -> tuple[int, ...]:
    if v == "main":                     # CPython main (3.15 development): after every release
        return (3, 15)
    return tuple(int(x) for x in v.split("."))


def raise_points(version: str) -> tuple[str, ...]:
    """The operations that raise PythonFinalizationError in `version`."""
    return tuple(op for op, (_, _, since) in _RAISE_POINTS.items()
                 if _version_key(version) >= _version_key(since))


def hangs_at_shutdown(version: str) -> bool:
    """Whether a thread that must exit at shutdown hangs (3.14, `PyThread_hang_thread`,
    gh-87135) rather than exits (3.13, `PyThread_exit_thread`)."""
    return _version_key(version) >= (3, 14)


class Finalization:
    """The finalization state of one runtime with one interpreter (`_PyRuntimeState._finalizing`
    and `PyInterpreterState._finalizing`)."""

    __slots__ = ("version", "phase", "_interp_finalizing", "_runtime_finalizing")

    def __init__(self, version: str) -> None:
        self.version = version
        self.phase = Phase.RUNNING
        self._interp_finalizing: Any = None
        self._runtime_finalizing: Any = None

    def advance(self, phase: Phase, tstate: Any = None) -> None:
        """Move to `phase`; FINALIZING records `tstate` as the finalizing thread."""
        if phase != self.phase + 1:
            raise ValueError(f"finalization cannot go from {self.phase.name} to {phase.name}")
        if phase == Phase.FINALIZING:
            if tstate is None:
                raise ValueError("the FINALIZING phase needs the finalizing thread state")
            # _PyInterpreterState_SetFinalizing first, then _PyRuntimeState_SetFinalizing.
            self._interp_finalizing = tstate
            self._runtime_finalizing = tstate
        self.phase = phase

    # issue 11: `finalize_ex` sets the two flags in separate steps, as C does, with the world
    # stopped; the phase becomes FINALIZING with the first.
    def set_interp_finalizing(self, tstate: Any) -> None:
        """`_PyInterpreterState_SetFinalizing(interp, tstate)`."""
        if self.phase != Phase.ATEXIT:
            raise ValueError(f"the interpreter's finalizing flag is set in {self.phase.name}, "
                             "not after ATEXIT")
        self._interp_finalizing = tstate
        self.phase = Phase.FINALIZING

    def set_runtime_finalizing(self, tstate: Any) -> None:
        """`_PyRuntimeState_SetFinalizing(runtime, tstate)`, after the interpreter's."""
        if self._interp_finalizing is not tstate:
            raise ValueError("the runtime's finalizing flag is set before the interpreter's")
        self._runtime_finalizing = tstate

    def interp_get_finalizing(self) -> Any:
        """`_PyInterpreterState_GetFinalizing`: the finalizing thread state, or None."""
        return self._interp_finalizing

    def runtime_get_finalizing(self) -> Any:
        """`_PyRuntimeState_GetFinalizing`; `Py_IsFinalizing()` is `is not None`."""
        return self._runtime_finalizing

    @property
    def finalized(self) -> bool:
        """The FINI phase is reached: a thread ran `Py_FinalizeEx` (issue 11)."""
        return self.phase == Phase.FINI

    @property
    def finalizing(self) -> bool:
        return self._interp_finalizing is not None

    def check(self, operation: str, *, target_running: bool = True) -> None:
        """Raise PythonFinalizationError if `operation` is blocked now in this version.
        `target_running` is for `join_running_thread`: a thread that has already exited can be
        joined."""
        if operation not in _RAISE_POINTS:
            raise ValueError(f"unknown operation {operation!r}")
        if operation not in raise_points(self.version):
            return
        message, flag, _ = _RAISE_POINTS[operation]
        if operation == "join_running_thread" and not target_running:
            return
        held = self._interp_finalizing if flag == "interp" else self._runtime_finalizing
        if held is not None:
            raise PythonFinalizationError(message)
