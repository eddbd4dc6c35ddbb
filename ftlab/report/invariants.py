"""Each violation kind as the invariant it breaks, in words (DESIGN §5)."""

from __future__ import annotations

INVARIANTS: dict[str, str] = {
    "segfault": "every access is to reserved, committed memory",
    "use-after-free": "no thread reads or writes a block that is not live (header reads and "
                      "the failing CAS of try-incref excepted)",
    "resurrection": "try-incref never succeeds on a freed block",
    "premature-reuse": "memory a thread may still read without a lock is not reused for another "
                       "size class or heap tag, nor decommitted, before every attached thread "
                       "has passed a quiescent state since it was freed",
    "refcount": "local + (shared >> 2) equals the strong references held; only the owner "
                "writes ob_ref_local; an object is deallocated exactly once, when its count "
                "reaches zero",
    "double-free": "a block is freed at most once",
    "invalid-free": "only a pointer the allocator handed out is freed",
    "heap-integrity": "page and queue metadata agree with the blocks",
    "leak": "after every thread exits and a final collection, the allocated blocks are the "
            "baseline",
    "gc-count": "the interpreter's count plus the threads' buffers equals allocations minus "
                "deallocations since the last reset",
    # block counting for leak hunts (gh-115184)
    "block-count": "sys.getallocatedblocks() returns exactly the blocks allocated and not freed "
                   "at that moment",
    "ref-total": "with the world stopped, the total refcount equals the strong references held "
                 "to live objects, a BRC queue's included",
    "type-cache": "a type-cache lookup returns a value the attribute had at some moment during "
                  "the lookup",
    # dicts (issue 10)
    "dict-lookup": "a dict lookup returns an object that was the key's value at some moment "
                   "during the lookup",
    # QSBR page lists (gh-145615)
    "page-list": "a page on a QSBR page list is on exactly one list, has a goal and (CPython "
                 "main) is on its owner's list and out of the full queue; every empty page "
                 "with a goal of a live heap is on a list",
    # thread lifecycle at finalization (issue 11)
    "lifecycle": "once a thread has started finalizing the runtime, no other thread attaches",
    "deadlock": "while a thread is unfinished, some thread can run",
    "livelock": "every run ends within the step bound",
    "data-race": "every two accesses to the same memory, one of them a write and not both "
                 "atomic, are ordered by happens-before",
    "check": "the scenario's own end-of-run check holds",
    "crash": "the model and the scenario run without an exception (a crash is a bug in the "
             "model, never a finding)",
}


def invariant(kind: str) -> str:
    return INVARIANTS.get(kind, kind)
