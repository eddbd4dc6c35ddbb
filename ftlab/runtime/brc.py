"""The inter-thread queue of biased reference counting: `Python/brc.c`,
`Include/internal/pycore_brc.h` (3.13/3.14).

When a non-owner's decrement finds an object with count 0 that is neither queued nor merged,
it cannot tell whether the object is dead: the owner may still hold local references. It marks
the object QUEUED (keeping its own reference, which now belongs to the queue) and asks the
owner to merge: `queue_object` pushes the object onto the owner's `objects_to_merge` stack and
sets the owner's EVAL_EXPLICIT_MERGE eval-breaker bit; at its next periodic check the owner
runs `merge_refcounts`, which merges each object with -1 (the queue's reference) and
deallocates those that reach 0.

Thread states are found by thread id in a per-interpreter hash table of 257 buckets (a prime),
each a list of thread states under a mutex; the mutex also protects the `objects_to_merge`
stacks of its threads. `local_objects_to_merge` belongs to the owner alone, so destructors run
without the bucket lock.

Thread exit (`remove_thread`): the thread drains its queue, and under the bucket lock leaves
the table only once its shared stack is empty. After that, a queuing thread that does not
find the owner merges the object itself (`explicit_merge_refcount(ob, -1)` under the bucket
lock: the owner will never touch `ob_ref_local` again, and the lock orders its last access
before the merge). A queuer that reads `ob_tid` 0 knows the owner merged concurrently and just
drops its reference.

Not modelled: the stack's allocation failure (stop-the-world fallback), 3.15's merge on behalf
of a detached owner. The GC merges every thread's queue with the world stopped
(`gc.merge_queued_objects`).

Mutation `brc-no-queue` (in `object.dec_ref_shared`): the decrement subtracts instead of
queueing, so the count reaches 0 with nobody left to deallocate the object (a leak).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ftlab.sim.atomics import SEQ_CST
from ftlab.sim.sync import Mutex

if TYPE_CHECKING:
    from ftlab.runtime.pystate import Runtime, ThreadState

BRC_NUM_BUCKETS = 257  # _Py_BRC_NUM_BUCKETS


class BrcBucket:
    """`struct _brc_bucket`: `root` lists the thread states whose tid hashes here."""

    __slots__ = ("mutex", "root")

    def __init__(self, rt: "Runtime", index: int) -> None:
        self.mutex: Mutex = rt.mutex(f"brc bucket {index}")
        self.root: list[ThreadState] = []


class BrcState:
    """`struct _brc_state` of the interpreter. Buckets are made on first use (a run touches
    a handful of the 257)."""

    __slots__ = ("rt", "buckets")

    def __init__(self, rt: "Runtime") -> None:
        from ftlab.runtime.pystate import EVAL_EXPLICIT_MERGE_BIT
        self.rt = rt
        self.buckets: dict[int, BrcBucket] = {}
        rt.add_pending("explicit_merge", merge_refcounts, bit=EVAL_EXPLICIT_MERGE_BIT)

    def bucket(self, tid: int) -> BrcBucket:
        """`get_bucket`: `table[tid % 257]`."""
        i = tid % BRC_NUM_BUCKETS
        b = self.buckets.get(i)
        if b is None:
            b = self.buckets[i] = BrcBucket(self.rt, i)
        return b

    def find_thread_state(self, tid: int) -> "ThreadState | None":
        """`find_thread_state` (caller holds the bucket mutex)."""
        for t in self.bucket(tid).root:
            if t.brc.tid == tid:
                return t
        return None


class BrcThreadState:
    """`struct _brc_thread_state`. The stacks hold object pointers; `objects_to_merge` is
    protected by the bucket mutex, `local_objects_to_merge` is the owner's."""

    __slots__ = ("tid", "objects_to_merge", "local_objects_to_merge")

    def __init__(self) -> None:
        self.tid = 0
        self.objects_to_merge: list[int] = []
        self.local_objects_to_merge: list[int] = []


# ---------------------------------------------------------------------------------------------
# Queueing (any thread) and merging (the owner)

