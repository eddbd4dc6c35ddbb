"""Configuration of one run: the CPython version policy, the debug allocator, the mutations.

A `Config` is frozen: a run is a pure function of (scenario, config, schedule), so nothing
here may change while a run is going.
"""

from __future__ import annotations

from dataclasses import dataclass, field

VERSIONS = ("3.13.0", "3.14",
            # pagelist: CPython main after gh-145615 (PR #145626, 2026): a page deferred for
            # QSBR goes on its owner's list and leaves the full queue
            "main")

# What each version policy models (issue 12): the CPython releases whose QSBR/obmalloc policy
# it matches. The names are the config strings; gh-133136 was backported to 3.13.6, so "3.14"
# is also the policy of 3.13.6 and later.
VERSION_RELEASES: dict[str, str] = {
    "3.13.0": "CPython 3.13.0-3.13.5: deferred advance (a real advance every 10th deferral; "
              "thread exit as in 3.13.0-3.13.2, before gh-130794)",
    "3.14": "CPython 3.13.6+ and 3.14: gh-133136 (obmalloc decides when to advance and process)",
    "main": "CPython main (3.15 development) after gh-145615 / PR #145626 (2026): a page emptied "
            "during a stop-the-world pause goes on its owner's QSBR list and out of the full queue",
}

