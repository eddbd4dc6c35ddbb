"""`_winapi.BatchedWaitForMultipleObjects` (Modules/_winapi.c, 3.13+, gh-89240 / PR #107873).

Win32 `WaitForMultipleObjects` takes at most MAXIMUM_WAIT_OBJECTS = 64 handles. The batched
wait splits a sequence of up to 63 x 63 = 3969 handles into batches of 63 (one slot of each
batch is kept for the shared cancel event) and:

- wait-all: waits on each batch in turn with the remaining time and, on the main thread, polls
  the Ctrl-C event after each satisfied batch. Not atomic across batches: a later batch may
  time out after an earlier one was satisfied.
- wait-any: starts one helper thread per batch, each waiting on its batch plus the cancel event
  (a manual-reset event, initially clear). A helper stores the index its wait returned in its
  batch record and exits; only a failed wait makes the helper itself set the cancel event. The
  caller waits on the helper thread handles (plus the Ctrl-C event on the main thread) with the
  caller's timeout, so the first helper to exit wakes it; then, whatever happened, it sets the
  cancel event, which wakes every other helper, and waits for *every* helper to exit before it
  reads the results and frees the batch records. The result lists, in batch order,
  `handle_base + result` of each batch whose helper was woken by a real handle: at most one
  index per batch, possibly fewer than are signalled.

As read at python/cpython a7703ea (and unlike the reference note's paraphrase): a helper woken
by a real handle does not set the cancel event (the caller does), and in wait-any the Ctrl-C
slot is compared with `WAIT_OBJECT_0 + handle_count` after `handle_count` already counts it, so
a Ctrl-C there is never reported as an error: the wait ends, the helpers are cancelled, and the
call returns what the batches recorded (usually `[]`). The model does the same; a Ctrl-C is
raised by the wait-all path only.

Invariants the model checks: no helper outlives the call (a helper that touches its batch
record after the caller freed it is a use-after-free, the C consequence), and no wait is lost
(a caller or helper left blocked is a deadlock, which the machine reports).

Model waitables: `WaitEvent` (a manual-reset Win32 event, which can be closed), `ThreadHandle`
(signalled when its model thread has exited) and `ProcessHandle` (signalled when the model
process exits, with an exit code). Helper threads are bare machine threads (the C helpers never
run Python), started with `VThread.spawn` and joined through their handles, so the explorer
schedules them like any other thread.

Time: the model has no clock. A finite, non-zero timeout is a scheduling decision: the waiter
checks its objects, and if they are not signalled it stays runnable for one more step; when the
scheduler next resumes it, it checks again and, if still unsatisfied, the wait times out. The
explorer thus chooses how much of the other threads' work happens before the deadline, which
covers every real outcome (signalled in time, timed out) without a wall clock, and a run stays a
pure function of its schedule. A zero timeout polls once; INFINITE blocks until signalled.
"""

from __future__ import annotations

import operator
import types
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ftlab.runtime.pystate import ThreadState
from ftlab.sim.dpor import event_key
from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.sim.machine import Machine, VThread

MAXIMUM_WAIT_OBJECTS = 64
# One slot of each batch holds the cancel event.
BATCH_SIZE = MAXIMUM_WAIT_OBJECTS - 1
MAX_HANDLES = BATCH_SIZE * BATCH_SIZE  # 3969
INFINITE = 0xFFFFFFFF
WAIT_OBJECT_0 = 0
WAIT_ABANDONED_0 = 0x80
WAIT_TIMEOUT = 0x102
WAIT_FAILED = 0xFFFFFFFF
ERROR_INVALID_HANDLE = 6
ERROR_WAIT_TIMEOUT = 258  # winerror of WAIT_TIMEOUT, mapped to TimeoutError


def _winerror(code: int, message: str) -> OSError:
    """The exception `PyErr_SetFromWindowsErr(code)` raises (its errno mapping for the two codes
    the wait produces: 258 is ETIMEDOUT, hence `TimeoutError`)."""
    import errno
    if code == ERROR_WAIT_TIMEOUT:
        e: OSError = TimeoutError(errno.ETIMEDOUT, message)
    else:
        e = OSError(errno.EINVAL, message)
    e.winerror = code  # type: ignore[attr-defined]
    return e


