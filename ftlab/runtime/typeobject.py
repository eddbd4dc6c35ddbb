"""Types and the type attribute cache (`Objects/typeobject.c`, free-threaded build).

What is modelled: types with bases, an MRO tuple (`ftlab.runtime.tupleobject`, strong
references to the types) and attributes; version tags; the per-interpreter 4096-entry method
cache with a sequence lock per entry (`ftlab.runtime.lock`); `_PyType_LookupRef` (the lock-free
fast path and the slow path under TYPE_LOCK); invalidation on attribute assignment
(`type_setattro` / `type_update_dict`) and on `__bases__` assignment (`type_set_bases`);
`_PyType_GetMRO` / `_PyType_GetBases` returning new references.

Layout of a type object (a static immortal object here: heap-type deallocation is not
modelled) after its PyObject header:

    +32 tp_version_tag  u32  0 = no valid version; else from interp->types.next_version_tag
    +40 tp_mro          u64  a tuple: the type, then its bases' MRO (first occurrence kept;
                             enough for the single-inheritance shapes the scenarios use)
    +48 tp_bases        u64  a tuple of the direct bases
    +56 tp_dict         u64  the type's dict (`ftlab.runtime.dictobject`): name -> strong ref

Cache entry (`struct type_cache_entry`, 24 bytes): +0 version u32, +4 sequence u32
(`_PySeqLock`), +8 name (an interned name; names are immortal here), +16 value (borrowed).
`MCACHE_HASH(version, name) = (version ^ (name >> 3)) & 4095`.

Lookup (`_PyType_LookupRef`): under the entry's seqlock read the entry's version, the type's
version and the entry's name; on a match try-incref the value and validate the read with
`end_read` (retry if a writer ran). A miss takes TYPE_LOCK (a critical section), assigns the
version *before* walking the MRO (gh-132942: the walk may block and release the section, and a
value found then must not be cached under a newer version), finds the name (a new reference),
releases the lock and publishes the entry under the write side of the seqlock with the version
stored last, with release (gh-132942). The walk reads each base's dict with
`_PyDict_GetItemRef` (lock-free, falling back to the dict's critical section): blocking there
suspends TYPE_LOCK's section, so another thread can assign an attribute in the middle of the
walk. Attribute assignment takes TYPE_LOCK and the type's dict together
(`BEGIN_TYPE_DICT_LOCK`, a two-mutex critical section). The entry's value is borrowed: it is valid only while
the version matches, and every assignment that could drop the value first sets the version to
0 (`type_modified_unlocked`), which is what makes the try-incref of the fast path safe.

Invariant (oracle `type-cache`, `ftlab.check.typecache`): a lookup returns a value that was
the attribute's value (through the MRO) at some moment during the lookup.

Mutations: `type-cache-no-seqlock` (`ftlab.runtime.lock`); `borrowed-mro` (`get_mro`
returns the tuple borrowed, as the default build may); `type-cache-version-first`
(pre-gh-132942: the version assigned after the MRO walk and published before the value: a walk
that blocked while another thread assigned a shadowing attribute caches the old value under the
type's new version).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ftlab.runtime import critical_section as cs
from ftlab.runtime import dictobject as dt
from ftlab.runtime.lock import (
    seqlock_abandon_write,
    seqlock_begin_read,
    seqlock_end_read,
    seqlock_lock_write,
    seqlock_unlock_write,
)
from ftlab.runtime.object import OB_MUTEX, SIZEOF_PYOBJECT, try_incref, try_incref_compare
from ftlab.runtime.tupleobject import tuple_new, tuple_set_item, tuple_size, OB_ITEM as TUPLE_ITEM
from ftlab.sim.atomics import ACQUIRE, RELAXED, RELEASE
from ftlab.sim.memory import Tag

if TYPE_CHECKING:
    from ftlab.runtime.pystate import Runtime, ThreadState

TP_VERSION_TAG = SIZEOF_PYOBJECT
TP_MRO = SIZEOF_PYOBJECT + 8
TP_BASES = SIZEOF_PYOBJECT + 16
TP_DICT = SIZEOF_PYOBJECT + 24
SIZEOF_HEAPTYPE = TP_DICT + 8

MCACHE_SIZE_EXP = 12
MCACHE_SIZE = 1 << MCACHE_SIZE_EXP
MCACHE_MASK = MCACHE_SIZE - 1
ENTRY_VERSION = 0
ENTRY_SEQUENCE = 4
ENTRY_NAME = 8
ENTRY_VALUE = 16
SIZEOF_ENTRY = 24

TYPE_BASE_VERSION_TAG = 2 << 16         # _Py_TYPE_BASE_VERSION_TAG: heap types start here
MAX_VERSIONS_PER_CLASS = 1000


class TypeState:
    """`interp->types`: the method cache, TYPE_LOCK (a PyMutex in simulated memory, always
    taken through a critical section), the version counter; and the names of the types
    (`tp_name`), their subclasses (`tp_subclasses`) and versions used, kept beside them."""

    __slots__ = ("type_cache", "mutex", "next_version_tag", "names", "subclasses",
                 "versions_used", "interned")

    def __init__(self, rt: "Runtime") -> None:
        self.type_cache = rt.raw_calloc(MCACHE_SIZE * SIZEOF_ENTRY)
        self.mutex = rt.raw_calloc(8)
        rt.name_struct(self.type_cache, MCACHE_SIZE * SIZEOF_ENTRY, "type_cache.hashtable",
                       {ENTRY_VERSION: "version", ENTRY_SEQUENCE: "sequence",
                        ENTRY_NAME: "name", ENTRY_VALUE: "value"}, SIZEOF_ENTRY)
        rt.name_struct(self.mutex, 8, "type_cache", {0: "mutex"})
        self.next_version_tag = TYPE_BASE_VERSION_TAG
        self.names: dict[int, str] = {}
        self.subclasses: dict[int, list[int]] = {}
        self.versions_used: dict[int, int] = {}
        self.interned: dict[str, int] = {}


def init_types(rt: "Runtime") -> TypeState:
    """`_PyTypes_Init` for the model: make `rt.types` once."""
    if rt.types is None:
        rt.types = TypeState(rt)
    return rt.types


def intern(rt: "Runtime", s: str) -> int:
    """`PyUnicode_InternFromString`: one immortal name object per string, its hash computed
    (set-up code). Attribute names and dict keys."""
    ts = init_types(rt)
    op = ts.interned.get(s)
    if op is None:
        op = ts.interned[s] = rt.objects.immortal_object(None, dt.SIZEOF_STR, f"str {s!r}")
        rt.mem.store_u64(op + dt.STR_HASH, dt.str_hash(s), Tag.PAYLOAD)
    return op


def mcache_hash(version: int, name: int) -> int:
    return (version ^ (name >> 3)) & MCACHE_MASK


def entry_addr(rt: "Runtime", index: int) -> int:
    return rt.types.type_cache + index * SIZEOF_ENTRY


# ---------------------------------------------------------------------------------------------
# Types

async def _make_tuple(t: "ThreadState", items: list[int]) -> int:
    op = await tuple_new(t, len(items))
    for i, item in enumerate(items):
        await t.incref(item)
        tuple_set_item(t, op, i, item)
    return op


def _tuple_items(mem, op: int) -> list[int]:
    return [mem.load_u64(op + TUPLE_ITEM + 8 * i) for i in range(tuple_size(mem, op))]


def _compute_mro(mem, tp: int, bases: list[int]) -> list[int]:
    mro = [tp]
    for b in bases:
        for x in _tuple_items(mem, mem.load_u64(b + TP_MRO)):
            if x not in mro:
                mro.append(x)
    return mro


async def type_new(t: "ThreadState", name: str, bases: list[int]) -> int:
    """`type_new` for a class statement: a type with `bases`, its MRO, an empty dict and no
    version yet. The type object is immortal; its tuples and dict are ordinary objects."""
    rt = t.rt
    ts = init_types(rt)
    tp = rt.objects.immortal_object(None, SIZEOF_HEAPTYPE, f"type {name}")
    ts.names[tp] = name
    ts.subclasses[tp] = []
    ts.versions_used[tp] = 0
    mem = t.mem
    mem.store_u64(tp + TP_DICT, await dt.dict_new(t), Tag.PAYLOAD)
    mem.store_u64(tp + TP_BASES, await _make_tuple(t, bases), Tag.PAYLOAD)
    mem.store_u64(tp + TP_MRO, await _make_tuple(t, _compute_mro(mem, tp, bases)), Tag.PAYLOAD)
    for b in bases:
        ts.subclasses[b].append(tp)
    rt.observer.type_mro_set(t, tp, _compute_mro(mem, tp, bases))
    return tp


def type_name(rt: "Runtime", tp: int) -> str:
    return rt.types.names[tp]


# ---------------------------------------------------------------------------------------------
# Versions (assign_version_tag, type_modified_unlocked)

def _load_version_plain(t: "ThreadState", tp: int) -> int:
    return t.mem.load_u32(tp + TP_VERSION_TAG)


async def assign_version_tag(t: "ThreadState", tp: int) -> bool:
    """`assign_version_tag` (TYPE_LOCK held): give `tp` and, first, its bases a version;
    False once the class has used MAX_VERSIONS_PER_CLASS."""
    ts = t.rt.types
    if await t.mem.load(tp + TP_VERSION_TAG, 4, RELAXED):
        return True
    for b in _tuple_items(t.mem, t.mem.load_u64(tp + TP_BASES)):
        if not await assign_version_tag(t, b):
            return False
    if ts.versions_used[tp] >= MAX_VERSIONS_PER_CLASS:
        return False
    ts.versions_used[tp] += 1
    version = ts.next_version_tag
    ts.next_version_tag += 1
    # set_version_unlocked: a relaxed store (FT_ATOMIC_STORE_UINT_RELAXED). It publishes
    # nothing: the lookup's acquire load of tp_version_tag orders only its own later loads, and
    # the entry's fields are ordered by the seqlock's fences and the entry version's release
    await t.mem.store(tp + TP_VERSION_TAG, version, 4, RELAXED, Tag.PAYLOAD)
    return True


async def type_modified_unlocked(t: "ThreadState", tp: int) -> None:
    """`type_modified_unlocked` (TYPE_LOCK held): invalidate `tp` and its subclasses."""
    if await t.mem.load(tp + TP_VERSION_TAG, 4, RELAXED) == 0:
        return
    for sub in t.rt.types.subclasses[tp]:
        await type_modified_unlocked(t, sub)
    # set_version_unlocked(type, 0): relaxed, as in assign_version_tag
    await t.mem.store(tp + TP_VERSION_TAG, 0, 4, RELAXED, Tag.PAYLOAD)


# ---------------------------------------------------------------------------------------------
# Attributes (the type's dict)

def type_dict(mem, tp: int) -> int:
    """`lookup_tp_dict`: the type's dict (set at creation, never replaced here)."""
    return mem.load_u64(tp + TP_DICT)


