"""The machine: virtual threads as coroutines, driven one step at a time by a strategy.

A model thread is an `async def` coroutine. Every point where another thread may run is an
`await` on a scheduling point (an atomic, a lock or event operation, spawn, join, an explicit
yield); the code between two such awaits is one atomic step. A plain `def` never yields.

The run loop is the only driver. At each step it takes the runnable threads (kept sorted by
thread index); when there is more than one it asks the strategy's chooser and records the
choice. It then resumes the chosen coroutine, which performs its pending operation and runs on
to its next scheduling point. A new thread runs up to its first scheduling point inside the step
that spawns it (nothing before that point can be observed without a race); a thread's exit ends
its last step.

Invariants:
- exactly one thread runs at a time, `current`;
- `runnable` holds exactly the threads in state RUNNABLE, sorted by index;
- a run is a pure function of (program, chooser): no wall clock, no `id()`, no set order;
- no runnable thread while one is unfinished is a deadlock; more than `max_steps` steps is a
  livelock; a `ViolationError` raised anywhere in a step stops the run.
"""

from __future__ import annotations

import bisect
import dis
import re
import sys
import traceback
import types
from typing import Any, Callable, Coroutine

from ftlab.sim.atomics import Memory
from ftlab.sim.dpor import thread_key
from ftlab.sim.race import RaceDetector
from ftlab.sim.schedule import ScheduleError, thread_letter
from ftlab.sim.violation import Violation, ViolationError

RUNNABLE, BLOCKED, DONE = 0, 1, 2


class Event:
    """One entry of the trace: `step`, the thread index and what happened, in words."""

    __slots__ = ("step", "thread", "what", "func", "call", "result")

    def __init__(self, step: int, thread: int, what: str, func: str = "", call: int = 0) -> None:
        self.step = step
        self.thread = thread
        self.what = what
        self.func = func    # the modelled C function the step is in ("" outside the runtime)
        self.call = call    # which call of `func` (numbered in trace order; 0: not a C function)
        self.result = ""    # on the call's last step: what the call returned, in words

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Event) and self.step == other.step
                and self.thread == other.thread and self.what == other.what)

    def __repr__(self) -> str:
        return f"Event({self.step}, {thread_letter(self.thread)}, {self.what!r})"


_RUNTIME_DIR = "/ftlab/runtime/"
_SIM_DIR = "/ftlab/sim/"


_C_NAME = re.compile(r"^(?:CPython's |mimalloc's |[^`\n]*\()?`([A-Za-z_][A-Za-z0-9_]*)")


def c_name_of(code: types.CodeType) -> str:
    """The C function a runtime function models, from its docstring's opening
    ("`_Py_TryIncRefShared`: ...", "CPython's `_mi_heap_init_ex`: ...",
    "Allocate ... (`_PyObject_New` / ...)"); "" when the docstring names none."""
    doc = code.co_consts[0] if code.co_consts and isinstance(code.co_consts[0], str) else ""
    m = _C_NAME.match(doc)
    return m.group(1) if m else ""


def _c_function(cache: dict[types.CodeType, str]) -> tuple[str, types.FrameType | None]:
    """The modelled C function a traced step is in: the innermost function of the runtime on
    the Python stack that names its C function (`c_name_of`), with its frame (the call), else
    the innermost function's own name (a runtime helper, or the scenario's thread function) and
    no frame. A step runs inside its thread's coroutine, so the Python stack is the modelled C
    stack."""
    f = sys._getframe(2)
    first = ""
    while f is not None:
        code = f.f_code
        if _RUNTIME_DIR in code.co_filename:
            name = cache.get(code)
            if name is None:
                name = cache[code] = c_name_of(code)
            if name:
                return name, f
        elif _SIM_DIR not in code.co_filename:
            return first or code.co_name, None   # the scenario's code called the runtime helper
        if not first and _SIM_DIR not in code.co_filename:
            first = code.co_name            # a runtime helper with no C name of its own
        f = f.f_back
    return first, None


_RETURNS = frozenset(dis.opmap[op] for op in ("RETURN_VALUE", "RETURN_CONST") if op in dis.opmap)
_YIELD_VALUE = dis.opmap["YIELD_VALUE"]