# ---------------------------------------------------------------------------------------------
# Model waitables

class Waitable:
    """A kernel object a thread can wait on: `signalled()` and a list of parked waiters."""

    __slots__ = ("machine", "name", "waiters", "closed", "serial")

    def __init__(self, machine: "Machine", name: str) -> None:
        self.machine = machine
        self.name = name
        self.waiters: list["VThread"] = []
        self.closed = False
        self.serial = machine.serials     # its DPOR key
        machine.serials += 1

    def touch(self, write: bool) -> None:
        """The step in progress reads (waits, polls) or changes (sets, resets, closes) the
        object: DPOR orders it with the others' (`ftlab/sim/dpor.py`)."""
        self.machine.note_sync(event_key(self.serial), write)

    def signalled(self) -> bool:
        raise NotImplementedError

    def add_waiter(self, t: "VThread") -> None:
        self.waiters.append(t)

    def remove_waiter(self, t: "VThread") -> None:
        if t in self.waiters:
            self.waiters.remove(t)

    def acquire_clock(self, t: "VThread") -> None:
        """A satisfied wait happens after what signalled the object."""

    def _wake_all(self) -> None:
        for w in self.waiters:
            self.machine.wake(w)
        self.waiters.clear()

    def close(self) -> None:
        """`CloseHandle`: later waits on the handle fail with ERROR_INVALID_HANDLE."""
        self.touch(True)
        self.closed = True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class WaitEvent(Waitable):
    """A manual-reset event (`CreateEventW(NULL, TRUE, FALSE, NULL)`): stays signalled until
    reset, so waiting does not consume it.

    Not `ftlab.sim.sync.Event`: that one-shot event has a single-object `wait` that parks on
    its own list and has neither `ResetEvent` nor `CloseHandle`; a Win32 event is waited on
    through `WaitForMultipleObjects` together with other kinds of handle, so it follows the
    `Waitable` protocol (a waiter registered on several objects at once, each able to wake
    it), and it can be reset and closed."""

    __slots__ = ("flag", "clock")

    def __init__(self, machine: "Machine", name: str = "event") -> None:
        super().__init__(machine, name)
        self.flag = False
        self.clock: list[int] | None = None

    def signalled(self) -> bool:
        return self.flag

    @types.coroutine
    def set(self):
        """`SetEvent`: one step; wakes every waiter."""
        yield
        self.set_now()

    def set_now(self) -> None:
        m = self.machine
        self.touch(True)
        self.flag = True
        if m.race is not None and m.current is not None:
            from ftlab.sim.race import vc_join
            clock = m.race.release(m.current)
            if self.clock is not None:
                vc_join(clock, self.clock)
            self.clock = clock
        if m.trace is not None:
            m.record(m.current, f"set {self.name}")
        self._wake_all()

    @types.coroutine
    def reset(self):
        """`ResetEvent`."""
        yield
        self.touch(True)
        self.flag = False

    def acquire_clock(self, t: "VThread") -> None:
        if self.machine.race is not None:
            self.machine.race.acquire(t, self.clock)


class ThreadHandle(Waitable):
    """The handle of a model thread: signalled once the thread has exited."""

    __slots__ = ("thread",)

    def __init__(self, thread: "VThread") -> None:
        super().__init__(thread.machine, f"thread {thread.label}")
        self.thread = thread

    def signalled(self) -> bool:
        return self.thread.finished()

    # The machine wakes a thread's joiners when it exits; a waiter parks there.
    def add_waiter(self, t: "VThread") -> None:
        self.thread.joiners.append(t)

    def remove_waiter(self, t: "VThread") -> None:
        if t in self.thread.joiners:
            self.thread.joiners.remove(t)

    def acquire_clock(self, t: "VThread") -> None:
        if self.machine.race is not None:
            self.machine.race.acquire(t, self.thread.vc)