async def find_name_in_mro(t: "ThreadState", tp: int, name: int) -> int:
    """`find_name_in_mro` (TYPE_LOCK held): a new reference to the first definition of
    `name` along the MRO, or 0. It holds a reference to the MRO tuple while it walks it; each
    base's dict is read with `_PyDict_GetItemRef`, whose locked fallback may block and so
    suspend TYPE_LOCK's section."""
    mem = t.mem
    mro = mem.load_u64(tp + TP_MRO)
    await t.incref(mro)
    result = 0
    for base in _tuple_items(mem, mro):
        result = await dt.getitem_ref(t, type_dict(mem, base), name)
        if result:
            break
    await t.decref(mro)
    return result


async def type_setattro(t: "ThreadState", tp: int, name: int, value: int) -> None:
    """`type_setattro` / `type_update_dict`: under TYPE_LOCK and the type's dict
    (`BEGIN_TYPE_DICT_LOCK`) invalidate the type (version 0) and then store the new value (a
    reference the caller gives up); the old value, kept alive by a reference taken first, is
    dropped after the locks are released (gh-118362)."""
    d = type_dict(t.mem, tp)
    c = await cs.begin2_mutex(t, t.rt.types.mutex, d + OB_MUTEX)
    _, old = dt.dict_lookup(t, d, name)
    if old:
        await t.incref(old)
    await type_modified_unlocked(t, tp)
    await dt.insertdict(t, d, name, value)
    t.rt.observer.type_attr_set(t, tp, name, value)
    await cs.end(t, c)
    if old:
        await t.decref(old)


