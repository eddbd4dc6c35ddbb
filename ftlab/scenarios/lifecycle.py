"""Thread lifecycle scenarios: thread churn, batched waits on many handles.

- `thread-churn`: a thread starts two children while another frees the blocks they allocated
  (foreign frees, into a heap its owner may already have abandoned) and polls QSBR. The first
  QSBR array is full but for one slot (other thread states hold the rest, reserved), so the
  first child takes the last slot and the second child's `new_threadstate` must stop the world
  and grow the array: while the first child may be exiting, waiting for the QSBR mutex in
  `_Py_qsbr_unregister`, or anywhere else in its teardown. Mutation
  `qsbr-unregister-stale-slot`: unregister loads `tstate->qsbr` before the mutex, so after a
  growth it reads the freed array (segfault).

- `batched-wait`: a waiter uses `_winapi.BatchedWaitForMultipleObjects` on 64 manual-reset
  events (two batches: 63 + 1, so two helper threads per wait-any) while two signallers set
  three of them (two in the first batch, one in the second). The waiter first waits for any
  with a finite timeout (it may time out: a scheduling decision), then for any with no timeout,
  then for all three targets (a wait-all on 65 handles: the first target and 62 signalled
  paddings in batch 0, the other two targets in batch 1), then collects them with repeated
  wait-any calls, resetting each reported event, as `Lib/test/test_winapi.py` does. Checked:
  every reported index is signalled, at most one per batch, in batch order; a wait-all returns
  only once all its handles are signalled; the collection ends in at most three calls. The
  helpers are model threads: a lost wake-up is a deadlock. Mutation
  `batched-wait-unjoined-helpers`: the caller frees the batch records without waiting for every
  helper, so a helper stores its result into a freed record (use-after-free). Mutation
  `batched-wait-no-cancel`: the caller never sets the cancel event, so once a wait-any is
  satisfied by one batch, the helper of a batch with nothing signalled waits forever and the
  caller's join of every helper deadlocks.
- `batched-wait-stw`: a Python thread waits for any of the 64 events while another thread
  stops the world, restarts it and then signals one event (the second batch's). The waiter is
  detached for the whole wait, so the stop-the-world proceeds. Mutation
  `batched-wait-attached`: the waiter stays attached, so the requester waits for it while it
  waits for the requester's signal (deadlock).
- `start-races-finalize` (issue 11 item 4): the main thread runs `Py_FinalizeEx` as explored
  steps (`Runtime.finalize_ex`) while a daemon thread starts a (daemon) child, frees a block
  and polls QSBR, then joins the child. The daemon's start tests the interpreter's flag while
  attached; the flag is set only with the world stopped, so the start always succeeds and the
  new thread state is linked before the world stops: finalization unlinks and deletes it with
  the others, and the child (or the daemon itself, started in set-up) that reaches
  `thread_run` or `attach` afterwards leaves at `_PyThreadState_MustExit`. A destructor run by
  `finalize_modules` on the finalizing thread starts a thread too and gets
  PythonFinalizationError. Checked: the daemon's start never raises, the destructor's raises
  once; the `lifecycle` oracle: no thread attaches once another is finalizing. Rows 3.14 and
  main (3.13 frees the daemons' thread states: see below). Mutation
  `finalization-frees-daemon-tstate`: `_PyThreadState_DeleteList` frees them as 3.13 does,
  and a thread that passed `_PyThreadState_MustExit` before the flags were set makes its
  status CAS on freed memory (segfault). Mutation `finalization-restarts-daemons`: the world
  is restarted before `_PyThreadState_RemoveExcept`, so the parked daemons attach (lifecycle).
  Under 3.13.0 the unmutated scenario finds that same window (3.13 frees the thread states
  of threads that may still run; 3.14 reference-counts them, `decref_threadstate`): the
  dangling thread state that gh-130649, for gh-124878, removed in 3.14; 3.13.15 still frees).
- `shutdown-del-thread`: a module global holds an object whose destructor starts a thread (a
  `__del__` that spawns a worker, as logging handlers and executors did). Two threads hand the
  object over and exit; at shutdown, `finalize_modules` drops the global in the FINALIZING
  phase and the destructor's thread start must raise PythonFinalizationError (checked: it is
  raised, there, once). Mutation `finalization-allows-threads`: the thread starts; since
  issue 11's `_PyThreadState_MustExit` in `thread_run` (gh-108987) it leaves at once without
  running, so the scenario's check is what finds the mutation (before, the model let it run
  on the thread state `zapthreads` frees: `segfault`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ftlab.runtime import qsbr
from ftlab.runtime.object import PyType, try_incref_compare
from ftlab.runtime.pylifecycle import PythonFinalizationError
from ftlab.runtime.waits import BATCH_SIZE, WaitEvent, batched_wait
from ftlab.scenarios import Scenario
from ftlab.sim.atomics import SEQ_CST
from ftlab.sim.violation import ViolationError

_NHANDLES = 64
_TARGETS = (3, 40, 63)


@dataclass
class _Handles:
    events: list[WaitEvent]
    # already-signalled events that pad the wait-all so its targets span two batches
    padding: list[WaitEvent]


def _batched_setup(rt) -> None:
    padding = [WaitEvent(rt.machine, f"pad{i}") for i in range(BATCH_SIZE - 1)]
    for ev in padding:
        ev.flag = True
    rt.shared = _Handles([WaitEvent(rt.machine, f"ev{i}") for i in range(_NHANDLES)], padding)


def _check_report(events: list[WaitEvent], got: list[int]) -> None:
    batches = [i // BATCH_SIZE for i in got]
    if batches != sorted(set(batches)):
        raise ViolationError("check", f"batched wait reported {got}: not at most one index per "
                                      "batch in batch order")
    for i in got:
        if not events[i].signalled():
            raise ViolationError("check", f"batched wait reported handle {i}, which is not "
                                          "signalled")


async def _waiter(t) -> None:
    vt = t.vt
    events = t.shared.events
    mut = t.rt.config.mutations
    try:
        got = await batched_wait(vt, events, False, 10, mutations=mut)
        if not got:
            raise ViolationError("check", "a wait-any that did not time out reported nothing")
        _check_report(events, got)
    except TimeoutError:
        pass
    got = await batched_wait(vt, events, False, mutations=mut)
    if not got:
        raise ViolationError("check", "a wait-any with no timeout returned nothing")
    _check_report(events, got)
    # Wait-all on 65 handles: batch 0 is the first target and 62 signalled paddings, batch 1
    # the other two targets, so each batch has something to wait for.
    targets = [events[i] for i in _TARGETS]
    if await batched_wait(vt, targets[:1] + t.shared.padding + targets[1:], True,
                          mutations=mut) is not None:
        raise ViolationError("check", "a successful wait-all did not return None")
    if not all(ev.signalled() for ev in targets):
        raise ViolationError("check", "a wait-all returned before every handle was signalled")
    collected: set[int] = set()
    for _ in range(len(_TARGETS)):
        got = await batched_wait(vt, events, False, mutations=mut)
        _check_report(events, got)
        collected.update(got)
        for i in got:
            await events[i].reset()
        if collected == set(_TARGETS):
            return
    raise ViolationError("check", f"collected only {sorted(collected)} of {list(_TARGETS)} "
                                  "in three wait-any calls")


async def _signal_first(t) -> None:
    await t.shared.events[_TARGETS[0]].set()


async def _signal_rest(t) -> None:
    for i in _TARGETS[1:]:
        await t.shared.events[i].set()


BATCHED_WAIT = Scenario(
    name="batched-wait",
    description="BatchedWaitForMultipleObjects on 64 events (two helper threads) while two "
                "threads signal three of them",
    threads=(("waiter", _waiter), ("sig0", _signal_first), ("sig1", _signal_rest)),
    setup=_batched_setup,
    mutations={"batched-wait-unjoined-helpers": ("use-after-free",),
               "batched-wait-no-cancel": ("deadlock",)},
    dfs_bound=1,
    pct_steps=80,
    interpreter=False,
)



async def _stw_waiter(t) -> None:
    # A Python thread: it must detach for the wait (Py_BEGIN_ALLOW_THREADS).
    events = t.shared.events
    got = await batched_wait(t, events, False, mutations=t.rt.config.mutations)
    if got != [_TARGETS[-1]]:
        raise ViolationError("check", f"wait-any reported {got}, not the one signalled handle "
                                      f"{_TARGETS[-1]}")


async def _stw_then_signal(t) -> None:
    await t.rt.stop_the_world(t)
    await t.rt.start_the_world(t)
    await t.shared.events[_TARGETS[-1]].set()


BATCHED_WAIT_STW = Scenario(
    name="batched-wait-stw",
    description="a Python thread in BatchedWaitForMultipleObjects on 64 events while another "
                "stops the world, then signals one event",
    threads=(("waiter", _stw_waiter), ("stopper", _stw_then_signal)),
    setup=_batched_setup,
    mutations={"batched-wait-attached": ("deadlock",)},
    dfs_bound=1,
    pct_steps=80,
)


# --- thread churn -----------------------------------------------------------------------------

@dataclass
class _Churn:
    blocks: list[int]
    ready: list             # one model Event per child: its block is published


def _churn_setup(rt) -> None:
    shared = rt.qsbr
    # Thread states created elsewhere hold all but three slots of the first array (reserved,
    # not yet registered): the churner and the freer take two, the first child the last one.
    qsbr.grow_thread_array(shared)
    for _ in range(qsbr.MIN_ARRAY_SIZE - 3):
        if qsbr.qsbr_allocate(shared) is None:
            raise ViolationError("check", "thread-churn set-up found the first QSBR array full")
    rt.shared = _Churn([0, 0], [rt.event("child0 block"), rt.event("child1 block")])


async def _churn_child(t, i: int) -> None:
    p = await t.malloc(16)
    t.rt.mem.store_u64(p, i + 1)
    t.shared.blocks[i] = p
    await t.shared.ready[i].set()


async def _churner(t) -> None:
    c0 = await t.spawn(_churn_child, 0, name="child0")
    c1 = await t.spawn(_churn_child, 1, name="child1")
    await t.join(c0)
    await t.join(c1)


async def _freer(t) -> None:
    for i in range(2):
        await t.wait(t.shared.ready[i])
        p = t.shared.blocks[i]
        await t.free(p)             # a foreign free: the owner may have exited
        # Ask for a goal and poll it, through the slot as it is now: the array may have grown
        # since the last blocking call.
        goal = await qsbr.advance(t.qsbr)
        await qsbr.poll(t.qsbr, goal)


THREAD_CHURN = Scenario(
    name="thread-churn",
    description="two threads start and exit (the second start grows the QSBR array) while "
                "another frees their blocks and polls QSBR",
    threads=(("churner", _churner), ("freer", _freer)),
    setup=_churn_setup,
    mutations={"qsbr-unregister-stale-slot": ("segfault",)},
    dfs_bound=1,
    pct_steps=80,
)

# ---------------------------------------------------------------------------------------------
# shutdown-del-thread


@dataclass
class _Shutdown:
    slot: int               # the module global: the object, once published
    refused: list[str]      # PythonFinalizationError messages the destructor caught


async def _worker(t) -> None:
    for _ in range(4):
        await t.periodic_check()            # reads its own eval_breaker


async def _starts_a_thread(t, op: int) -> None:
    """The destructor (`tp_dealloc` calling `__del__`): start a worker thread."""
    try:
        await t.spawn(_worker, name="late")
    except PythonFinalizationError as e:
        t.shared.refused.append(str(e))


STARTER = PyType("Starter", clear=_starts_a_thread)


def _shutdown_setup(rt) -> None:
    rt.shared = _Shutdown(slot=rt.raw_calloc(8), refused=[])

    async def clear_module(t) -> None:
        op = await t.mem.exchange(t.shared.slot, 0, 8, SEQ_CST)
        if op:
            await t.decref(op)

    rt.at_module_teardown(clear_module)


async def _maker(t) -> None:
    op = await t.new_object(STARTER)
    await t.mem.store(t.shared.slot, op, 8, SEQ_CST)   # the module global owns it


async def _toucher(t) -> None:
    op = await t.mem.load(t.shared.slot, 8, SEQ_CST)
    if op and await try_incref_compare(t, t.shared.slot, op):    # _Py_XGetRef on the global
        await t.decref(op)


def _shutdown_check(rt) -> None:
    refused = rt.shared.refused
    if refused != ["can't create new thread at interpreter shutdown"]:
        raise ViolationError("check", f"the destructor's thread start at shutdown raised "
                                      f"{refused or 'nothing'}, not PythonFinalizationError once")


SHUTDOWN_DEL_THREAD = Scenario(
    name="shutdown-del-thread",
    description="a destructor run by finalize_modules starts a thread: PythonFinalizationError",
    threads=(("a", _maker), ("b", _toucher)),
    setup=_shutdown_setup,
    check=_shutdown_check,
    mutations={"finalization-allows-threads": ("segfault", "use-after-free", "check")},
    pct_steps=20,
)

# ---------------------------------------------------------------------------------------------
# start-races-finalize (issue 11 item 4): thread start racing finalization


@dataclass
class _Race:
    refused: list[str]      # PythonFinalizationError messages the daemon caught
    started: list[int]      # threads the daemon started
    late_refused: list[str]     # ... the finalizing thread's destructor caught


async def _late_child(t) -> None:
    p = await t.malloc(16)
    t.rt.mem.store_u64(p, 1)
    await t.free(p)
    await t.periodic_check()            # a QSBR quiescent state; may suspend for a stop


async def _daemon_starter(t) -> None:
    """A daemon thread that starts a (daemon) child and reclaims a block behind a QSBR goal
    while the main thread finalizes."""
    p = await t.malloc(16)
    child = None
    try:
        child = await t.spawn(_late_child, name="child")
        t.shared.started.append(1)
    except PythonFinalizationError as e:
        t.shared.refused.append(str(e))
    await t.free(p)
    goal = await qsbr.advance(t.qsbr)   # through the slot as it is now
    await qsbr.poll(t.qsbr, goal)
    await t.periodic_check()
    if child is not None:
        await t.join(child)             # detached: its re-attach may come after finalization


async def _finalizer(t) -> None:
    await t.rt.finalize_ex(t)


def _race_setup(rt) -> None:
    rt.shared = _Race(refused=[], started=[], late_refused=[])

    async def clear_module(t) -> None:
        # finalize_modules: a destructor on the finalizing thread starts a thread
        try:
            await t.spawn(_late_child, name="late")
        except PythonFinalizationError as e:
            t.shared.late_refused.append(str(e))

    rt.at_module_teardown(clear_module)


def _race_check(rt) -> None:
    r = rt.shared
    # The daemon tests the flag while attached, and the flag is set only with the world
    # stopped, after which the daemon never runs Python again: its start never raises.
    if r.refused:
        raise ViolationError("check", f"the daemon's thread start raised {r.refused}: it saw "
                                      "the finalizing flag while attached")
    if r.late_refused != ["can't create new thread at interpreter shutdown"]:
        raise ViolationError("check", f"the finalizing thread's start raised "
                                      f"{r.late_refused or 'nothing'}, not "
                                      "PythonFinalizationError once")


START_RACES_FINALIZE = Scenario(
    name="start-races-finalize",
    description="a daemon thread starts a thread and frees behind QSBR while main runs "
                "Py_FinalizeEx (stop the world, finalizing flags, daemon thread states deleted)",
    threads=(("main", _finalizer), ("daemon", _daemon_starter)),
    daemon=("daemon",),
    setup=_race_setup,
    check=_race_check,
    mutations={"finalization-frees-daemon-tstate": ("segfault", "use-after-free"),
               "finalization-restarts-daemons": ("lifecycle",)},
    # 3.13 frees the daemons' thread states: the window is real there (pystate.py finalize_ex)
    versions=("3.14", "main"),
    pct_steps=60,
)

SCENARIOS = (BATCHED_WAIT, BATCHED_WAIT_STW, THREAD_CHURN, SHUTDOWN_DEL_THREAD,
             START_RACES_FINALIZE)