class ProcessHandle(WaitEvent):
    """A child process handle: signalled when the process exits; `exit_code` as
    `GetExitCodeProcess` reports it."""

    __slots__ = ("exit_code",)

    def __init__(self, machine: "Machine", name: str = "process") -> None:
        super().__init__(machine, name)
        self.exit_code: int | None = None

    @types.coroutine
    def exit(self, code: int = 0):
        yield
        self.exit_code = code
        self.set_now()


# ---------------------------------------------------------------------------------------------
# WaitForMultipleObjects

@types.coroutine
def wait_for_multiple_objects(t: "VThread", objs: Sequence[Waitable], wait_all: bool,
                              timeout_ms: int):
    """Win32 `WaitForMultipleObjects` on model objects. Returns `(result, last_error)`:
    WAIT_OBJECT_0 + i (wait-any: the lowest signalled index; wait-all: 0), WAIT_TIMEOUT, or
    WAIT_FAILED with ERROR_INVALID_HANDLE for a closed handle."""
    if not 0 < len(objs) <= MAXIMUM_WAIT_OBJECTS:
        return WAIT_FAILED, 87  # ERROR_INVALID_PARAMETER
    yield
    m = t.machine
    deadline_passed = False
    while True:
        for o in objs:
            o.touch(False)
        if any(o.closed for o in objs):
            return WAIT_FAILED, ERROR_INVALID_HANDLE
        ready = [i for i, o in enumerate(objs) if o.signalled()]
        if ready and (not wait_all or len(ready) == len(objs)):
            for i in ready if wait_all else ready[:1]:
                objs[i].acquire_clock(t)
            if m.trace is not None:
                m.record(t, f"wait done: {objs[ready[0]].name}")
            return (WAIT_OBJECT_0 if wait_all else WAIT_OBJECT_0 + ready[0]), 0
        if timeout_ms == 0 or deadline_passed:
            return WAIT_TIMEOUT, 0
        if timeout_ms != INFINITE:
            # The deadline is a scheduling decision (module docstring): one more step.
            deadline_passed = True
            yield
            continue
        for o in objs:
            o.add_waiter(t)
        m.block(t, f"wait for {'all' if wait_all else 'any'} of {len(objs)} objects")
        yield
        for o in objs:
            o.remove_waiter(t)


# ---------------------------------------------------------------------------------------------
# BatchedWaitForMultipleObjects

class _Batch:
    """The heap record of one batch (`BatchedWaitData`); `freed` once the caller frees it."""

    __slots__ = ("handles", "handle_base", "handle_count", "thread", "result", "freed")

    def __init__(self, handles: list[Waitable], base: int) -> None:
        self.handles = handles
        self.handle_base = base
        self.handle_count = len(handles)  # includes the cancel slot in wait-any
        self.thread: "VThread | None" = None
        # No result yet: neither an index nor WAIT_FAILED until the helper stores one.
        self.result = WAIT_TIMEOUT
        self.freed = False

    def _check_live(self, who: "VThread", access: str) -> None:
        if self.freed:
            raise ViolationError(
                "use-after-free",
                f"{who.label} {access} the record of batch {self.handle_base // BATCH_SIZE}, "
                "which the caller already freed (the helper outlived "
                "BatchedWaitForMultipleObjects)")

    def store_result(self, who: "VThread", value: int) -> None:
        self._check_live(who, "stores its wait result into")
        self.result = value

    def load_result(self, who: "VThread") -> int:
        """`data->result`, read back by the helper: every helper step after its wait touches
        the record, so a helper still running when the caller frees the records is caught
        whatever it does next."""
        self._check_live(who, "reads its wait result from")
        return self.result

    def load_cancel_event(self, who: "VThread") -> "WaitEvent":
        """`data->cancel_event`, read by a helper whose wait failed, for its `SetEvent`."""
        self._check_live(who, "reads the cancel event from")
        cancel = self.handles[-1]
        if not isinstance(cancel, WaitEvent):
            raise ViolationError("crash", "the last slot of a wait-any batch is not the cancel "
                                          "event")
        return cancel


def _is_sequence(obj: Any) -> bool:
    # PySequence_Check: has __getitem__ and is not a dict.
    return not isinstance(obj, dict) and hasattr(type(obj), "__getitem__")