# ---------------------------------------------------------------------------------------------
# MRO and bases

async def get_mro(t: "ThreadState", tp: int) -> int:
    """`_PyType_GetMRO`: a new reference to the MRO tuple (try-incref against the slot, else
    under TYPE_LOCK). `borrowed-mro`: the tuple is returned without a reference."""
    mro = await t.mem.load(tp + TP_MRO, 8, RELAXED)
    if t.rt.mutated("borrowed-mro"):
        return mro
    if mro and await try_incref_compare(t, tp + TP_MRO, mro):
        return mro
    c = await cs.begin_mutex(t, t.rt.types.mutex)
    mro = t.mem.load_u64(tp + TP_MRO)
    await t.incref(mro)
    await cs.end(t, c)
    return mro


async def get_bases(t: "ThreadState", tp: int) -> int:
    """`_PyType_GetBases`: a new reference to `tp_bases`, under TYPE_LOCK."""
    c = await cs.begin_mutex(t, t.rt.types.mutex)
    bases = t.mem.load_u64(tp + TP_BASES)
    await t.incref(bases)
    await cs.end(t, c)
    return bases


def mro_release(t: "ThreadState", mro: int):
    """Drop what `get_mro` returned (nothing under `borrowed-mro`)."""
    if t.rt.mutated("borrowed-mro"):
        return t.yield_now()
    return t.decref(mro)


