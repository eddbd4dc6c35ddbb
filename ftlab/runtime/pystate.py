"""Runtime and thread states (`Python/pystate.c`): who owns what in one run.

`Runtime` owns everything of one run: the configuration, the machine (address space,
threads, scheduler) and, as the model grows, the interpreter's allocator, QSBR and GC state.
Nothing lives in module globals, so two runtimes never share anything.

`ThreadState` is what a model thread's code receives as `t`. It wraps the machine's virtual
thread; its awaitable methods are the scheduling points a thread can reach.

The free-threaded thread-state machinery (pystate.c, ceval_gil.c): each thread state has an
atomic status word (DETACHED, ATTACHED, SUSPENDED) and an eval-breaker word in simulated
memory. A thread runs Python only while ATTACHED (and is then online in QSBR); `detach` is an
extended quiescent state. `Runtime.stop_the_world` returns once every other linked thread is
SUSPENDED: detached ones are parked by a CAS, attached ones by EVAL_PLEASE_STOP at their next
`periodic_check`; a SUSPENDED thread cannot attach until `start_the_world`. Invariant: while
the world is stopped, no thread but the requester is attached, so none touches refcounts, its
heaps or its QSBR slot. Blocking waits of the runtime (`join`, `wait`, `lock` when contended)
detach, as PyEvent and PyMutex do, so they never hold up a stop-the-world.
"""

from __future__ import annotations

import types
from typing import Any, Awaitable, Callable, Coroutine

from collections import Counter

from ftlab.config import Config
from ftlab.runtime import brc, qsbr
from ftlab.runtime import gc as _gc
from ftlab.runtime import critical_section as _cs
from ftlab.runtime import obmalloc as _obmalloc
from ftlab.runtime import object as _object
from ftlab.runtime.mimalloc import init as _mi
from ftlab.runtime.mimalloc.alloc import heap_malloc as _mi_heap_malloc
from ftlab.runtime.mimalloc.free import mi_free as _mi_free
from ftlab.runtime.mimalloc.types import HeapTag
from ftlab.runtime.llist import llist_init
from ftlab.runtime.observer import Observer, Observers
from ftlab.runtime.pylifecycle import Finalization, Phase, hangs_at_shutdown
from ftlab.sim.atomics import RELAXED, SEQ_CST
from ftlab.sim.dpor import event_key
from ftlab.sim.machine import DONE, Machine, VThread
from ftlab.sim.memory import OS_PAGE_MASK, OS_PAGE_SIZE, Tag
from ftlab.sim.race import RaceDetector
from ftlab.sim.strategies import RoundRobin
from ftlab.sim.sync import Event, Mutex