class VThread:
    """A virtual thread. `vc` is its vector clock for the race detector."""

    __slots__ = ("machine", "mem", "index", "name", "label", "coro", "state", "wait", "vc",
                 "joiners", "result", "__weakref__")

    def __init__(self, machine: "Machine", index: int, name: str) -> None:
        self.machine = machine
        self.mem = machine.mem
        self.index = index
        self.name = name
        # "A:name", as reports and oracles name the thread (once: the oracles ask for it on
        # every allocation; issue 13)
        self.label = f"{thread_letter(index)}:{name}"
        self.coro: Coroutine[Any, Any, Any] | None = None
        self.state = RUNNABLE
        self.wait = ""
        self.vc: list[int] = []
        self.joiners: list[VThread] = []
        self.result: Any = None

    def __repr__(self) -> str:
        return f"<VThread {self.label} {('runnable', 'blocked', 'done')[self.state]}>"

    @property
    def shared(self) -> Any:
        return self.machine.shared

    def finished(self) -> bool:
        """Whether the thread has ended, as another thread's step sees it (a read that DPOR
        orders with the thread's exit)."""
        m = self.machine
        m.note_sync(thread_key(self.index), False)
        return self.state == DONE

    # Scheduling points of the thread itself.

    @types.coroutine
    def yield_now(self):
        yield

    @types.coroutine
    def spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any,
              name: str | None = None):
        """Start `fn(thread, *args)`; the new thread happens after everything `self` did."""
        yield
        return self.machine.spawn(lambda t: fn(t, *args), name, parent=self)

    @types.coroutine
    def join(self, other: "VThread"):
        yield
        m = self.machine
        m.note_sync(thread_key(other.index), False)
        while other.state != DONE:
            other.joiners.append(self)
            m.block(self, f"join {other.label}")
            yield
            m.note_sync(thread_key(other.index), False)
        if m.race is not None:
            m.race.acquire(self, other.vc)
        if m.c11 is not None:
            m.c11.acquire_view(self, m.c11.release_view(other))
        if m.trace is not None:
            m.record(self, f"joined {other.label}")
        return other.result