# Every switch that turns one fix off (DESIGN §6), with the bug it lets through. Engine-level
# mutations belong to the engine scenarios that demonstrate the scheduler and race detector.
# Only mutations whose mechanism exists are listed: a name that switched nothing off would let a
# user believe a bug was shown absent. DESIGN §6 names more (type cache, MRO, setdefault, block
# counting, finalization); each joins this table with its mechanism.
MUTATIONS: dict[str, str] = {
    # engine scenarios (ftlab/scenarios/engine.py)
    "unsync-rmw": "increment a shared counter with a separate load and store instead of fetch_add",
    "lock-order-inversion": "take two mutexes in opposite orders in the two threads",
    "relaxed-message": "publish a message with relaxed atomics instead of release/acquire",
    # runtime fixes (DESIGN §6)
    "no-page-delay": "empty QSBR-heap pages are reused at once, not after a grace period",
    "no-free-delayed": "_PyMem_FreeDelayed frees at once instead of after a grace period",
    "debug-fill-header": "the debug allocator overwrites ob_tid/ob_ref_* with DEADBYTE on free",
    "debug-offset-bug": "the debug hooks ignore mimalloc's debug_offset (PR #116018)",
    "debug-dealloc-heap-bug": "the debug hooks free objects into the wrong heap (PR #116018)",
    "tryincref-accepts-zero": "try-incref succeeds on a shared field of exactly 0",
    "merge-order-bug": "merge sets MERGED before storing ob_tid and ob_ref_local (gh-119999)",
    "brc-no-queue": "a non-owner decref that reaches zero does not queue the object",
    # free-threaded GC (ftlab/runtime/gc.py)
    "gc-no-merge": "the GC computes gc_refs without first merging the threads' BRC queues",
    "gc-tid-not-restored": "the GC leaves gc_refs in ob_tid of reachable objects (not restored)",
    "gc-skips-abandoned": "gc_visit_heaps misses the abandoned pool (dead threads' objects)",
    "gc-count-lost": "record_deallocation resets its buffer without adding it to the count",
    # types: critical sections, the type cache, dicts
    "critical-section-no-suspend": "detaching leaves critical sections locked (a plain per-object lock)",
    "type-cache-no-seqlock": "type cache readers and writers skip the per-entry sequence lock",
    "borrowed-mro": "_PyType_GetMRO returns the MRO tuple borrowed (another thread may drop it)",
    # block counting for leak hunts (obmalloc.c get_num_global_allocated_blocks, gh-115184)
    "blockcount-skips-abandoned": "sys.getallocatedblocks() does not visit the abandoned pool",
    "blockcount-no-stw": "sys.getallocatedblocks() walks other threads' pages without "
                         "stopping the world",
    "blockcount-no-collect": "sys.getallocatedblocks() reads a page's used count before "
                             "collecting the frees of other threads",
    "reftotal-untracked-brc": "the total refcount misses the BRC queue's reference and the "
                              "explicit merge's extra (before gh-115184)",
    # thread lifecycle and batched waits (ftlab/runtime/waits.py)
    "batched-wait-unjoined-helpers": "BatchedWaitForMultipleObjects frees its batch records "
                                     "without waiting for every helper thread to exit",
    "batched-wait-no-cancel": "BatchedWaitForMultipleObjects does not set its cancel event once "
                              "its wait ends: helpers of other batches never return",
    "batched-wait-attached": "a Python thread stays attached during BatchedWaitForMultipleObjects "
                             "(no Py_BEGIN_ALLOW_THREADS): a stop-the-world waits for it forever",
    "process-queue-rd-after-free": "process_queue advances rd_idx after freeing the item: a "
                                   "destructor that processes the queue again frees it twice",
    "finalization-allows-threads": "thread start does not raise PythonFinalizationError once the "
                                   "interpreter is finalizing (before gh-114570): a destructor "
                                   "at shutdown starts a thread that outlives its thread state",
    # QSBR page lists, gh-145615 (ftlab/runtime/obmalloc.py QsbrPageHooks; version "main")
    "qsbr-page-list-current-thread": "a page found empty by another thread (the GC, world "
                                     "stopped) goes on the current thread's QSBR page list, "
                                     "not its owner's (pre-gh-145615)",
    "qsbr-page-stranded": "a page deferred for QSBR while in the full queue stays there, where "
                          "allocation never searches (pre-gh-145615)",
    # checker coverage (issue 12 item 2): mimalloc's xthread_free list
    "mi-thread-free-collect-store": "_mi_page_thread_free_collect takes the xthread_free list "
                                    "with a load and a store instead of an atomic exchange",
    "mi-free-mt-plain-store": "_mi_free_block_mt pushes on xthread_free with a plain store "
                              "instead of a CAS",
    # thread creation and exit (ftlab/runtime/qsbr.py, pystate.py; scenario thread-churn)
    "qsbr-unregister-stale-slot": "_Py_qsbr_unregister loads tstate->qsbr before taking the QSBR "
                                  "mutex: a growth of the array while it waits leaves it the "
                                  "freed slot",
    # c11 memory model (ftlab/sim/c11.py): orders weakened at real call sites, found in c11 mode
    "seqlock-end-read-no-fence": "_PySeqLock_EndRead reloads the sequence with an acquire load "
                                 "and no acquire fence before it (the bug gh-121368 fixed)",
    "seqlock-lock-write-no-fence": "_PySeqLock_LockWrite has no release fence after its CAS to "
                                   "an odd sequence",
    # dicts and lists with lock-free reads (ftlab/runtime/dictobject.py, listobject.py)
    "borrowed-setdefault": "PyDict_SetDefaultRef returns PyDict_SetDefault's borrowed value "
                           "(another thread may replace and free it before it is used)",
    "dict-keys-freed-at-once": "free_keys_object frees a shared dict's old keys at once, not "
                               "with _PyMem_FreeDelayed",
    "dict-lookup-no-keys-recheck": "_Py_dict_lookup_threadsafe does not re-check ma_keys after "
                                   "the try-incref of the value (a stale table's slot passes)",
    "list-items-freed-at-once": "free_list_items frees a shared list's old array at once, not "
                                "with _PyMem_FreeDelayed",
    "type-cache-version-first": "_PyType_LookupRef's slow path assigns the version after the MRO "
                                "walk and publishes it before the value (before gh-132942)",
    # checker coverage (issue 12 item 2): delayed-free processing with a reader alive
    "free-delayed-stale-goal": "free_delayed gives an item the write sequence read before its "
                               "advance (a goal a thread that quiesced before loading the "
                               "pointer has already reached)",
    "reclaim-ignores-goal": "_PyMem_mi_page_is_safe_to_free says an abandoned all-free page "
                            "is safe without looking at its QSBR goal",
    "merge-keeps-tid": "_Py_MergeZeroLocalRefcount does not clear ob_tid: the merged object "
                       "still looks owned, so the owner's try-incref takes a local reference",
    # issue 11: thread start racing finalization (ftlab/runtime/pystate.py finalize_ex)
    "finalization-frees-daemon-tstate": "_PyThreadState_DeleteList frees the daemon threads' "
                                        "thread states at shutdown (3.13's free_threadstate, "
                                        "not 3.14's decref): a thread that passed "
                                        "_PyThreadState_MustExit before the flag was set "
                                        "attaches on freed memory",
    "finalization-restarts-daemons": "Py_FinalizeEx starts the world again before "
                                     "_PyThreadState_RemoveExcept: the daemon threads are "
                                     "unparked and attach after the finalizing flags are set",
    # c11 memory model, QSBR (ftlab/runtime/qsbr.py; scenario list-attach-c11)
    "qsbr-attach-release": "_Py_qsbr_attach publishes the thread's sequence with a release "
                           "store, not seq_cst: a scan may still read OFFLINE after the thread "
                           "loaded a pointer, and free what it reads",
    "qsbr-scan-no-fence": "qsbr_poll_scan has no seq_cst fence before its loads: it may read "
                          "OFFLINE for a thread whose attach comes later and yet loads a "
                          "pointer older than the unlink",
}