class Runtime:
    def __init__(self, config: Config | None = None, *, race_locations: bool = False) -> None:
        self.config = config or Config()
        c = self.config
        race = RaceDetector(locations=race_locations) if c.race_detection else None
        self.machine = Machine(max_steps=c.max_steps, race=race, trace=c.trace,
                               memory_model=c.memory_model)
        self.mem = self.machine.mem
        self.tstates: list[ThreadState] = []
        # The oracles' view of the runtime; a no-op until `add_observer`.
        self.observer: Observer = Observer()
        # Layout knowledge for counterexamples in words (issue 16; read only by
        # ftlab/report/names.py): (addr, size, struct name, {offset: field}, stride) of the
        # runtime's own structures, appended where they are allocated (rare: never per access).
        self.struct_names: list[tuple[int, int, str, dict[int, str], int]] = []
        self.tstates_made = 0
        # Interpreter state of pystate.c, ceval_gil.c and qsbr.c (one interpreter).
        # Finalization phases and the finalizing thread state (pylifecycle.py); `finalizing`
        # below reads it.
        self.lifecycle = Finalization(c.version)
        # What `finalize_modules` tears down in the FINALIZING phase (module globals: the
        # destructors they run), registered by scenarios with `at_module_teardown`.
        self.module_teardown: list[Callable[["ThreadState"], Awaitable[None]]] = []
        # `interp->threads.head`: the linked thread states, newest first, under `head_lock`.
        self.threads_head: list[ThreadState] = []
        self.head_lock = Mutex(self.machine, "HEAD_LOCK")
        self.stw = StopTheWorld(self.machine)
        # lock.c / parking_lot.c: threads parked on a PyMutex, by the mutex's address
        self.parking_lot: dict[int, list[VThread]] = {}
        # typeobject.py: `interp->types` (the method cache, TYPE_LOCK), made on first use
        self.types: Any = None
        # What `_Py_HandlePending` runs after a stop request, in PENDING_ORDER (`add_pending`).
        self.pending: list[PendingHook] = []
        self.qsbr = qsbr.QsbrShared(self)
        # Objects and biased reference counting (object.c, brc.c); run statistics by name.
        self.stats: Counter[str] = Counter()
        self.objects = _object.ObjectState(self)
        self.brc = brc.BrcState(self)
        # The interpreter's mimalloc state: arenas, segment map, abandoned pool (mimalloc/init.py).
        self.mimalloc = _mi.MiRuntime(self)
        # obmalloc.c (FT): delayed frees and the delayed page reuse hooks it plugs into mimalloc
        self.obmalloc = _obmalloc.ObmallocState(self)
        # gc_free_threading.c: allocation counts and the collector's state
        self.gc = _gc.GCState(self)

    def find_observer(self, cls: type) -> Any:
        """The installed observer of class `cls` (an oracle), or None."""
        o = self.observer
        for x in (o.observers if isinstance(o, Observers) else [o]):
            if isinstance(x, cls):
                return x
        return None

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

    # -----------------------------------------------------------------------------------------
    # Raw memory (`PyMem_RawCalloc`/`PyMem_RawFree`): the C library's allocator, not mimalloc,
    # for the runtime's own structures (thread states, the QSBR array). Each allocation is a
    # fresh page-aligned region, so an access after the free faults.

    def raw_calloc(self, size: int) -> int:
        size = (size + OS_PAGE_MASK) & ~OS_PAGE_MASK
        addr = self.mem.reserve(size, OS_PAGE_SIZE)
        self.mem.commit(addr, size)
        return addr

    def name_struct(self, addr: int, size: int, name: str, fields: dict[int, str],
                    stride: int = 0) -> None:
        """Declare the struct at `addr` for the timeline's names (`qsbr.wr_seq`); `stride`: an
        array of `size // stride` such structs (`qsbr.slot[1].seq`)."""
        self.struct_names.append((addr, size, name, fields, stride))

    def raw_free(self, addr: int) -> None:
        self.mem.release(addr)

    # -----------------------------------------------------------------------------------------
    # Pending work of the eval breaker

    def add_pending(self, name: str, fn: Callable[["ThreadState"], Awaitable[None]], *,
                    bit: int = 0, when: Callable[["ThreadState"], bool] | None = None) -> None:
        """Register what `_Py_HandlePending` runs for `name` (one of PENDING_ORDER): either
        when eval-breaker `bit` is set (the bit is cleared first, as in C) or when `when(t)`
        holds (3.14's `qsbr->should_process`, which has no bit of its own)."""
        if name not in PENDING_ORDER:
            raise ValueError(f"unknown pending work {name!r} (known: {', '.join(PENDING_ORDER)})")
        if (bit == 0) == (when is None):
            raise ValueError("pending work needs exactly one of an eval-breaker bit and `when`")
        if any(h.name == name for h in self.pending):
            raise ValueError(f"pending work {name!r} is already registered")
        self.pending.append(PendingHook(name, fn, bit, when))
        self.pending.sort(key=lambda h: PENDING_ORDER.index(h.name))

    # -----------------------------------------------------------------------------------------
    # Stop-the-world (`_PyEval_StopTheWorld` / `_PyEval_StartTheWorld`, pystate.c)

    @property
    def world_stopped(self) -> bool:
        return self.stw.world_stopped

    async def stop_the_world(self, requester: "ThreadState | None") -> None:
        """`stop_the_world`: return once every other linked thread state is SUSPENDED.

        Detached threads are parked by a CAS DETACHED -> SUSPENDED (so they cannot attach
        until the world restarts); attached ones get EVAL_PLEASE_STOP and park themselves at
        their next periodic check (`suspend`), and the last one to park notifies the requester.
        C re-scans every 1 ms while it waits, to catch threads that detached in between; the
        model has no clock, so a thread that detaches during a request pokes the requester
        instead (`_StopEvent`), which then re-scans: the same states are reachable, without a
        busy loop. `requester` (may be None, as in C) stays attached and is not waited for."""
        stw = self.stw
        await lock_detaching(requester, stw.mutex)
        await self.head_lock.lock()
        stw.requested = True
        stw.thread_countdown = 0
        stw.stop_event = _StopEvent(self.machine)
        stw.requester = requester
        for t in self.threads_head:
            if t is not requester:
                stw.thread_countdown += 1       # we don't wait on ourself
        if stw.thread_countdown == 0:
            await self.head_lock.unlock()
            stw.world_stopped = True
            self.machine.record(self.machine.current, "world stopped")
            return
        while True:
            stopped_all = await self._park_detached_threads(stw)
            await self.head_lock.unlock()
            if stopped_all:
                break
            if await stw.stop_event.wait_timed(stw):
                assert stw.thread_countdown == 0, "the stop event was set with threads still to park"
                break
            await self.head_lock.lock()
        stw.world_stopped = True
        self.machine.record(self.machine.current, "world stopped")

    async def _park_detached_threads(self, stw: "StopTheWorld") -> bool:
        """`park_detached_threads` (under HEAD_LOCK): CAS each DETACHED thread to SUSPENDED,
        ask each ATTACHED one to stop. True when this pass parked the last ones."""
        mem = self.mem
        num_parked = 0
        for t in tuple(self.threads_head):
            # c11 memory model: C re-scans every 1 ms until it sees the detach; the model's
            # re-scans are pokes, so it reads the newest state (ftlab/sim/c11.py, load_newest).
            state = await mem.load_newest(t.state_addr, 4, RELAXED)
            if state == THREAD_DETACHED:
                # Pairs with the CAS in `attach`: exactly one of them wins.
                ok, state = await mem.cas(t.state_addr, THREAD_DETACHED, THREAD_SUSPENDED, 4,
                                          SEQ_CST)
                if ok:
                    num_parked += 1
                elif state == THREAD_ATTACHED and t is not stw.requester:
                    # It attached between the load and the CAS. C finds it attached at its next
                    # 1 ms re-scan; the model has no clock (and the thread's detach poked the
                    # previous stop event, if any), so ask it to stop now.
                    await set_eval_breaker_bit(t, EVAL_PLEASE_STOP_BIT)
            elif state == THREAD_ATTACHED and t is not stw.requester:
                await set_eval_breaker_bit(t, EVAL_PLEASE_STOP_BIT)
        stw.thread_countdown -= num_parked
        assert stw.thread_countdown >= 0, "parked more threads than were counted"
        return num_parked > 0 and stw.thread_countdown == 0

    async def start_the_world(self, requester: "ThreadState | None") -> None:
        """`start_the_world`: every other linked thread SUSPENDED -> DETACHED, unparked; they
        re-attach on their own. Releases the stop-the-world mutex."""
        stw = self.stw
        assert stw.mutex.owner is self.machine.current, "start_the_world without stop_the_world"
        assert requester is stw.requester, "start_the_world by another thread than the requester"
        await self.head_lock.lock()
        stw.requested = False
        stw.world_stopped = False
        for t in tuple(self.threads_head):
            if t is not stw.requester:
                assert t.peek_state() == THREAD_SUSPENDED, f"{t.name} runs in a stopped world"
                # Pairs with the CAS in `attach` of the parked thread.
                await self.mem.store(t.state_addr, THREAD_DETACHED, 4, SEQ_CST)
                stw.unpark_all(t)
        stw.requester = None
        await self.head_lock.unlock()
        self.machine.record(self.machine.current, "world started")
        await stw.mutex.unlock()

    def start_thread(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any,
                     name: str | None = None, parent: "ThreadState | None" = None,
                     interpreter: bool = True,
                     tstate: "ThreadState | None" = None,
                     after_all: bool = False, daemon: bool = False) -> "ThreadState":
        """Create a thread running `fn(tstate, *args)` (a plain call, for set-up; model
        threads start threads with `await t.spawn(...)`, which passes the `tstate` it
        created).

        In set-up nothing runs yet, so the thread state is created in the interpreter here
        with plain steps (`new_threadstate`: QSBR slot, link); the thread then attaches as its
        first step. `interpreter=False` makes a bare thread that never gets a thread state
        (a C thread that never runs Python): the engine scenarios, which exercise the machine
        alone, use it. `daemon`: a daemon thread (`threading.Thread(daemon=True)`), which
        `Py_FinalizeEx` does not wait for (`finalize_ex`)."""
        if tstate is None:
            tstate = ThreadState(self, None)
            if interpreter:
                tstate._new_threadstate_before_run()
        ts = tstate
        ts.daemon = daemon

        def start(vt: VThread) -> Coroutine[Any, Any, Any]:
            ts.vt = vt
            self.tstates.append(ts)
            return _bootstrap(ts, fn, args) if interpreter else fn(ts, *args)

        self.machine.spawn(start, name, parent=parent.vt if parent is not None else None,
                           after_all=after_all)
        return ts

    @property
    def finalizing(self) -> bool:
        """`_PyInterpreterState_GetFinalizing(interp) != NULL`."""
        return self.lifecycle.finalizing

    def finalize(self) -> None:
        """The part of `Py_FinalizeEx` the model has, once every thread has exited: on the main
        thread, which has joined them all, `_PyMem_FiniDelayed` frees what the delayed-free
        queues still hold (3.13.0 leaves items whose goal was never reached)."""
        from ftlab.runtime import obmalloc

        assert all(u.state == DONE for u in self.machine.threads), "finalize with threads running"

        async def main(t: ThreadState) -> None:
            # Every thread has been joined and there is no atexit callback: straight to the
            # finalizing thread state, then fini.
            lc = self.lifecycle
            for phase in (Phase.WAIT_FOR_THREADS, Phase.ATEXIT, Phase.FINALIZING):
                lc.advance(phase, t)
            for teardown in self.module_teardown:      # finalize_modules: destructors run
                await teardown(t)
            await obmalloc.fini_delayed(t)
            lc.advance(Phase.FINI)
            self._zapthreads(t)

        self.start_thread(main, name="finalize", after_all=True)
        # Not explored: a thread a destructor starts here runs round-robin with the finalizing
        # thread, and those choices stay out of the schedule (a replay makes them again).
        m = self.machine
        explored = len(m.choices)
        m.run(RoundRobin().execution(0))
        del m.choices[explored:]

    # -----------------------------------------------------------------------------------------
    # issue 11: `_Py_Finalize` as explored steps of the main thread, with daemon threads running

    async def finalize_ex(self, t: "ThreadState") -> None:
        """`Py_FinalizeEx` run by a scenario's main thread `t` while daemon threads may still
        run, every step under the scheduler (`finalize` is the variant for runs whose threads
        have all exited). In C's order:

        1. `wait_for_thread_shutdown`: `threading._shutdown` joins every non-daemon thread,
           including those started while it waits (a thread inherits `daemon` from the thread
           that starts it, so a daemon's children are daemons and are not waited for).
        2. `_PyAtExit_Call` (no callbacks in the model).
        3. `_PyEval_StopTheWorldAll`: every other thread is SUSPENDED, so none is attached.
        4. `_PyInterpreterState_SetFinalizing`, then `_PyRuntimeState_SetFinalizing` (relaxed
           stores in C, made with the world stopped: an attached thread that read NULL in the
           thread-start check finishes linking the new thread state before the world can stop).
        5. `_PyThreadState_RemoveExcept` unlinks every other thread state under HEAD_LOCK, and
           `_PyEval_StartTheWorldAll` restarts only `t` (the others stay SUSPENDED: a thread
           parked in `attach` is never woken).
        6. `_PyThreadState_DeleteList`: 3.13 frees the unlinked thread states though their
           OS threads may still run; 3.14 drops the interpreter's reference and the thread
           keeps its own (`decref_threadstate`). From here a daemon thread that tries to
           attach, or a thread whose `thread_run` starts now, must exit at
           `_PyThreadState_MustExit` (it reads the runtime's flag, never its thread state).
           3.13's window: a thread that read NULL there, before the flags were set, goes on
           to its status CAS, which may come after the free (use-after-free: the model finds
           it in 3.13, which is why `start-races-finalize` runs 3.14 and later). This is the
           dangling thread state that gh-130649 (issue gh-124878) removed in 3.14 by counting
           references to thread states; 3.13.15 still frees them, and its `take_gil` comment
           grants the dangling pointer.
        7. `finalize_modules` (destructors), `_PyMem_FiniDelayed`; after `t`'s own teardown
           the process exits (`exit_process`)."""
        from ftlab.runtime import obmalloc

        lc = self.lifecycle
        lc.advance(Phase.WAIT_FOR_THREADS, t)
        while True:
            rest = [u for u in self.tstates
                    if u is not t and not u.daemon and u.vt.state != DONE]
            if not rest:
                break
            await t.join(rest[0])
        lc.advance(Phase.ATEXIT, t)
        await self.stop_the_world(t)
        await t.yield_now()
        lc.set_interp_finalizing(t)
        await t.yield_now()
        lc.set_runtime_finalizing(t)
        self.machine.record(self.machine.current, "finalizing")
        restart_first = self.mutated("finalization-restarts-daemons")
        if restart_first:
            await self.start_the_world(t)
        await self.head_lock.lock()             # _PyThreadState_RemoveExcept
        removed = [u for u in self.threads_head if u is not t]
        self.threads_head[:] = [t]
        await self.head_lock.unlock()
        if not restart_first:
            # "We start the world once we are the only thread state left": the others
            # stay SUSPENDED, parked for good.
            await self.start_the_world(t)
        frees = (not hangs_at_shutdown(self.config.version)
                 or self.mutated("finalization-frees-daemon-tstate"))
        for u in removed:                       # _PyThreadState_DeleteList
            await t.yield_now()
            if frees:
                # 3.13: free_threadstate, though the OS thread may still use it: `u.block`
                # stays, a dangling pointer, as the thread's `tstate` does in C.
                self.raw_free(u.block)
            # 3.14: decref_threadstate; the OS thread holds the other reference until it
            # ends, and a daemon that must exit hangs: the block outlives the run.
        for teardown in self.module_teardown:
            await teardown(t)
        await obmalloc.fini_delayed(t)
        lc.advance(Phase.FINI)
        self._zapthreads(t)
        # The thread's own teardown follows (`_bootstrap`), then `exit_process`.

    def exit_process(self, t: "ThreadState") -> None:
        """`exit()` after `Py_FinalizeEx` returned on `t`: every other thread ends where it is
        (a daemon parked in `attach`, one still in its own C teardown)."""
        m = self.machine
        for vt in m.threads:
            if vt is not t.vt:
                m.end_thread(vt, "ended by the process exit")

    def at_module_teardown(self, fn: Callable[["ThreadState"], Awaitable[None]]) -> None:
        """Run `fn(finalizing_tstate)` in `finalize_modules`, after the finalizing thread state
        is set: what clearing a module's globals does (their destructors run)."""
        self.module_teardown.append(fn)

    def _zapthreads(self, t: "ThreadState") -> None:
        """`PyInterpreterState_Clear`'s `zapthreads`: free every thread state still linked in
        the interpreter but the finalizing one. Every thread started before finalization was
        joined and has unlinked itself; a thread started later (which thread start refuses
        with PythonFinalizationError) would be running on the memory freed here."""
        for ts in list(self.threads_head):
            if ts is not t and ts.block:
                self.threads_head.remove(ts)
                self.raw_free(ts.block)

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
    """`thread_run` in `Modules/_threadmodule.c`: bind the thread state, attach, run, tear
    down (`exit`, then `delete_current`).
    Teardown is awaited model code (it can reach scheduling points), so it is not in a
    `finally`: a violation ends the run where it happened."""
    # gh-108987: a thread started before finalization may begin after it; it must exit
    # without touching its thread state (freed by `_PyThreadState_DeleteList`).
    if ts.must_exit():
        ts.rt.machine.record(ts.vt, "thread_run: exits at shutdown")
        return None
    ts.bind()
    try:
        await ts.attach()       # PyEval_AcquireThread
        result = await fn(ts, *args)
    except ThreadExit:
        return None
    assert ts.attached, f"{ts.name} returned while {ts.status}: a thread must end attached"
    await ts.exit()
    await ts.delete_current()
    if ts.rt.lifecycle.runtime_get_finalizing() is ts:
        ts.rt.exit_process(ts)
    return result


