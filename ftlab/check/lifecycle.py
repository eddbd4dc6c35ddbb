"""The `lifecycle` oracle (issue 11): once a thread has started finalizing the runtime, no
other thread attaches.

`Py_FinalizeEx` stops the world, sets the interpreter's and then the runtime's finalizing
thread state, unlinks every other thread state (`_PyThreadState_RemoveExcept`) and only then
starts the world again, which restarts the finalizing thread alone. A daemon thread or a
thread whose `thread_run` begins late must leave at `_PyThreadState_MustExit` (it exits in
3.13, hangs in 3.14) and never win its status CAS again: from then on its thread state is
deleted (3.13 frees it) and the interpreter is torn down under it. The oracle watches each
successful attach (`thread_attached`, sent right after the CAS) and fails if the runtime's
finalizing thread state is set and is another thread. It keeps no state of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ftlab.runtime.observer import Observer
from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.runtime.pystate import Runtime


class LifecycleOracle(Observer):
    def __init__(self, rt: "Runtime") -> None:
        self.rt = rt

    def thread_attached(self, t: Any) -> None:
        fin = self.rt.lifecycle.runtime_get_finalizing()
        if fin is not None and fin is not t:
            raise ViolationError(
                "lifecycle", f"{t.vt.label} attached after {fin.vt.label} started finalizing "
                             "the runtime: it runs Python on a thread state the interpreter "
                             "has let go of")


def install(rt: "Runtime") -> None:
    rt.add_observer(LifecycleOracle(rt))