async def type_set_bases(t: "ThreadState", tp: int, bases: list[int]) -> None:
    """`type_set_bases` + `mro_internal` (a type without subclasses here): under TYPE_LOCK
    publish new bases and MRO tuples and invalidate; the old tuples are dropped after."""
    rt = t.rt
    ts = rt.types
    assert not ts.subclasses[tp], "type_set_bases on a type with subclasses is not modelled"
    c = await cs.begin_mutex(t, ts.mutex)
    mem = t.mem
    old_bases = mem.load_u64(tp + TP_BASES)
    old_mro = mem.load_u64(tp + TP_MRO)
    for b in _tuple_items(mem, old_bases):
        ts.subclasses[b].remove(tp)
    new_bases = await _make_tuple(t, bases)
    mro = _compute_mro(mem, tp, bases)
    new_mro = await _make_tuple(t, mro)
    await type_modified_unlocked(t, tp)
    # releases pair with get_mro's load and try-incref-compare
    await mem.store(tp + TP_BASES, new_bases, 8, RELEASE, Tag.PAYLOAD)
    await mem.store(tp + TP_MRO, new_mro, 8, RELEASE, Tag.PAYLOAD)
    for b in bases:
        ts.subclasses[b].append(tp)
    rt.observer.type_mro_set(t, tp, mro)
    await cs.end(t, c)
    await t.decref(old_bases)
    await t.decref(old_mro)


async def type_clear(t: "ThreadState", tp: int) -> None:
    """`type_clear` (what a heap type's deallocation drops): invalidate, then drop the MRO and
    bases tuples and the dict. The type object itself stays (immortal here)."""
    ts = t.rt.types
    c = await cs.begin_mutex(t, ts.mutex)
    mem = t.mem
    await type_modified_unlocked(t, tp)
    mro, bases = mem.load_u64(tp + TP_MRO), mem.load_u64(tp + TP_BASES)
    d = mem.load_u64(tp + TP_DICT)
    await mem.store(tp + TP_MRO, 0, 8, RELEASE, Tag.PAYLOAD)
    await mem.store(tp + TP_BASES, 0, 8, RELEASE, Tag.PAYLOAD)
    mem.store_u64(tp + TP_DICT, 0, Tag.PAYLOAD)
    for b in _tuple_items(mem, bases):
        ts.subclasses[b].remove(tp)
    await cs.end(t, c)
    await t.decref(bases)
    await t.decref(mro)
    await t.decref(d)