class ThreadExit(BaseException):
    """`PyThread_exit_thread` / `PyThread_hang_thread` from `_PyThreadState_MustExit`: unwinds
    the thread's model code to `_bootstrap`, which ends the thread without its teardown (C runs
    no `PyThreadState_Clear` on that path). A BaseException, so `except Exception` in model
    code does not catch it."""


class ThreadState:
    __slots__ = ("rt", "vt", "mem",
                 # pystate.c / qsbr.c: `block` holds `state` and `eval_breaker` in simulated
                 # memory (0 once the thread state is freed); `qsbr` is the thread's slot.
                 "block", "qsbr",
                 # object.c / brc.c: `tid` is `_Py_ThreadId()` (the thread state's address,
                 # never reused), `ob_tid` of the objects it owns; `brc` its BRC queue.
                 "tid", "brc",
                 # mimalloc: the thread's tld and its four tagged heaps (`tstate->mimalloc`)
                 "mimalloc",
                 # obmalloc.c: the `_PyMem_FreeDelayed` work queue (chunks, oldest first)
                 "mem_free_queue",
                 # gc_free_threading.c: the buffered allocation count
                 "gc",
                 # critical_section.c: `tstate->critical_section`, the stack, top last
                 "critical_sections",
                 # object.c (Py_REF_DEBUG): this thread's part of the total refcount
                 "reftotal",
                 # issue 11: `threading.Thread.daemon` (Py_FinalizeEx does not wait for it)
                 "daemon")

    def __init__(self, rt: Runtime, vt: VThread | None) -> None:
        self.rt = rt
        self.vt = vt        # None until the thread is spawned
        self.mem = rt.mem
        self.block = rt.raw_calloc(TSTATE_SIZE)     # state DETACHED, no eval-breaker bit
        rt.tstates_made += 1
        rt.name_struct(self.block, TSTATE_SIZE, f"tstate#{rt.tstates_made}",
                       {STATE_OFFSET: "state", EVAL_BREAKER_OFFSET: "eval_breaker",
                        MIMALLOC_INITIALIZED_OFFSET: "mimalloc.initialized",
                        # QSBR page lists: the sentinel of this thread's list (obmalloc.py)
                        PAGE_LIST_OFFSET: "mimalloc.page_list.next",
                        PAGE_LIST_OFFSET + 8: "mimalloc.page_list.prev"})
        self.qsbr: qsbr.QsbrThreadState | None = None
        self.tid = self.block
        self.brc = brc.BrcThreadState()
        self.mimalloc: _mi.MiThreadState | None = None
        self.mem_free_queue: list[_obmalloc.WorkChunk] = []
        self.gc = _gc.GCThreadState()
        self.critical_sections: list[_cs.CriticalSection] = []
        self.reftotal = 0
        self.daemon = False

    @property
    def name(self) -> str:
        return self.vt.name if self.vt is not None else "(not started)"

    def bind(self) -> None:
        """Per-thread runtime state, before the thread's first step (`_PyThreadState_Bind`)."""
        brc.init_thread(self)
        self.mimalloc = _mi.tstate_mimalloc_bind(self.rt.mimalloc, self)   # tstate_mimalloc_bind
        # ... which also does `llist_init(&mts->page_list)`: the QSBR page list's sentinel
        self.mimalloc.page_list = self.block + PAGE_LIST_OFFSET
        llist_init(self.mem, self.mimalloc.page_list)
        # ... which ends with `_Py_atomic_store_int(&mts->initialized, 1)`: the GC visits a
        # thread's heaps only once it reads this (gc_visit_heaps). Not a scheduling point: the
        # whole bind is one step, so the GC sees either none of it or all of it.
        self.mem.store_unpublished(self.block + MIMALLOC_INITIALIZED_OFFSET, 1, 4, Tag.META,
                                   release=True)

    async def exit(self) -> None:
        """Thread teardown after its function returns (`PyThreadState_Clear`, still attached):
        the place where heaps are abandoned. `delete_current` follows: the thread leaves QSBR
        and the interpreter."""
        await brc.remove_thread(self)           # first, as in PyThreadState_Clear
        await _obmalloc.abandon_delayed(self)   # _PyMem_AbandonDelayed, still attached
        # last, as in PyThreadState_Clear: abandon the four heaps to the interpreter's pool
        await _mi.tstate_clear_mimalloc_heaps(self.rt.mimalloc, self.mimalloc)

    # -----------------------------------------------------------------------------------------
    # PyMem (FT: mimalloc's MEM heap) and direct use of mimalloc heaps. Each returns an
    # awaitable: the fast paths have no scheduling point, the generic ones do.

    def malloc(self, size: int):
        """`PyMem_Malloc`: `mi_heap_malloc` on the thread's MEM heap (`await t.malloc(n)`)."""
        return _mi_heap_malloc(self.mimalloc.heaps[HeapTag.MEM], size)

    def free(self, p: int):
        """`PyMem_Free`: `mi_free(p)` (`await t.free(p)`)."""
        return _mi_free(self.rt.mimalloc, p)

    def heap_new(self):
        """`mi_heap_new()` for this thread (`await t.heap_new()`): a heap whose `malloc(n)`,
        `free(p)`, `collect(force)` and `delete()` drive the allocator directly."""
        return _mi.thread_heap_new(self.mimalloc)

    @property
    def shared(self) -> Any:
        return self.rt.machine.shared

    def yield_now(self):
        return self.vt.yield_now()

    async def spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any,
                    name: str | None = None, daemon: bool | None = None) -> "ThreadState":
        """Start a thread running `fn(new_tstate, *args)`: this thread creates the new thread
        state in the interpreter (`new_threadstate`, which may stop the world to grow the QSBR
        array), then the new thread starts and attaches. Once the interpreter is finalizing
        this raises PythonFinalizationError (`do_start_new_thread`: a relaxed load of the
        interpreter's flag, by an attached thread). `daemon` defaults to this thread's, as
        `threading.Thread` does."""
        if not self.rt.mutated("finalization-allows-threads"):
            self.rt.lifecycle.check("thread_start")
        ts = ThreadState(self.rt, None)
        await ts.new_threadstate(self)
        return self.rt.start_thread(fn, *args, name=name, parent=self, tstate=ts,
                                    daemon=self.daemon if daemon is None else daemon)

    async def wait(self, event: Event) -> None:
        """`PyEvent_Wait`: detaches while it blocks (see `join`)."""
        if event.is_set() or not self.attached:
            await event.wait()
            return
        await self.detach()
        await event.wait()
        await self.attach()

    async def join(self, other: "ThreadState") -> Any:
        """Wait for `other` to finish. Like every blocking wait of the runtime (a PyEvent or a
        lock wait with `detach`), it detaches while it blocks, so it never holds up a
        stop-the-world; a thread already finished is joined without detaching."""
        if other.vt.finished() or not self.attached:
            return await self.vt.join(other.vt)
        await self.detach()
        result = await self.vt.join(other.vt)
        await self.attach()
        return result

    async def lock(self, mutex: Mutex) -> None:
        """`PyMutex_Lock`: detaches while it has to wait (see `lock_detaching`)."""
        await lock_detaching(self, mutex)

    # -----------------------------------------------------------------------------------------
    # Status (pystate.c). `state` is an atomic int of the thread state: the thread itself moves
    # ATTACHED <-> DETACHED/SUSPENDED; a stop-the-world requester moves DETACHED -> SUSPENDED
    # and, when it restarts the world, SUSPENDED -> DETACHED.

    @property
    def state_addr(self) -> int:
        return self.block + STATE_OFFSET

    @property
    def eval_breaker_addr(self) -> int:
        return self.block + EVAL_BREAKER_OFFSET

    def peek_state(self) -> int | None:
        """The status word, for assertions and tests (not an access); None once deleted."""
        return self.mem.raw_load(self.state_addr, 4) if self.block else None

    @property
    def status(self) -> str:
        state = self.peek_state()
        return "deleted" if state is None else STATE_NAMES[state]

    @property
    def attached(self) -> bool:
        return self.peek_state() == THREAD_ATTACHED

    def peek_eval_breaker(self) -> int:
        return self.mem.raw_load(self.eval_breaker_addr, 8)

    # -----------------------------------------------------------------------------------------
    # Life cycle

    async def new_threadstate(self, creator: "ThreadState") -> None:
        """`new_threadstate`, run by the creating thread `creator` for this new thread state:
        `_Py_qsbr_reserve` (the creator stops the world if the QSBR array must grow), link
        into `interp->threads` under HEAD_LOCK (SUSPENDED if a stop-the-world is under way),
        `_Py_qsbr_register`. The new thread attaches when it starts."""
        rt = self.rt
        index = await qsbr.reserve(rt, creator)
        await rt.head_lock.lock()
        if rt.stw.requested:
            # init_threadstate: a plain store; nobody sees this thread state before the link.
            self.mem.store_u32(self.state_addr, THREAD_SUSPENDED, Tag.META)
        rt.threads_head.insert(0, self)
        await rt.head_lock.unlock()
        await qsbr.register(self, index, creator)

    def _new_threadstate_before_run(self) -> None:
        """`new_threadstate` for a thread made in set-up: no thread runs yet (the world is
        trivially stopped), so it is plain."""
        qsbr.reserve_and_register_before_run(self.rt, self)
        self.rt.threads_head.insert(0, self)

    async def delete_current(self) -> None:
        """`_PyThreadState_DeleteCurrent` after `exit` (`PyThreadState_Clear`): leave QSBR,
        unlink from the interpreter (an ongoing stop-the-world no longer waits for this thread),
        give the QSBR slot back, free the thread state. The status stays ATTACHED until the
        free, as in C."""
        assert self.attached, f"{self.name} must be attached when its thread function returns"
        rt = self.rt
        await qsbr.detach(self.qsbr)
        await rt.head_lock.lock()           # tstate_delete_common
        rt.threads_head.remove(self)
        if self.mem.load_u32(self.state_addr) != THREAD_SUSPENDED and rt.stw.requested:
            await rt.stw.decrement_countdown()
        # Py_REF_DEBUG: add our portion of the total refcount to the interpreter's total.
        rt.objects.reftotal += self.reftotal
        self.reftotal = 0
        await rt.head_lock.unlock()
        await qsbr.unregister(self)
        rt.raw_free(self.block)
        self.block = 0

    # -----------------------------------------------------------------------------------------
    # Attach and detach (`_PyThreadState_Attach`, `_PyThreadState_Detach`,
    # `_PyThreadState_Suspend`)

    async def attach(self) -> None:
        """CAS DETACHED -> ATTACHED; while the world is stopped (SUSPENDED) park until the
        requester restarts it, then retry; then `_Py_qsbr_attach`. First `take_gil`'s
        `_PyThreadState_MustExit`: once another thread finalizes, this thread exits (3.13,
        `PyThread_exit_thread`) or hangs forever (3.14, `PyThread_hang_thread`); either way it
        never runs Python again, so the model ends it (`ThreadExit`)."""
        if self.must_exit():
            self.rt.machine.record(self.vt, "attach: the interpreter is finalizing, "
                                            + ("hangs" if hangs_at_shutdown(self.rt.config.version)
                                               else "exits"))
            raise ThreadExit
        while True:
            # Pairs with the CAS in `_park_detached_threads` and the store in
            # `start_the_world`.
            ok, state = await self.mem.cas(self.state_addr, THREAD_DETACHED, THREAD_ATTACHED,
                                           4, SEQ_CST)
            if ok:
                break
            assert state == THREAD_SUSPENDED, f"{self.name} attaches while {STATE_NAMES[state]}"
            await self._park_while_suspended()
        self.rt.observer.thread_attached(self)
        assert self.qsbr is not None, f"{self.name} attaches before it is registered with QSBR"
        await qsbr.attach(self.qsbr)
        if self.critical_sections:
            await _cs.resume(self)          # the top-most section only

    def must_exit(self) -> bool:
        """`_PyThreadState_MustExit`: the runtime is finalizing and this is not the finalizing
        thread. It reads `_PyRuntime._finalizing` (a relaxed load; here a plain read in the
        step), never `self`, which may be freed by then."""
        fin = self.rt.lifecycle.runtime_get_finalizing()
        return fin is not None and fin is not self

    @types.coroutine
    def _park_while_suspended(self):
        """`_PyParkingLot_Park(&tstate->state, SUSPENDED)`: sleep unless the state already
        changed (the check and the enqueue are one step, as under the parking lot's bucket
        lock); `start_the_world` unparks."""
        yield
        self.rt.machine.note_access(self.state_addr, 4, True)     # the check and the enqueue
        if self.mem.raw_load(self.state_addr, 4) == THREAD_SUSPENDED:
            self.rt.stw.parked.append(self)
            self.rt.machine.block(self.vt, "attach: the world is stopped")
            yield

    async def detach(self) -> None:
        """`_PyThreadState_Detach`: an extended quiescent state; the thread must hold no pointer
        obtained without a lock across it."""
        await self._detach_thread(THREAD_DETACHED)

    async def _detach_thread(self, detached_state: int) -> None:
        """`detach_thread`: `_Py_qsbr_detach`, then the status store."""
        assert self.attached, f"{self.name} detaches while {self.status}"
        if self.critical_sections:
            await _cs.suspend_all(self)     # a blocked section must not hold up anyone
        await qsbr.detach(self.qsbr)
        await self.mem.store(self.state_addr, detached_state, 4, SEQ_CST)
        if detached_state == THREAD_DETACHED:
            self.rt.stw.stop_event.poke()   # stands for the requester's 1 ms re-scan

    async def suspend(self) -> None:
        """`_PyThreadState_Suspend`: detach into SUSPENDED if a stop-the-world is requested
        (and count down its waiting requester), else into DETACHED."""
        rt = self.rt
        await rt.head_lock.lock()
        requested = rt.stw.requested
        await rt.head_lock.unlock()
        if not requested:
            await self._detach_thread(THREAD_DETACHED)
            return
        await self._detach_thread(THREAD_SUSPENDED)
        await rt.head_lock.lock()
        await rt.stw.decrement_countdown()
        await rt.head_lock.unlock()

    # -----------------------------------------------------------------------------------------
    # The eval breaker (`_CHECK_PERIODIC`, `_Py_HandlePending` in ceval_gil.c)

    async def periodic_check(self) -> None:
        """The eval loop's periodic check: always a QSBR quiescent state, then
        `_Py_HandlePending` if an event bit is set."""
        assert self.attached, f"periodic check of {self.name} while {self.status}"
        await qsbr.quiescent_state(self.qsbr)
        if await self.mem.load(self.eval_breaker_addr, 8, RELAXED) & EVAL_EVENTS_MASK:
            await self.handle_pending()

    async def handle_pending(self) -> None:
        """`_Py_HandlePending`, in C's order: a stop request (suspend, then attach, which waits
        for the world to restart), then the registered pending work (PENDING_ORDER). Signals,
        pending calls, the JIT, GIL drop requests and async exceptions are not modelled."""
        breaker = await self.mem.load(self.eval_breaker_addr, 8, RELAXED)
        if breaker & EVAL_PLEASE_STOP_BIT:
            await unset_eval_breaker_bit(self, EVAL_PLEASE_STOP_BIT)
            await self.suspend()
            await self.attach()
        for hook in self.rt.pending:
            if hook.bit:
                if breaker & hook.bit:
                    await unset_eval_breaker_bit(self, hook.bit)
                    await hook.fn(self)
            elif hook.when(self):
                await hook.fn(self)

    # -----------------------------------------------------------------------------------------
    # Objects and reference counts (object.c, pycore_object.h): see ftlab.runtime.object

    object_malloc = _object.object_malloc
    object_free = _object.object_free
    new_object = _object.new_object
    incref = _object.incref
    decref = _object.decref
    try_incref = _object.try_incref
    try_incref_compare = _object.try_incref_compare
    xget_ref = _object.xget_ref
    new_ref_with_lock = _object.new_ref_with_lock
    set_maybe_weakref = _object.set_maybe_weakref

    # Delayed frees (obmalloc.c): `await t.free_delayed(p, size)` is `_PyMem_FreeDelayed`
    free_delayed = _obmalloc.free_delayed
    object_free_delayed = _obmalloc.object_free_delayed
    # Block counting (obmalloc.c): `await t.get_allocated_blocks()` is sys.getallocatedblocks()
    get_allocated_blocks = _obmalloc.get_num_global_allocated_blocks
    # `await t.get_total_refcount()` is sys.gettotalrefcount() (object.c, Py_REF_DEBUG)
    get_total_refcount = _object.get_total_refcount

    # The GC (gc_free_threading.c): `await t.gc_collect()` is `gc.collect()`
    gc_collect = _gc.collect