class Machine:
    """Owns the threads and the run loop of one run."""

    def __init__(self, *, max_steps: int = 20_000, race: RaceDetector | None = None,
                 trace: bool = False, memory_model: str = "sc") -> None:
        self.threads: list[VThread] = []
        self.runnable: list[VThread] = []
        self.current: VThread | None = None
        self.steps = 0
        self.max_steps = max_steps
        self.choices: list[int] = []
        self.preemptions = 0
        self.violation: Violation | None = None
        self.race = race
        self.trace: list[Event] | None = [] if trace else None
        self.switches = 0  # steps that ran a different thread than the step before
        # Called after every step that did not already fail (checked-mode oracles); it reports
        # a broken invariant by raising ViolationError.
        self.after_step: Callable[[VThread], None] | None = None
        # c11 (ftlab/sim/c11.py): the memory whose views the spawn, join, lock and event
        # edges carry; None under sequential consistency, so that path costs nothing more.
        self.c11: Any = None
        self._chooser: Any = None
        if memory_model == "c11":
            from ftlab.sim.c11 import C11Memory
            self.mem = self.c11 = C11Memory(self)
        elif memory_model == "sc":
            self.mem = Memory(self)
        else:
            raise ValueError(f"unknown memory model {memory_model!r} (known: sc, c11)")
        # Traced runs only: names an address (`obj#3.ob_ref_shared`), None where it cannot.
        self.namer: Callable[..., str | None] | None = None
        self._c_names: dict[types.CodeType, str] = {}       # code -> modelled C function
        self._calls: dict[types.FrameType, list[Any]] = {}  # live traced calls: [number, last]
        self._ncalls = 0
        self.shared: Any = None
        # DPOR (ftlab/sim/dpor.py): the chooser that records each step's footprint, or None
        self.dpor: Any = None
        self.serials = 0        # mutexes and events made so far (their DPOR keys)
        self.pruned = False     # the strategy stopped the run (DPOR: every thread asleep)
        self.last: VThread | None = None    # the thread of the run's last step
        if race is not None:
            race.machine = self
            self.mem.on_plain_access = race.plain
        if trace:
            self.mem.on_plain_access = self._traced_plain_access

    def _traced_plain_access(self, addr: int, width: int, is_write: bool) -> None:
        if self.current is not None:
            self.record(self.current,
                        f"{'write' if is_write else 'read'} {width} {self.addr_words(addr)}")
        if self.race is not None:
            self.race.plain(addr, width, is_write)

    # -----------------------------------------------------------------------------------------
    # Threads

    def spawn(self, start: Callable[[VThread], Coroutine[Any, Any, Any]], name: str | None = None,
              parent: VThread | None = None, after_all: bool = False) -> VThread:
        """Create a thread and run it to its first scheduling point (a plain call: the caller's
        step, if any, continues afterwards). `after_all`: the thread happens after everything
        every earlier thread did, as one started after joining them all (finalization)."""
        t = VThread(self, len(self.threads), name or f"T{len(self.threads)}")
        self.threads.append(t)
        if self.race is not None:
            if self.race.solo is not None and parent is not self.race.solo and not after_all:
                raise RuntimeError(f"{t.label} started by set-up code while {self.race.solo.label} "
                                   "runs alone after every other thread: the race detector kept "
                                   "no record of that thread's accesses to order it with")
            self.race.on_spawn(parent, t)
            self.race.solo = None
            if after_all:
                for u in self.threads[:-1]:
                    self.race.acquire(t, u.vc)
                if all(u.state == DONE for u in self.threads[:-1]):
                    self.race.solo = t      # after everything, alone (RaceDetector.solo)
        if self.c11 is not None:
            self.c11.on_spawn(parent, t, after_all)
        self.note_sync(thread_key(t.index), True)
        t.coro = start(t)
        if self.trace is not None:
            self.record(t, f"start {t.name}" + (f" (by {parent.label})" if parent else ""))
        saved = self.current
        self.current = t
        try:
            self._resume(t)
        finally:
            self.current = saved
        if t.state == RUNNABLE:
            bisect.insort(self.runnable, t, key=_index)
        return t

    def note_sync(self, key: int, write: bool) -> None:
        """A mutex, event, waitable or thread operation of the step in progress (DPOR's key
        for it: `ftlab/sim/dpor.py`)."""
        if self.dpor is not None:
            self.dpor.sync(key, write)

    def note_access(self, addr: int, width: int, is_write: bool) -> None:
        """An access to simulated memory that no hook sees (a parking lot's raw check and
        flag, under its bucket lock in C): DPOR must still order it."""
        if self.dpor is not None:
            self.dpor.access(addr, width, is_write)

    def block(self, t: VThread, wait: str) -> None:
        """Take `t` off the runnable list; it must yield right after."""
        assert t.state == RUNNABLE, "only a runnable thread can block"
        t.state = BLOCKED
        t.wait = wait
        self.runnable.remove(t)
        if self.trace is not None:
            self.record(t, f"blocks: {wait}")

    def wake(self, t: VThread) -> None:
        if t.state == BLOCKED:
            t.state = RUNNABLE
            t.wait = ""
            bisect.insort(self.runnable, t, key=_index)

    def _exit(self, t: VThread, result: Any) -> None:
        t.state = DONE
        t.result = result
        if t in self.runnable:
            self.runnable.remove(t)
        if self.race is not None:
            self.race.on_exit(t)
        self.note_sync(thread_key(t.index), True)
        if self.trace is not None:
            self.record(t, "exit")
        for j in t.joiners:
            self.wake(j)
        t.joiners.clear()

    def end_thread(self, t: VThread, why: str) -> None:
        """End `t` where it is, running none of its code (a thread the process exit kills:
        issue 11, `Runtime.finalize_ex`). Called for a finished thread too: had the order
        been otherwise, this step would have ended it (DPOR's dependency)."""
        if self.dpor is not None:
            self.dpor.ended(t, t.state != DONE and t in self.runnable)
        if t.state == DONE:
            return
        if self.trace is not None:
            self.record(t, why)
        t.state = DONE
        if t in self.runnable:
            self.runnable.remove(t)
        t.joiners.clear()

    def record(self, t: VThread | None, what: str) -> None:
        if self.trace is not None:
            if t is None:
                self.trace.append(Event(self.steps, -1, what))
                return
            func, frame = _c_function(self._c_names)
            call = 0
            if frame is not None:
                c = self._calls.get(frame)
                if c is None:
                    self._ncalls += 1
                    c = self._calls[frame] = [self._ncalls, None]
                call = c[0]
            e = Event(self.steps, t.index, what, func, call)
            if frame is not None:
                c[1] = e
            self.trace.append(e)

    # -- the results of the traced calls (issue 16: `▸ _Py_TryIncrefCompare -> 0`) --
    # A profile hook, installed only around a traced run (`results_hook`), sees each frame
    # return; a frame that holds steps of the trace (`_calls`) leaves its return value, in
    # words, on its last step. A coroutine frame also "returns" when it suspends at an `await`:
    # only a RETURN_VALUE is the call's end. Untraced runs never install it; a traced replay
    # costs some 15% more with it (sys.setprofile: a profiler of the caller is set aside
    # for the run and restored after, `ftlab/explore/execute.py`).

    def results_hook(self, frame: types.FrameType, event: str, arg: Any) -> None:
        if event != "return":
            return
        c = self._calls.get(frame)
        if c is None:
            return
        op = frame.f_code.co_code[frame.f_lasti]
        if op == _YIELD_VALUE:
            return                                  # suspended, not returned
        del self._calls[frame]
        if op in _RETURNS and c[1] is not None:     # else it raised: no result
            c[1].result = self.result_words(arg)

    def result_words(self, value: Any) -> str:
        """A C function's result in words: an int, a pointer with its name; "" for a void
        function and for what has no C value (no repr: it may hold an address)."""
        if type(value) is bool:
            return str(int(value))
        if type(value) is int:
            return self.addr_words(value, True) if value >= 0x10000 else str(value)
        if type(value) is tuple and value and all(type(v) in (int, bool) for v in value):
            return "(" + ", ".join(self.result_words(v) for v in value) + ")"
        return ""

    def addr_words(self, addr: int, pointer: bool = False) -> str:
        """`[addr]`, with the address's symbolic name when a namer knows it (traced runs);
        `pointer`: a pointer value, named by the object or block it starts."""
        if self.namer is None:
            return f"[{addr:#x}]"
        name = self.namer(addr, pointer=pointer) if pointer else self.namer(addr)
        return f"{name} [{addr:#x}]" if name else f"?[{addr:#x}]"   # "?": named after the run

    # -----------------------------------------------------------------------------------------
    # The run loop

    def decide(self, n: int) -> int:
        """A data decision of the c11 memory model (which store a load reads, where a store
        goes in modification order): one of `n` > 1 candidates, asked of the strategy like a
        thread choice and recorded in the schedule string as candidate index 0..n-1."""
        if n > len(_CANDIDATES):
            raise ValueError(f"{n} candidates exceed the {len(_CANDIDATES)} a schedule encodes")
        c = self._chooser.choose(_CANDIDATES[:n], None).index
        self.choices.append(c)
        return c

    def _resume(self, t: VThread) -> bool:
        """Run one step of `t`; False when the run must stop (a violation)."""
        try:
            t.coro.send(None)
        except StopIteration as stop:
            self._exit(t, stop.value)
        except BaseException as e:
            if not self._resume_failed(t, e):
                raise
            return False
        return True

    def _resume_failed(self, t: VThread, e: BaseException) -> bool:
        """Record what a step raised; False for what must propagate (a schedule error,
        an interrupt)."""
        if isinstance(e, ViolationError):
            self.fail(Violation(e.kind, e.message, self.steps, t.label, e.details))
            return True
        if isinstance(e, ScheduleError) or not isinstance(e, Exception):
            return False
        # a bug in the model or the scenario: report it, don't hide it
        tb = traceback.extract_tb(e.__traceback__)
        details = tuple(f"{f.filename}:{f.lineno} in {f.name}" for f in tb[-4:])
        self.fail(Violation("crash", f"{type(e).__name__}: {e}", self.steps, t.label, details))
        return True

    def _check_step(self, t: VThread) -> bool:
        try:
            self.after_step(t)
        except ViolationError as e:
            self.fail(Violation(e.kind, e.message, self.steps, t.label, e.details))
            return False
        return True

    def _run_solo(self, t: VThread) -> bool:
        """The run loop's steps while `t`, which ran the step before, is the only runnable
        thread: no decision, no preemption, no switch, so each step is the step count and the
        resumption alone. Returns when another thread becomes runnable, `t` blocks or ends, or
        one step short of the bound (the run loop then takes the livelock step); False when
        the run must stop (a violation)."""
        runnable = self.runnable
        send = t.coro.send
        steps = self.steps
        max_steps = self.max_steps
        while steps < max_steps:
            steps += 1
            self.steps = steps
            try:
                send(None)
            except StopIteration as stop:
                self._exit(t, stop.value)
                return True
            except BaseException as e:
                if not self._resume_failed(t, e):
                    raise
                return False
            if len(runnable) != 1 or runnable[0] is not t:
                return True
        return True

    def fail(self, v: Violation) -> None:
        if self.violation is None:
            self.violation = v
            if self.trace is not None:
                self.trace.append(Event(v.step, -1, f"VIOLATION {v.kind}: {v.message}"))

    def run(self, chooser) -> None:
        """Drive the threads to the end, a violation, a deadlock or the step bound."""
        if self.violation is not None:
            chooser.finish()    # set-up failed: an execution of no step
            return
        attach = getattr(chooser, "attach", None)
        if attach is not None:
            attach(self)        # a chooser that watches every step (DPOR)
        runnable = self.runnable
        choose = chooser.choose
        self._chooser = chooser
        # A uniform chooser is inlined: this is the hottest loop of the tool.
        uniform = getattr(chooser, "uniform", None)
        choices = self.choices
        max_steps = self.max_steps
        after_step = self.after_step
        steps = self.steps
        switches = 0
        prev: VThread | None = None
        t: VThread | None = None
        while runnable:
            n = len(runnable)
            if n == 1:
                t = runnable[0]
                if t is prev and after_step is None and steps < max_steps:
                    # Nothing to choose: run to the next decision (issue 13).
                    if not self._run_solo(t):
                        break
                    steps = self.steps
                    continue
            else:
                t = runnable[int(uniform() * n)] if uniform is not None else choose(runnable, prev)
                if t is None:
                    self.pruned = True      # the strategy needs no more of this run
                    break
                choices.append(t.index)
                if t is not prev and prev is not None and prev.state == RUNNABLE:
                    self.preemptions += 1
            if t is not prev:
                switches += 1
                self.current = t
            steps += 1
            self.steps = steps
            if steps > max_steps:
                self.fail(Violation(
                    "livelock", f"no end after {max_steps} steps", steps, t.label,
                    tuple(f"{u.label} runnable" for u in runnable)))
                break
            try:
                t.coro.send(None)
            except StopIteration as stop:
                self._exit(t, stop.value)
            except BaseException as e:
                if not self._resume_failed(t, e):
                    raise
                break
            if after_step is not None:
                # _check_step inlined: it runs after every step of every execution
                try:
                    after_step(t)
                except ViolationError as e:
                    self.fail(Violation(e.kind, e.message, self.steps, t.label, e.details))
                    break
            prev = t
        else:
            stuck = [u for u in self.threads if u.state != DONE]
            if stuck:
                self.fail(Violation(
                    "deadlock", f"no runnable thread, {len(stuck)} unfinished", self.steps, None,
                    tuple(f"{u.label} waits for {u.wait}" for u in stuck)))
        self.switches += switches
        self.current = None
        self.last = t if t is not None else prev
        chooser.finish()


class _Candidate:
    """One candidate of a data decision, shaped like a thread for the choosers."""

    __slots__ = ("index", "name", "state")

    def __init__(self, index: int) -> None:
        self.index = index
        self.name = f"candidate {index}"
        self.state = RUNNABLE


_CANDIDATES = tuple(_Candidate(i) for i in range(52))


def _index(t: VThread) -> int:
    return t.index