# ---------------------------------------------------------------------------------------------
# The method cache: fast path first (`_PyType_LookupRef`), slow path beside it

async def lookup_ref(t: "ThreadState", tp: int, name: int) -> int:
    """`_PyType_LookupRef`: a new reference to the attribute `name` of `tp` through its MRO,
    or 0."""
    rt = t.rt
    rt.observer.type_lookup_started(t, tp, name)
    mem = t.mem
    h = mcache_hash(await mem.load(tp + TP_VERSION_TAG, 4, RELAXED), name)
    entry = entry_addr(rt, h)
    seq = entry + ENTRY_SEQUENCE
    while True:
        s = await seqlock_begin_read(t, seq)
        # acquire: pairs with the version's release store in `update_cache`
        entry_version = await mem.load(entry + ENTRY_VERSION, 4, ACQUIRE)
        type_version = await mem.load(tp + TP_VERSION_TAG, 4, ACQUIRE)
        if entry_version != type_version or type_version == 0:
            break
        if await mem.load(entry + ENTRY_NAME, 8, RELAXED) != name:
            break
        value = await mem.load(entry + ENTRY_VALUE, 8, RELAXED)
        if value and not await try_incref(t, value):
            break                           # the value is dying: the slow path
        if await seqlock_end_read(t, seq, s):
            rt.stats["type_cache_hits"] += 1
            rt.observer.type_lookup_finished(t, tp, name, value)
            return value
        if value:
            await t.decref(value)           # a writer ran: the value may not be the entry's
    value = await _lookup_slow(t, tp, name, entry)
    rt.observer.type_lookup_finished(t, tp, name, value)
    return value


async def _lookup_slow(t: "ThreadState", tp: int, name: int, entry: int) -> int:
    rt = t.rt
    rt.stats["type_cache_misses"] += 1
    version_first = rt.mutated("type-cache-version-first")
    c = await cs.begin_mutex(t, rt.types.mutex)
    version = 0
    if not version_first and await assign_version_tag(t, tp):
        # gh-132942: remember the version before the walk, which may release the lock
        version = await t.mem.load(tp + TP_VERSION_TAG, 4, RELAXED)
    value = await find_name_in_mro(t, tp, name)
    if version_first and await assign_version_tag(t, tp):
        version = await t.mem.load(tp + TP_VERSION_TAG, 4, RELAXED)
    await cs.end(t, c)
    if version:
        await update_cache(t, entry, name, version, value)
    return value


async def update_cache(t: "ThreadState", entry: int, name: int, version: int,
                       value: int) -> None:
    """`update_cache_gil_disabled`: under the entry's write lock store value, name and, last
    with release, the version (gh-132942); abandon if the entry already says the same."""
    mem = t.mem
    seq = entry + ENTRY_SEQUENCE
    await seqlock_lock_write(t, seq)
    if (await mem.load(entry + ENTRY_NAME, 8, RELAXED) == name
            and await mem.load(entry + ENTRY_VALUE, 8, RELAXED) == value
            and await mem.load(entry + ENTRY_VERSION, 4, RELAXED) == version):
        await seqlock_abandon_write(t, seq)
        return
    if t.rt.mutated("type-cache-version-first"):
        await mem.store(entry + ENTRY_VERSION, version, 4, RELEASE, Tag.META)
    await mem.store(entry + ENTRY_VALUE, value, 8, RELAXED, Tag.META)
    await mem.store(entry + ENTRY_NAME, name, 8, RELAXED, Tag.META)  # names are immortal here
    if not t.rt.mutated("type-cache-version-first"):
        # pairs with the acquire load of the entry's version in `lookup_ref`
        await mem.store(entry + ENTRY_VERSION, version, 4, RELEASE, Tag.META)
    await seqlock_unlock_write(t, seq)