# ---------------------------------------------------------------------------------------------
# Thread state layout and status (Include/cpython/pystate.h, pycore_ceval.h)

THREAD_DETACHED = 0         # _Py_THREAD_DETACHED
THREAD_ATTACHED = 1         # _Py_THREAD_ATTACHED
THREAD_SUSPENDED = 2        # _Py_THREAD_SUSPENDED (3.14's SHUTTING_DOWN is not modelled)
STATE_NAMES = ("detached", "attached", "suspended")

STATE_OFFSET = 0            # int state
EVAL_BREAKER_OFFSET = 8     # uintptr_t eval_breaker
MIMALLOC_INITIALIZED_OFFSET = 16    # int mimalloc.initialized (_PyThreadStateImpl)
PAGE_LIST_OFFSET = 24       # struct llist_node mimalloc.page_list (QSBR page lists)
TSTATE_SIZE = 40

# Eval-breaker event bits (`_PY_*_BIT`); the low 8 bits are events.
GIL_DROP_REQUEST_BIT = 1 << 0
SIGNALS_PENDING_BIT = 1 << 1
CALLS_TO_DO_BIT = 1 << 2
ASYNC_EXCEPTION_BIT = 1 << 3
GC_SCHEDULED_BIT = 1 << 4
EVAL_PLEASE_STOP_BIT = 1 << 5
EVAL_EXPLICIT_MERGE_BIT = 1 << 6
EVAL_JIT_INVALIDATE_COLD_BIT = 1 << 7     # 3.14
EVAL_EVENTS_MASK = 0xFF

