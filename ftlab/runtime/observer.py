"""What the runtime tells the oracles (DESIGN §1): the runtime never imports `ftlab.check`.

The runtime calls these methods at the points where its ghost-relevant state changes; the
default does nothing, so an unchecked run pays one no-op call. `ftlab.check` subclasses
`Observer` and installs instances with `Runtime.add_observer`. A hook reports a broken
invariant by raising `ViolationError`. Each mechanism adds the events it needs here, with
no-op defaults, next to the others of its source file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ftlab.runtime.pystate import ThreadState


class Observer:
    # -- threads (pystate.c) --
    def thread_started(self, t: "ThreadState") -> None: ...
    def thread_exited(self, t: "ThreadState") -> None: ...

    # -- mimalloc (alloc.c, free.c) --
    def block_allocated(self, t: "ThreadState", ptr: int, size: int, heap: Any) -> None: ...
    def block_freeing(self, t: "ThreadState", ptr: int) -> None: ...  # before the free runs
    def block_freed(self, t: "ThreadState", ptr: int) -> None: ...


class Observers(Observer):
    """Fans each event out to several observers, in the order they were added. The dispatch
    functions are built when an observer is added, not on every event."""

    def __init__(self, observers: list[Observer]) -> None:
        self.observers: list[Observer] = []
        for o in observers:
            self.add(o)

    def add(self, observer: Observer) -> None:
        self.observers.append(observer)
        for name in _EVENTS:
            methods = tuple(getattr(o, name) for o in self.observers
                            if getattr(type(o), name) is not getattr(Observer, name))
            setattr(self, name, _fan_out(methods))


def _fan_out(methods):
    if not methods:
        return _ignore
    if len(methods) == 1:
        return methods[0]

    def fan_out(*args, **kwargs):
        for m in methods:
            m(*args, **kwargs)
    return fan_out


def _ignore(*args, **kwargs) -> None:
    pass


# Every event name: the public methods of Observer (computed when the module is imported,
# after every mechanism has added its methods above).
_EVENTS = tuple(n for n in vars(Observer) if not n.startswith("_"))
