"""Dicts with lock-free readers (`ftlab.runtime.dictobject`), in the shapes of CPython's
`Lib/test/test_free_threading/test_dict.py` (concurrent setdefault, insert and resize while
other threads read).

- `dict-setdefault` (`test_racing_set_default` / `PyDict_SetDefaultRef`, gh-112066): a worker
  calls `d.setdefault(k, new)` and drops its own reference to `new`, reaches the eval loop's
  periodic check and then uses the result; the main thread meanwhile assigns `d[k] = other`,
  which drops the dict's reference to `new` (a non-owner's decref: the object goes to the
  worker's BRC queue, merged and freed at its periodic check). With the new reference of
  `PyDict_SetDefaultRef` the result stays alive. Mutation `borrowed-setdefault`: the result is
  `PyDict_SetDefault`'s borrowed pointer and the worker uses a freed object
  (`use-after-free`).
- `dict-resize-read` (`test_racing_get_set_dict` shape, a `LOAD_GLOBAL`-style reader): the
  main thread fills `d` with five keys (a full 8-slot table), starts a reader that reads
  `d['a']` twice lock-free (`_Py_dict_lookup_threadsafe`; the first read of a value the main
  thread owns fails its try-incref, shared field 0, and takes the locked path, whose
  `_Py_NewRefWithLock` sets MAYBE_WEAKREF so the second can succeed lock-free), then inserts a
  sixth key (`dictresize`: new keys published, the old ones freed with `_PyMem_FreeDelayed`,
  the reader having marked the dict shared), replaces `d['a']` (freeing the old value) and
  allocates objects of the value's size class, each weakly referenced (MAYBE_WEAKREF), until
  one reuses the old value's address. Then it processes its delayed-free queue
  (`_PyMem_ProcessDelayed`, what the queue's chunk-full valve or the eval breaker runs) while
  the reader may still be probing the old keys, and allocates a block of the old keys' size.
  The reader checks that what it got for `'a'` is one of the values `'a'` had.
  Mutations: `dict-keys-freed-at-once` (the resize frees the old keys at once: the reader
  probes freed memory: `use-after-free`, `premature-reuse` or the free's write racing with its
  read, `data-race`); `dict-lookup-no-keys-recheck` (the reader's try-incref on the stale
  table's slot succeeds on the new object at the old value's address and, without the
  `ma_keys` re-check, `d['a']` returns another key's object: `check`). An early free in queue
  processing (an item freed before its goal) is caught the same way as the first mutation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ftlab.runtime import dictobject as dt
from ftlab.runtime.typeobject import intern
from ftlab.runtime import obmalloc
from ftlab.runtime.object import PyType, load_field
from ftlab.scenarios import Scenario
from ftlab.sim.memory import Tag
from ftlab.sim.violation import ViolationError

TAG = 32                                # a value's payload word: which key it was made for
VALUE = PyType("Value", basicsize=4000)     # one block per page extension: reuse comes soon
REUSE_TRIES = 4


@dataclass
class _Shared:
    keys: dict[str, int]
    dict: int = 0
    # tags of the values `'a'` had, and what the reader got
    valid: set[int] = field(default_factory=set)
    seen: list[int] = field(default_factory=list)
    used: list[int] = field(default_factory=list)


def _setup(rt) -> None:
    rt.shared = _Shared({s: intern(rt, s) for s in ("a", "b", "c", "d", "e", "f", "k")})


async def _new_value(t, tag: int) -> int:
    v = await t.new_object(VALUE)
    t.mem.store_u64(v + TAG, tag, Tag.PAYLOAD)
    return v


async def _setitem_new(t, key: str, tag: int) -> None:
    """`d[key] = Value(tag)`: the dict holds the only reference."""
    s = t.shared
    v = await _new_value(t, tag)
    await dt.setitem(t, s.dict, s.keys[key], v)
    await t.decref(v)


# ---------------------------------------------------------------------------------------------
# dict-setdefault

async def _setdefault_worker(t) -> None:
    s = t.shared
    new = await _new_value(t, 2)
    rc, v = await dt.setdefault_ref(t, s.dict, s.keys["k"], new)
    await t.decref(new)
    await t.periodic_check()
    s.used.append(load_field(t, v, TAG))     # use the result
    await dt.setdefault_release(t, v)
    await t.decref(s.dict)                  # the worker's reference: queued to main, its owner
    await t.periodic_check()


async def _main_setdefault(t) -> None:
    s = t.shared
    s.dict = await dt.dict_new(t)
    await t.incref(s.dict)                  # the worker's reference
    worker = await t.spawn(_setdefault_worker, name="worker")
    await _setitem_new(t, "k", 1)           # d[k] = other
    await t.decref(s.dict)
    await t.periodic_check()                # merges the worker's decref if queued: the dict
    await t.join(worker)                    # may die with the worker still running


DICT_SETDEFAULT = Scenario(
    name="dict-setdefault",
    description="a worker uses what d.setdefault(k, new) returned while the main thread "
                "replaces d[k]",
    threads=(("main", _main_setdefault),),
    setup=_setup,
    mutations={"borrowed-setdefault": ("use-after-free",)},
    dfs_bound=2,
    pct_steps=40,
)


# ---------------------------------------------------------------------------------------------
# dict-resize-read

async def _reader(t) -> None:
    s = t.shared
    for _ in range(2):
        v = await dt.getitem_ref(t, s.dict, s.keys["a"])
        if v:
            s.seen.append(load_field(t, v, TAG))
            await t.decref(v)
        await t.periodic_check()


async def _main_resize(t) -> None:
    s = t.shared
    s.dict = await dt.dict_new(t)
    for i, key in enumerate("abcde"):
        await _setitem_new(t, key, 10 + i)
    s.valid = {10, 20}
    reader = await t.spawn(_reader, name="reader")
    await _setitem_new(t, "f", 15)          # the sixth key: dictresize
    await _setitem_new(t, "a", 20)          # the old value of 'a' is freed
    weak = []
    for _ in range(REUSE_TRIES):            # objects with a weak reference each
        o = await _new_value(t, 99)
        await t.set_maybe_weakref(o)
        weak.append(o)
    await obmalloc.process_delayed(t)       # _PyMem_ProcessDelayed
    p = await t.malloc(dt.keys_size(dt.PyDict_LOG_MINSIZE))    # may reuse the old keys
    await t.free(p)
    await t.join(reader)
    for o in weak:
        await t.decref(o)
    await t.decref(s.dict)


def _check_resize(rt) -> None:
    s = rt.shared
    for tag in s.seen:
        if tag not in s.valid:
            raise ViolationError(
                "check", f"the reader's d['a'] returned an object made with tag {tag}, which "
                         f"was never a value of 'a' (its values had tags "
                         f"{', '.join(map(str, sorted(s.valid)))})")


DICT_RESIZE_READ = Scenario(
    name="dict-resize-read",
    description="a lock-free reader reads d['a'] while the main thread resizes d, replaces "
                "d['a'], reuses the old value's address and processes its delayed frees",
    threads=(("main", _main_resize),),
    setup=_setup,
    check=_check_resize,
    mutations={"dict-keys-freed-at-once": ("use-after-free", "premature-reuse", "data-race"),
               "dict-lookup-no-keys-recheck": ("dict-lookup",)},
    dfs_bound=2,
    pct_steps=90,
)

SCENARIOS = (DICT_SETDEFAULT, DICT_RESIZE_READ)