# The work `_Py_HandlePending` does after a stop request, in its order: BRC merges
# (EVAL_EXPLICIT_MERGE_BIT), 3.14's delayed-free processing (`qsbr->should_process`, no bit),
# the GC (GC_SCHEDULED_BIT). Mechanisms register theirs with `Runtime.add_pending`.
PENDING_ORDER = ("explicit_merge", "process_delayed", "gc")


class PendingHook:
    __slots__ = ("name", "fn", "bit", "when")

    def __init__(self, name: str, fn: Callable[["ThreadState"], Awaitable[None]], bit: int,
                 when: Callable[["ThreadState"], bool] | None) -> None:
        self.name = name
        self.fn = fn
        self.bit = bit
        self.when = when


async def set_eval_breaker_bit(t: ThreadState, bit: int) -> None:
    """`_Py_set_eval_breaker_bit`: an atomic OR, from any thread."""
    await t.mem.fetch_or(t.eval_breaker_addr, bit, 8, SEQ_CST)


async def unset_eval_breaker_bit(t: ThreadState, bit: int) -> None:
    """`_Py_unset_eval_breaker_bit`: an atomic AND."""
    await t.mem.fetch_and(t.eval_breaker_addr, ~bit & _UINTPTR_MASK, 8, SEQ_CST)