async def queue_object(t: "ThreadState", ob: int) -> None:
    """`_Py_brc_queue_object`: hand `t`'s reference to `ob` to its owner's queue (the caller
    has just marked `ob` QUEUED)."""
    from ftlab.runtime import object as obj
    from ftlab.runtime.pystate import EVAL_EXPLICIT_MERGE_BIT, set_eval_breaker_bit

    rt = t.rt
    tid = await obj._on_live(t, ob, "ob_tid (queue)", t.mem.load(ob + obj.OB_TID, 8, SEQ_CST))
    if tid == obj.UNOWNED_TID:
        # The owner merged concurrently: it no longer needs our help.
        await obj.decref(t, ob)
        return
    state = rt.brc
    bucket = state.bucket(tid)
    await t.lock(bucket.mutex)
    owner = state.find_thread_state(tid)
    if owner is None:
        # The owner has exited (it left the table under this lock, after its last access to
        # the object's local count): merge ourself, giving up the stolen reference.
        refcount = await obj.explicit_merge_refcount(t, ob, -1)
        await bucket.mutex.unlock()
        if refcount == 0:
            await obj.dealloc(t, ob)
        return
    owner.brc.objects_to_merge.append(ob)
    rt.stats["brc_queue_pushes"] += 1
    # The owner is linked (it cannot have freed its thread state: it leaves the table first).
    await set_eval_breaker_bit(owner, EVAL_EXPLICIT_MERGE_BIT)
    await bucket.mutex.unlock()


async def merge_refcounts(t: "ThreadState") -> None:
    """`_Py_brc_merge_refcounts`, run from `_Py_HandlePending` when EVAL_EXPLICIT_MERGE is
    set: take the shared stack under the bucket lock, then merge each object without it."""
    brc = t.brc
    bucket = t.rt.brc.bucket(brc.tid)
    assert brc.tid == t.tid, "only the owner merges its queue"
    await t.lock(bucket.mutex)
    _stack_merge(brc.local_objects_to_merge, brc.objects_to_merge)
    await bucket.mutex.unlock()
    await _merge_queued_objects(t, brc.local_objects_to_merge)


async def _merge_queued_objects(t: "ThreadState", stack: list[int]) -> None:
    """`merge_queued_objects`: merge with -1 (the queue's reference), deallocate at 0."""
    from ftlab.runtime import object as obj
    while stack:
        ob = stack.pop()
        if await obj.explicit_merge_refcount(t, ob, -1) == 0:
            await obj.dealloc(t, ob)


def _stack_merge(dst: list[int], src: list[int]) -> None:
    """`_PyObjectStack_Merge`: move every item of `src` onto `dst` (popped first)."""
    dst.extend(src)
    src.clear()


# ---------------------------------------------------------------------------------------------
# Thread life cycle

def init_thread(t: "ThreadState") -> None:
    """`_Py_brc_init_thread`, from the bound thread (PR #117271). In C it takes the bucket
    mutex; here it runs inside the step that starts the thread, and nothing another thread
    does under that mutex can observe a thread id nobody has used yet."""
    t.brc.tid = t.tid
    t.rt.brc.bucket(t.tid).root.append(t)


async def remove_thread(t: "ThreadState") -> None:
    """`_Py_brc_remove_thread`: merge everything queued for us and leave the table, in a loop
    because other threads may queue while we merge. After this no refcount operation of ours
    may touch our objects' local counts: other threads merge them directly."""
    brc = t.brc
    if brc.tid == 0:
        return                                  # never bound
    bucket = t.rt.brc.bucket(brc.tid)
    while True:
        await _merge_queued_objects(t, brc.local_objects_to_merge)
        await t.lock(bucket.mutex)
        empty = not brc.objects_to_merge
        if empty:
            bucket.root.remove(t)
        else:
            _stack_merge(brc.local_objects_to_merge, brc.objects_to_merge)
        await bucket.mutex.unlock()
        if empty:
            break
    assert not brc.local_objects_to_merge and not brc.objects_to_merge, "queue left behind"
