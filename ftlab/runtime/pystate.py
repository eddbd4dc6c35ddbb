"""Runtime and thread states (`Python/pystate.c`): who owns what in one run.

`Runtime` owns everything of one run: the configuration, the machine (address space,
threads, scheduler) and, as the model grows, the interpreter's allocator, QSBR and GC state.
Nothing lives in module globals, so two runtimes never share anything.

`ThreadState` is what a model thread's code receives as `t`. It wraps the machine's virtual
thread; its awaitable methods are the scheduling points a thread can reach.
"""

from __future__ import annotations

import types
from typing import Any, Awaitable, Callable, Coroutine

from ftlab.config import Config
from ftlab.runtime.observer import Observer, Observers
from ftlab.sim.machine import Machine, VThread
from ftlab.sim.race import RaceDetector
from ftlab.sim.strategies import RoundRobin
from ftlab.sim.sync import Event, Mutex


class Runtime:
    def __init__(self, config: Config | None = None, *, race_locations: bool = False) -> None:
        self.config = config or Config()
        c = self.config
        race = RaceDetector(locations=race_locations) if c.race_detection else None
        self.machine = Machine(max_steps=c.max_steps, race=race, trace=c.trace)
        self.mem = self.machine.mem
        self.tstates: list[ThreadState] = []
        # The oracles' view of the runtime; a no-op until `add_observer`.
        self.observer: Observer = Observer()

    def add_observer(self, observer: Observer) -> None:
        if type(self.observer) is Observer:
            self.observer = observer
        elif isinstance(self.observer, Observers):
            self.observer.add(observer)
        else:
            self.observer = Observers([self.observer, observer])

    def mutated(self, name: str) -> bool:
        return name in self.config.mutations

    @property
    def shared(self) -> Any:
        return self.machine.shared

    @shared.setter
    def shared(self, value: Any) -> None:
        self.machine.shared = value

    def mutex(self, name: str = "mutex") -> Mutex:
        return Mutex(self.machine, name)

    def event(self, name: str = "event") -> Event:
        return Event(self.machine, name)

    def start_thread(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any,
                     name: str | None = None, parent: "ThreadState | None" = None) -> "ThreadState":
        """Create a thread running `fn(tstate, *args)` (a plain call, for set-up)."""
        holder: list[ThreadState] = []

        def start(vt: VThread) -> Coroutine[Any, Any, Any]:
            ts = ThreadState(self, vt)
            holder.append(ts)
            self.tstates.append(ts)
            return _bootstrap(ts, fn, args)

        self.machine.spawn(start, name, parent=parent.vt if parent is not None else None)
        return holder[0]

    def run_main(self, fn: Callable[["ThreadState"], Awaitable[Any]]) -> Any:
        """Run a one-thread program to completion and return its result."""
        ts = self.start_thread(fn, name="main")
        self.machine.run(RoundRobin().execution(0))
        if self.machine.violation is not None:
            from ftlab.sim.violation import ViolationError
            v = self.machine.violation
            raise ViolationError(v.kind, v.message, v.details)
        return ts.vt.result


async def _bootstrap(ts: "ThreadState", fn: Callable[..., Coroutine[Any, Any, Any]],
                     args: tuple[Any, ...]) -> Any:
    """`thread_run` in `Modules/_threadmodule.c`: bind the thread state, run, tear down.
    Teardown is awaited model code (it can reach scheduling points), so it is not in a
    `finally`: a violation ends the run where it happened."""
    ts.bind()
    result = await fn(ts, *args)
    await ts.exit()
    return result


class ThreadState:
    __slots__ = ("rt", "vt", "mem")

    def __init__(self, rt: Runtime, vt: VThread) -> None:
        self.rt = rt
        self.vt = vt
        self.mem = rt.mem

    @property
    def name(self) -> str:
        return self.vt.name

    def bind(self) -> None:
        """Per-thread runtime state, before the thread's first step (`_PyThreadState_Bind`)."""

    async def exit(self) -> None:
        """Thread teardown after its function returns (`PyThreadState_Clear` and
        `_PyThreadState_DeleteCurrent`): the place where heaps are abandoned and the thread
        leaves QSBR."""

    @property
    def shared(self) -> Any:
        return self.rt.machine.shared

    def yield_now(self):
        return self.vt.yield_now()

    @types.coroutine
    def spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any,
              name: str | None = None):
        yield
        return self.rt.start_thread(fn, *args, name=name, parent=self)

    def join(self, other: "ThreadState"):
        return self.vt.join(other.vt)