_UINTPTR_MASK = (1 << 64) - 1


# ---------------------------------------------------------------------------------------------
# Stop-the-world state and PyMutex's detaching wait

class StopTheWorld:
    """`struct _stoptheworld_state` of the interpreter. The model has one interpreter, so the
    global variant and the runtime's `stoptheworld_mutex` RW lock are not modelled.
    `requested`, `thread_countdown` and `requester` are protected by HEAD_LOCK; `parked` lists
    the thread states parked in `attach` (the parking lot's queue on their status words)."""

    __slots__ = ("machine", "mutex", "requested", "world_stopped", "thread_countdown",
                 "requester", "stop_event", "parked")

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.mutex = Mutex(machine, "stoptheworld.mutex")
        self.requested = False
        self.world_stopped = False
        self.thread_countdown = 0
        self.requester: ThreadState | None = None
        self.stop_event = _StopEvent(machine)
        self.parked: list[ThreadState] = []

    async def decrement_countdown(self) -> None:
        """`decrement_stoptheworld_countdown` (under HEAD_LOCK): the last thread to park wakes
        the requester."""
        assert self.thread_countdown > 0, "more threads parked than the requester waits for"
        self.thread_countdown -= 1
        if self.thread_countdown == 0:
            await self.stop_event.notify()

    def unpark_all(self, t: ThreadState) -> None:
        """`_PyParkingLot_UnparkAll(&t->state)`."""
        if t in self.parked:
            self.parked.remove(t)
            self.machine.wake(t.vt)