class ConfigError(ValueError):
    """A bad configuration value; the command line turns it into one line and exit 2."""


@dataclass(frozen=True)
class Config:
    version: str = "3.14"
    debug_allocator: bool = False
    # CPython's Py_DEBUG build: mimalloc with MI_DEBUG=2 (8-byte padding, debug fills,
    # encoded free lists, its own double-free and overflow checks).
    pydebug: bool = False
    mutations: frozenset[str] = field(default_factory=frozenset)
    # Oracles that run at every step (heap-integrity and the like); off for pure measurement.
    checked: bool = True
    race_detection: bool = True
    # A run longer than this is a livelock.
    max_steps: int = 20_000
    # Record an event trace (costs time; replays of failures turn it on).
    trace: bool = False
    # The GC (gc_free_threading.c): `young.threshold` (CPython 2000) and the per-thread buffer
    # of allocation counts (LOCAL_ALLOC_COUNT_THRESHOLD, 512 in CPython; scenarios lower it to
    # reach a flush in a few allocations).
    gc_threshold: int = 2000
    gc_local_threshold: int = 512
    # Proposed fixes to CPython (not CPython's behaviour; off by default, so the faithful model
    # shows the gap). Abandoned pages, issue 12 item 4 (docs/findings/abandoned-page-goal.md):
    # a reclaim that finds a page all free with no QSBR goal (emptied by cross-thread frees
    # after its owner abandoned it) gives it a goal then, instead of treating it as safe.
    abandoned_page_goal: bool = False
    # The memory model of the atomics (ftlab/sim/c11.py): "sc", sequentially consistent at
    # scheduling points, or "c11", where a load may read any store coherence and
    # happens-before allow (the store is a scheduling decision).
    memory_model: str = "sc"

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise ConfigError(f"unknown version {self.version!r} (known: {', '.join(VERSIONS)})")
        if not isinstance(self.mutations, frozenset):
            object.__setattr__(self, "mutations", frozenset(self.mutations))
        unknown = sorted(self.mutations - MUTATIONS.keys())
        if unknown:
            raise ConfigError(f"unknown mutation {unknown[0]!r} (see `ftlab list`)")
        if self.max_steps <= 0:
            raise ConfigError(f"max_steps must be positive, not {self.max_steps}")
        if self.memory_model not in ("sc", "c11"):
            raise ConfigError(f"unknown memory model {self.memory_model!r} (known: sc, c11)")
        if self.gc_threshold < 0 or self.gc_local_threshold <= 0:
            raise ConfigError("gc_threshold must be >= 0 and gc_local_threshold positive")

    def mutated(self, name: str) -> bool:
        return name in self.mutations