def _check_signals_default() -> None:
    raise KeyboardInterrupt


async def _batched_wait_thread(vt: "VThread", batch: _Batch) -> int:
    """The helper (`_batched_WaitForMultipleObjects_thread`): wait on the batch and the cancel
    event and record the result; a failed wait also sets the cancel event so that the caller
    and the other helpers stop waiting. A successful one just exits: the caller, woken by this
    thread's exit, sets the cancel event."""
    result, error = await wait_for_multiple_objects(vt, batch.handles, False, INFINITE)
    batch.store_result(vt, result)
    # `data->result` is read back from the record for the checks below.
    result = batch.load_result(vt)
    if result == WAIT_FAILED:
        await batch.load_cancel_event(vt).set()
        return error
    if WAIT_ABANDONED_0 <= result < WAIT_ABANDONED_0 + MAXIMUM_WAIT_OBJECTS:
        batch.store_result(vt, WAIT_FAILED)
        await batch.load_cancel_event(vt).set()
        return WAIT_ABANDONED_0
    return 0


async def batched_wait(t: "VThread | ThreadState", handle_seq: Any, wait_all: Any,
                       milliseconds: Any = INFINITE, *,
                       sigint: WaitEvent | None = None,
                       check_signals: Callable[[], None] = _check_signals_default,
                       mutations: frozenset[str] = frozenset()) -> list[int] | None:
    """`_winapi.BatchedWaitForMultipleObjects(handle_seq, wait_all, milliseconds=INFINITE)`
    called by `t`: a bare model thread, or a Python thread's `ThreadState`, which detaches
    for the whole wait (`Py_BEGIN_ALLOW_THREADS` around the batches, or around starting,
    waiting for and joining the helpers) and attaches again before it raises or returns, so
    a stop-the-world never waits for a thread blocked here.

    `sigint` is `_PyOS_SigintEvent()`, passed only when `t` is the main thread (the C code uses
    it only there); `check_signals` is `PyErr_CheckSignals` (by default the SIGINT handler
    raises KeyboardInterrupt; one that returns makes Ctrl-C an InterruptedError).
    Mutation `batched-wait-unjoined-helpers`: the caller does not wait for every helper to
    exit before it frees the batch records. Mutation `batched-wait-no-cancel`: the caller does
    not set the cancel event once its wait ends, so a helper whose batch has nothing signalled
    never returns and the join deadlocks. Mutation `batched-wait-attached`: a Python thread
    stays attached while it waits, so a stop-the-world requested meanwhile never completes."""
    # Argument conversion (Argument Clinic): BOOL is a C int; DWORD uses format 'k', which
    # takes any int and keeps its low 32 bits (no overflow check).
    wait_all = bool(operator.index(wait_all))
    if not isinstance(milliseconds, int):
        raise TypeError(f"an integer is required, not {type(milliseconds).__name__!r}")
    milliseconds &= 0xFFFFFFFF
    if not _is_sequence(handle_seq):
        raise TypeError(f"sequence type expected, got '{type(handle_seq).__name__}'")
    nhandles = len(handle_seq)
    if nhandles > MAX_HANDLES:
        raise ValueError(f"need at most {MAX_HANDLES} handles, got a sequence of length "
                         f"{nhandles}")
    handles: list[Waitable] = []
    for h in handle_seq:
        if not isinstance(h, Waitable):
            raise TypeError(f"a handle is required, not {type(h).__name__!r}")
        handles.append(h)
    if nhandles == 0:
        return None if wait_all else []
    ts = t if isinstance(t, ThreadState) else None
    vt = ts.vt if ts is not None else t
    detached = ts is not None and ts.attached and "batched-wait-attached" not in mutations
    if detached:
        await ts.detach()
    # The C code builds the exception after Py_END_ALLOW_THREADS: keep it until attached.
    error: BaseException | None = None
    result: list[int] | None = None
    try:
        if wait_all:
            result = await _wait_all(vt, handles, milliseconds, sigint, check_signals)
        else:
            result = await _wait_any(vt, handles, milliseconds, sigint, mutations)
    except (OSError, SystemError, KeyboardInterrupt) as e:
        error = e
    if detached:
        await ts.attach()
    if error is not None:
        raise error
    return result