class _StopEvent:
    """`stw->stop_event`: a PyEvent the requester waits on with a 1 ms timeout, after which
    it re-scans. Without a clock, the timeout is modelled by `poke`: a thread that detaches
    while a stop is requested wakes the requester for a re-scan (a re-scan at any other moment
    changes nothing). `wait_timed` returns True when the event was set, False on a poke."""

    __slots__ = ("machine", "flag", "clock", "waiter", "poked", "serial")

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.serial = machine.serials     # its DPOR key
        machine.serials += 1
        self.flag = False
        self.clock: list[int] | None = None
        self.waiter: VThread | None = None
        self.poked = False

    @types.coroutine
    def notify(self):
        yield
        m = self.machine
        self._touch()
        self.flag = True
        if m.race is not None:
            self.clock = m.race.release(m.current)
        if self.waiter is not None:
            m.wake(self.waiter)

    def _touch(self) -> None:
        self.machine.note_sync(event_key(self.serial), True)

    def poke(self) -> None:
        self._touch()
        self.poked = True
        if self.waiter is not None:
            self.machine.wake(self.waiter)

    @types.coroutine
    def wait_timed(self, stw: StopTheWorld):
        yield
        m = self.machine
        t = m.current
        self._touch()
        while not self.flag and not self.poked:
            self.waiter = t
            m.block(t, f"stop-the-world: {stw.thread_countdown} thread(s) to park")
            yield
            self._touch()
        self.waiter = None
        if self.flag:
            if m.race is not None:
                m.race.acquire(t, self.clock)
            return True
        self.poked = False
        return False


async def lock_detaching(t: ThreadState | None, mutex: Mutex) -> None:
    """`PyMutex_Lock`: an attached thread that has to wait for `mutex` detaches while it waits
    (`_PyParkingLot_Park(..., detach=1)`), so a stop-the-world is not held up by it; it
    re-attaches once it holds the mutex (C's hand-off path). HEAD_LOCK is taken with
    `_Py_LOCK_DONT_DETACH` and uses `Mutex.lock` directly."""
    if t is None or not t.attached:
        await mutex.lock()
        return
    if await mutex.try_lock():
        return
    await t.detach()
    await mutex.lock()
    await t.attach()

