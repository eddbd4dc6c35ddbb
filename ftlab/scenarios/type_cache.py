"""The type attribute cache and MRO replacement (`ftlab.runtime.typeobject`), in the shapes
of CPython's `Lib/test/test_free_threading/test_type.py`.

- `type-cache-consistency` (`test_attr_cache`): types A (attribute `x`) and B (attribute `y`)
  whose versions hash `x` and `y` to the same cache entry (the set-up has other classes use
  up versions first, as a real program's do). The main thread fills the entry with `A.x`,
  starts a reader that looks `A.x` up twice, then looks `B.y` up (a miss that rewrites the
  shared entry) and assigns `A.x` a new value (invalidating A). The seqlock makes a reader
  that overlapped the rewrite retry. Mutation `type-cache-no-seqlock`: the reader matches the
  old version and name and then reads the new value: `A.x` returns `B.y` (`type-cache`).
- `type-bases-change` (`test___bases___modification` shape): class C(P1); a reader takes C's
  MRO with `_PyType_GetMRO`, walks it and looks `C.x` up, while the main thread assigns
  `C.__bases__ = (P2,)`, which drops the old MRO tuple. Mutation `borrowed-mro`: the MRO is
  returned borrowed and the reader walks a freed tuple (`use-after-free`).
- `type-cache-shadow` (gh-132942, `test_attr_cache` with a shadowing assignment): class P with
  `x`, class C(P) without, C with a version V0 (a lookup of `C.y`), and the next version to be
  handed out hashing `x` to the same cache entry as V0. A reader looks `C.x` up twice; its first lookup misses and walks
  the MRO under TYPE_LOCK: C's dict has no `x`, P's dict read takes P's dict critical section
  (first reads of a value the main thread owns fail their try-incref, and a non-owner's first
  read marks the dict shared under its lock). A writer reads `P.__dict__['x']` (taking the same
  section) and then assigns `C.x = v2`. When the reader blocks on P's dict its TYPE_LOCK
  section is suspended and the assignment can run in the middle of its walk. With the fix the
  reader's version was assigned before the walk and the assignment invalidated it, so the
  entry it then publishes is never hit. Mutation `type-cache-version-first`: the version is
  assigned after the walk, the entry says (new version, `x`, P's value) and the reader's
  second lookup returns `P.x` although `C.x` is v2 (`type-cache`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ftlab.runtime import dictobject as dt
from ftlab.runtime import typeobject as ty
from ftlab.runtime.object import PyType
from ftlab.runtime.tupleobject import tuple_get_item, tuple_size
from ftlab.scenarios import Scenario


@dataclass
class _Types:
    names: dict[str, int]
    values: dict[str, int]
    types: dict[str, int] = field(default_factory=dict)


def _setup(rt) -> None:
    ty.init_types(rt)
    names = {s: ty.intern(rt, s) for s in ("x", "y")}
    values = {s: rt.objects.immortal_object(None, 32, s) for s in ("A.x", "B.y", "A.x2",
                                                                    "P1.x", "P2.x", "C.x")}
    rt.shared = _Types(names, values)


# ---------------------------------------------------------------------------------------------
# type-cache-consistency

async def _reader_ab(t) -> None:
    s = t.shared
    for _ in range(2):
        v = await ty.lookup_ref(t, s.types["A"], s.names["x"])
        if v:
            await t.decref(v)


async def _main_ab(t) -> None:
    s = t.shared
    rt = t.rt
    ts = rt.types
    x, y = s.names["x"], s.names["y"]
    a = s.types["A"] = await ty.type_new(t, "A", [])
    b = s.types["B"] = await ty.type_new(t, "B", [])
    await ty.type_setattro(t, a, x, s.values["A.x"])
    await ty.type_setattro(t, b, y, s.values["B.y"])
    await _drop(t, await ty.lookup_ref(t, a, x))      # A gets a version; fills its entry
    va = t.mem.peek(a + ty.TP_VERSION_TAG, 4)
    # other classes used versions until B's next one hashes `y` to A.x's entry
    target = ty.mcache_hash(va, x)
    v = ts.next_version_tag
    while ty.mcache_hash(v, y) != target:
        v += 1
    ts.next_version_tag = v
    # B gets that version (a miss hashes with B's version of the moment, 0, elsewhere)
    await _drop(t, await ty.lookup_ref(t, b, y))
    reader = await t.spawn(_reader_ab, name="reader")
    value = await ty.lookup_ref(t, b, y)
    if value:
        await t.decref(value)
    await ty.type_setattro(t, a, x, s.values["A.x2"])
    await t.join(reader)
    await _clear(t, ("A", "B"))


async def _drop(t, value: int) -> None:
    if value:
        await t.decref(value)


async def _clear(t, names) -> None:
    for name in names:
        await ty.type_clear(t, t.shared.types[name])


TYPE_CACHE_CONSISTENCY = Scenario(
    name="type-cache-consistency",
    description="a reader looks A.x up while the main thread's miss on B.y rewrites the same "
                "cache entry and then assigns A.x",
    threads=(("main", _main_ab),),
    setup=_setup,
    mutations={"type-cache-no-seqlock": ("type-cache",)},
    dfs_bound=2,
    pct_steps=60,
)


# c11 memory model (ftlab/sim/c11.py): the same program under C11 atomics, where the seqlock's
# fences (Python/lock.c, gh-121368) matter; under SC both mutations are invisible (the fields
# are atomics, so the race detector has nothing to say).
TYPE_CACHE_C11 = Scenario(
    name="type-cache-c11",
    description="type-cache-consistency under the c11 memory model: the seqlock's release "
                "and acquire fences keep a reader from mixing a new field with an old sequence",
    threads=(("main", _main_ab),),
    setup=_setup,
    mutations={"seqlock-end-read-no-fence": ("type-cache",),
               "seqlock-lock-write-no-fence": ("type-cache",)},
    dfs_bound=2,
    pct_steps=60,
    dfs=False,  # the store choices make the DFS tree wide; random and PCT reach the bugs
    config={"memory_model": "c11"},
    # The seqlock does not differ between the version policies; c11 runs cost ~1.5x SC ones.
    versions=("3.14",),
)


# ---------------------------------------------------------------------------------------------
# type-bases-change

async def _reader_bases(t) -> None:
    s = t.shared
    c = s.types["C"]
    mro = await ty.get_mro(t, c)
    await t.periodic_check()
    for i in range(tuple_size(t.mem, mro)):
        tuple_get_item(t, mro, i)
    await ty.mro_release(t, mro)
    v = await ty.lookup_ref(t, c, s.names["x"])
    if v:
        await t.decref(v)


async def _main_bases(t) -> None:
    s = t.shared
    x = s.names["x"]
    p1 = s.types["P1"] = await ty.type_new(t, "P1", [])
    p2 = s.types["P2"] = await ty.type_new(t, "P2", [])
    await ty.type_setattro(t, p1, x, s.values["P1.x"])
    await ty.type_setattro(t, p2, x, s.values["P2.x"])
    c = s.types["C"] = await ty.type_new(t, "C", [p1])
    reader = await t.spawn(_reader_bases, name="reader")
    await ty.type_set_bases(t, c, [p2])
    await t.join(reader)
    await _clear(t, ("C", "P1", "P2"))


TYPE_BASES_CHANGE = Scenario(
    name="type-bases-change",
    description="a reader walks C's MRO and looks C.x up while the main thread assigns "
                "C.__bases__, dropping the old MRO tuple",
    threads=(("main", _main_bases),),
    setup=_setup,
    mutations={"borrowed-mro": ("use-after-free", "data-race")},
    dfs_bound=2,
    pct_steps=60,
)

# ---------------------------------------------------------------------------------------------
# type-cache-shadow

VALUE = PyType("Value", basicsize=48)


async def _reader_shadow(t) -> None:
    s = t.shared
    for _ in range(2):
        v = await ty.lookup_ref(t, s.types["C"], s.names["x"])
        if v:
            await t.decref(v)


async def _writer_shadow(t) -> None:
    s = t.shared
    p = s.types["P"]
    v = await dt.getitem_ref(t, ty.type_dict(t.mem, p), s.names["x"])     # P.__dict__['x']
    if v:
        await t.decref(v)
    await ty.type_setattro(t, s.types["C"], s.names["x"], s.values["C.x"])


async def _main_shadow(t) -> None:
    s = t.shared
    x = s.names["x"]
    p = s.types["P"] = await ty.type_new(t, "P", [])
    px = await t.new_object(VALUE)          # owned by main: others' first reads fall back
    await ty.type_setattro(t, p, x, px)
    c = s.types["C"] = await ty.type_new(t, "C", [p])
    await _drop(t, await ty.lookup_ref(t, c, s.names["y"]))   # C gets a version, V0
    # other classes used versions until C's next one hashes `x` where V0 does: the reader's
    # miss fills the entry of (V0, x), which a lookup under the new version then finds
    ts = t.rt.types
    ts.next_version_tag = t.mem.peek(c + ty.TP_VERSION_TAG, 4) + ty.MCACHE_SIZE
    reader = await t.spawn(_reader_shadow, name="reader")
    writer = await t.spawn(_writer_shadow, name="writer")
    await t.join(reader)
    await t.join(writer)
    await _clear(t, ("C", "P"))


TYPE_CACHE_SHADOW = Scenario(
    name="type-cache-shadow",
    description="a reader's type-cache miss walks C's MRO and blocks on P's dict while a "
                "writer assigns a shadowing C.x",
    threads=(("main", _main_shadow),),
    setup=_setup,
    mutations={"type-cache-version-first": ("type-cache",)},
    dfs_bound=1,            # DFS(1) is exhausted in 708 schedules; DFS(2) not in 6,000
    pct_steps=120,
)

SCENARIOS = (TYPE_CACHE_CONSISTENCY, TYPE_BASES_CHANGE, TYPE_CACHE_SHADOW,
             TYPE_CACHE_C11)  # the last: c11 memory model