def _ctrl_c(check_signals: Callable[[], None]) -> InterruptedError:
    """The wait-all path's Ctrl-C (`err == ERROR_CONTROL_C_EXIT`)."""
    # errno = EINTR; PyErr_SetFromErrno runs PyErr_CheckSignals first, whose exception wins.
    import errno
    check_signals()
    return InterruptedError(errno.EINTR, "Interrupted system call")


async def _wait_all(t: "VThread", handles: list[Waitable], milliseconds: int,
                    sigint: WaitEvent | None, check_signals: Callable[[], None]) -> None:
    for base in range(0, len(handles), BATCH_SIZE):
        # The deadline is shared by the batches; with model time it is one scheduling
        # decision per batch (any batch may be the one that times out).
        r, err = await wait_for_multiple_objects(t, handles[base:base + BATCH_SIZE], True,
                                                 milliseconds)
        if r == WAIT_TIMEOUT:
            raise _winerror(ERROR_WAIT_TIMEOUT, "The wait operation timed out")
        if r == WAIT_FAILED:
            raise _winerror(err, "The handle is invalid")
        # After every satisfied batch, the last one included.
        if sigint is not None:
            r, _ = await wait_for_multiple_objects(t, [sigint], False, 0)
            if r == WAIT_OBJECT_0:
                raise _ctrl_c(check_signals)
    return None


async def _wait_any(t: "VThread", handles: list[Waitable], milliseconds: int,
                    sigint: WaitEvent | None,
                    mutations: frozenset[str]) -> list[int]:
    m = t.machine
    cancel = WaitEvent(m, "batched-wait cancel")
    batches: list[_Batch] = []
    for base in range(0, len(handles), BATCH_SIZE):
        batches.append(_Batch(handles[base:base + BATCH_SIZE] + [cancel], base))
    # "basically an assert": unreachable with at most 3969 handles (63 helpers).
    if len(batches) > MAXIMUM_WAIT_OBJECTS - 1:
        raise SystemError("allocated too many wait objects")
    # Created suspended, then resumed: in the model a helper starts when it is spawned, which
    # is after its record is complete, as resuming is in C.
    for i, b in enumerate(batches):
        b.thread = await t.spawn(_batched_wait_thread, b, name=f"batch-wait-{i}")
    waits: list[Waitable] = [ThreadHandle(b.thread) for b in batches if b.thread is not None]
    if sigint is not None:
        waits.append(sigint)
    error = 0
    r, err = await wait_for_multiple_objects(t, waits, False, milliseconds)
    # C compares the result with `WAIT_OBJECT_0 + handle_count` for Ctrl-C after `handle_count`
    # already counts the sigint slot: it never matches (module docstring), so a Ctrl-C ends
    # the wait like a helper's exit and is not an error.
    if r == WAIT_TIMEOUT:
        error = ERROR_WAIT_TIMEOUT
    elif r == WAIT_FAILED:
        error = err
    # Whatever happened: cancel every helper and wait for all of them, so none outlives us.
    if "batched-wait-no-cancel" not in mutations:
        await cancel.set()
    if "batched-wait-unjoined-helpers" not in mutations:
        r2, _ = await wait_for_multiple_objects(t, waits[:len(batches)], True, INFINITE)
        if r2 != WAIT_OBJECT_0:
            raise ViolationError("crash", "waiting for the batched-wait helpers failed")
    if not error:
        for b in batches:
            if b.result == WAIT_FAILED and b.thread is not None:
                error = b.thread.result if isinstance(b.thread.result, int) else WAIT_FAILED
                break
    results = [b.handle_base + b.result for b in batches
               if WAIT_OBJECT_0 <= b.result < b.handle_count - 1]
    for b in batches:
        b.freed = True
    cancel.close()
    if error == ERROR_WAIT_TIMEOUT:
        raise _winerror(ERROR_WAIT_TIMEOUT, "The wait operation timed out")
    if error:
        raise _winerror(error, "The handle is invalid")
    return results
