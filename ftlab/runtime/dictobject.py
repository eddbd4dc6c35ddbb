"""Dicts: the free-threaded parts of `Objects/dictobject.c` (lock-free reads, shared marking,
resize freeing the old keys through QSBR, `PyDict_SetDefaultRef`).

A dict is a GC object (`PyDictObject`, GC heap) whose table is a separate keys object
(`PyDictKeysObject`, `PyMem_Malloc`, MEM heap):

    PyDictObject                        PyDictKeysObject (a combined unicode table)
    +0  PyObject header                 +0  dk_refcnt          i64   always 1 here
    +32 ma_used     i64                 +8  dk_log2_size       u8
    +40 _ma_watcher_tag u64 (unused)    +9  dk_log2_index_bytes u8   (1-byte indices: <= 128)
    +48 ma_keys     u64  (0: empty)     +10 dk_kind            u8   DICT_KEYS_UNICODE
    +56 ma_values   u64  (always 0)     +11 dk_mutex           u8
                                        +12 dk_version         u32
                                        +16 dk_usable          i64
                                        +24 dk_nentries        i64
                                        +32 dk_indices[2**log2_size]  i8, -1 DKIX_EMPTY
                                        then PyDictUnicodeEntry[usable] {me_key, me_value}

Keys are interned strings (`typeobject.intern`: immortal objects with their hash at +32, the
place of PyASCIIObject's hash here), so the unicode table applies and key comparison is
`compare_unicode_unicode_threadsafe` on immortal keys: identity, never a try-incref of the key.
Split tables, deletion (DKIX_DUMMY), the keys freelist and dict watchers are not modelled.

Writers run under the dict's per-object critical section (`Py_BEGIN_CRITICAL_SECTION(mp)`):
`insertdict`, `insert_to_emptydict`, `dictresize`, `dict_setdefault_ref_lock_held`. They
publish with the FT build's atomics: `STORE_KEY`/`STORE_VALUE` (release), the index byte and
the counters (relaxed), the new keys with a release store of `ma_keys` (`set_keys`).

Lock-free reads (`lookup_threadsafe`, `_Py_dict_lookup_threadsafe`):
1. `ensure_shared_on_read`: a thread that does not own the dict marks it shared (the
   `_PyGC_BITS_SHARED` bit, under the critical section) before its first read, so that every
   later resize frees the old keys through QSBR.
2. Load `ma_keys`, probe the indices, load the entry's key (relaxed) and compare.
3. `_Py_TryXGetRef(&entry->me_value)`: a try-incref of the value re-checked against the slot.
4. Re-validate: `ma_keys` still the table the entry was read from. A resize leaves the old
   table's entries as they were, so the slot re-check of step 3 passes on a stale table even
   when the value was since replaced, freed, and its memory given to a new object of the same
   size (delayed page reuse allows that); only this check tells.
5. Any failure: `read_failed`, the locked path: under the critical section the plain lookup
   and `_Py_NewRefWithLock(value)`. That is where, in real 3.13t, a value whose shared field
   was 0 (never shared: its lock-free try-incref must refuse) gets MAYBE_WEAKREF and 4 added
   to `ob_ref_shared`, so that the next lock-free read of it succeeds. A store into the dict
   does not set MAYBE_WEAKREF (`insertdict` has no `_PyObject_SetMaybeWeakref`).

Why it is safe: the old keys a reader may still probe stay allocated until every thread
attached at the resize has passed a quiescent state (`free_keys_object(keys, use_qsbr)` ->
`_PyMem_FreeDelayed` once the dict is shared; a dict no other thread has read is freed at once),
and a value is used only after a try-incref that the slot and `ma_keys` checks validate.

`PyDict_SetDefaultRef` (`setdefault_ref`): under the critical section, insert `default` if the
key is absent (returns 0) or leave the dict alone (returns 1); either way the result is a new
reference to the value in the dict; -1 with a NULL result when `mp` is not a dict
(`PyErr_BadInternalCall`). The caller's reference to `default` is not consumed.
`PyDict_SetDefault` (`setdefault`) returns the value borrowed *after* the critical section:
another thread may replace the key and free the value before the caller uses it.

Mutations: `borrowed-setdefault` (`setdefault_ref` behaves as `PyDict_SetDefault`: the result
is borrowed, `setdefault_release` drops nothing), `dict-keys-freed-at-once`
(`free_keys_object` frees the old keys of a shared dict at once), `dict-lookup-no-keys-recheck`
(step 4 left out).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ftlab.runtime import critical_section as cs
from ftlab.runtime.object import (
    GC_BITS_SHARED,
    OB_TYPE,
    SIZEOF_PYOBJECT,
    PyType,
    gc_bits,
    gc_set_bits,
    gc_track,
    gc_untrack,
    is_owned_by,
    load_field,
    new_object,
    new_ref_with_lock,
    try_xget_ref,
)
from ftlab.sim.atomics import RELAXED, RELEASE, SEQ_CST
from ftlab.sim.memory import Tag

if TYPE_CHECKING:
    from ftlab.runtime.pystate import ThreadState

# PyDictObject
MA_USED = SIZEOF_PYOBJECT
MA_WATCHER_TAG = SIZEOF_PYOBJECT + 8
MA_KEYS = SIZEOF_PYOBJECT + 16
MA_VALUES = SIZEOF_PYOBJECT + 24
SIZEOF_DICT = SIZEOF_PYOBJECT + 32

# PyDictKeysObject
DK_REFCNT = 0
DK_LOG2_SIZE = 8
DK_LOG2_INDEX_BYTES = 9
DK_KIND = 10
DK_MUTEX = 11
DK_VERSION = 12
DK_USABLE = 16
DK_NENTRIES = 24
DK_INDICES = 32
SIZEOF_UNICODE_ENTRY = 16               # PyDictUnicodeEntry: me_key, me_value
ME_KEY = 0
ME_VALUE = 8

DICT_KEYS_UNICODE = 1
PyDict_LOG_MINSIZE = 3
PyDict_MINSIZE = 1 << PyDict_LOG_MINSIZE
MAX_LOG2_SIZE = 7                       # 1-byte indices only (the model's dicts are small)
PERTURB_SHIFT = 5
DKIX_EMPTY = -1
DKIX_KEY_CHANGED = -4

# A model str (`typeobject.intern`): an immortal object with its hash word (the role of
# PyASCIIObject.hash)
STR_HASH = SIZEOF_PYOBJECT
SIZEOF_STR = SIZEOF_PYOBJECT + 16


def USABLE_FRACTION(n: int) -> int:
    return (n << 1) // 3


def GROWTH_RATE(used: int) -> int:
    return used * 3


def calculate_log2_keysize(minsize: int) -> int:
    """`calculate_log2_keysize`: the smallest table with at least `minsize` slots."""
    return max(PyDict_LOG_MINSIZE, (minsize | (PyDict_MINSIZE - 1)).bit_length())


def keys_size(log2_size: int) -> int:
    """Bytes of a keys object: header, 1-byte indices, USABLE_FRACTION entries."""
    return DK_INDICES + (1 << log2_size) + SIZEOF_UNICODE_ENTRY * USABLE_FRACTION(1 << log2_size)


def dk_entries(mem, dk: int) -> int:
    """`DK_UNICODE_ENTRIES(dk)` (the log2 size never changes after creation: a plain read)."""
    return dk + DK_INDICES + (1 << mem.load_u8(dk + DK_LOG2_INDEX_BYTES))


def str_hash(s: str) -> int:
    """A deterministic 63-bit string hash (FNV-1a): the model never depends on
    PYTHONHASHSEED. `typeobject.intern` stores it in the key object."""
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & ((1 << 64) - 1)
    return h >> 1


def unicode_get_hash(mem, key: int) -> int:
    """`unicode_get_hash` (a relaxed read of an immortal string's hash)."""
    return mem.peek(key + STR_HASH, 8)


# ---------------------------------------------------------------------------------------------
# Keys objects

def _keys_layout(log2_size: int) -> tuple[tuple[int, str, int, dict[int, str]], ...]:
    """A keys object's layout for the timeline's names, as `Observer.block_layout` takes it."""
    return ((DK_REFCNT, "dk_refcnt", 0, {}), (DK_LOG2_SIZE, "dk_log2_size", 0, {}),
            (DK_LOG2_INDEX_BYTES, "dk_log2_index_bytes", 0, {}), (DK_KIND, "dk_kind", 0, {}),
            (DK_MUTEX, "dk_mutex", 0, {}), (DK_VERSION, "dk_version", 0, {}),
            (DK_USABLE, "dk_usable", 0, {}), (DK_NENTRIES, "dk_nentries", 0, {}),
            (DK_INDICES, "dk_indices", 1, {}),
            (DK_INDICES + (1 << log2_size), "dk_entries", SIZEOF_UNICODE_ENTRY,
             {ME_KEY: "me_key", ME_VALUE: "me_value"}))


async def new_keys_object(t: "ThreadState", log2_size: int, owner: int = 0) -> int:
    """`new_keys_object`: a combined unicode table, indices all DKIX_EMPTY, entries zero.
    `owner`: the dict it is for (timeline names)."""
    if log2_size > MAX_LOG2_SIZE:
        raise AssertionError(f"a dict of 2**{log2_size} slots needs wider indices than modelled")
    size = keys_size(log2_size)
    dk = await t.malloc(size)
    if owner:
        t.rt.observer.block_layout(dk, owner, "ma_keys", _keys_layout(log2_size))
    mem = t.mem
    usable = USABLE_FRACTION(1 << log2_size)
    mem.store_u64(dk + DK_REFCNT, 1, Tag.PAYLOAD)
    mem.store_u64(dk + DK_LOG2_SIZE, log2_size | (log2_size << 8) | (DICT_KEYS_UNICODE << 16),
                  Tag.PAYLOAD)      # log2 size, log2 index bytes, kind; mutex and version 0
    mem.store_u64(dk + DK_USABLE, usable, Tag.PAYLOAD)
    mem.store_u64(dk + DK_NENTRIES, 0, Tag.PAYLOAD)
    mem.fill(dk + DK_INDICES, 1 << log2_size, 0xFF, Tag.PAYLOAD)
    mem.fill(dk + DK_INDICES + (1 << log2_size), SIZEOF_UNICODE_ENTRY * usable, 0, Tag.PAYLOAD)
    return dk


async def free_keys_object(t: "ThreadState", dk: int, use_qsbr: bool) -> None:
    """`free_keys_object`: through `_PyMem_FreeDelayed` if lock-free readers may still probe
    the table (the dict is shared), else at once."""
    if use_qsbr and not t.rt.mutated("dict-keys-freed-at-once"):
        size = keys_size(t.mem.load_u8(dk + DK_LOG2_SIZE))
        await t.free_delayed(dk, size)
        return
    await t.free(dk)


def _index_addr(dk: int, i: int) -> int:
    return dk + DK_INDICES + i


def _get_index(mem, dk: int, i: int) -> int:
    """`dictkeys_get_index` for the holder of the lock (a plain read)."""
    ix = mem.load_u8(_index_addr(dk, i))
    return ix - 256 if ix >= 128 else ix


def _find_empty_slot(mem, dk: int, hash: int) -> int:
    """`find_empty_slot`: the first slot of `hash`'s probe sequence with DKIX_EMPTY."""
    mask = (1 << mem.load_u8(dk + DK_LOG2_SIZE)) - 1
    i = hash & mask
    perturb = hash
    while _get_index(mem, dk, i) >= 0:
        perturb >>= PERTURB_SHIFT
        i = (i * 5 + perturb + 1) & mask
    return i


# ---------------------------------------------------------------------------------------------
# The dict object, shared marking

async def dict_new(t: "ThreadState") -> int:
    """`PyDict_New`: an empty dict (`ma_keys` NULL stands for Py_EMPTY_KEYS), owned by `t`."""
    op = await new_object(t, DICT)
    mem = t.mem
    for off in (MA_USED, MA_WATCHER_TAG, MA_KEYS, MA_VALUES):
        mem.store_u64(op + off, 0, Tag.PAYLOAD)
    gc_track(t, op)
    return op


def is_dict_shared(mem, mp: int) -> bool:
    """`IS_DICT_SHARED` (`_PyObject_GC_IS_SHARED`)."""
    return bool(gc_bits(mem, mp) & GC_BITS_SHARED)


async def ensure_shared_on_read(t: "ThreadState", mp: int) -> None:
    """`ensure_shared_on_read`: the first read by a thread that does not own the dict marks it
    shared, under the critical section so that a resize in progress finishes first."""
    if not is_owned_by(t, mp) and not is_dict_shared(t.mem, mp):
        c = await cs.begin(t, mp)
        if not is_dict_shared(t.mem, mp):
            gc_set_bits(t.mem, mp, GC_BITS_SHARED)
        await cs.end(t, c)


def ensure_shared_on_resize(t: "ThreadState", mp: int) -> None:
    """`ensure_shared_on_resize` (critical section held): a non-owner writing the dict means
    the owner may be reading it lock-free."""
    if not is_owned_by(t, mp) and not is_dict_shared(t.mem, mp):
        gc_set_bits(t.mem, mp, GC_BITS_SHARED)


def is_dict(t: "ThreadState", op: int) -> bool:
    """`PyDict_Check` (exact: no dict subclasses are modelled)."""
    return t.mem.peek(op + OB_TYPE, 8) == t.rt.objects.type_object(DICT)


# ---------------------------------------------------------------------------------------------
# Lookup: the lock-free path first (`_Py_dict_lookup_threadsafe`), the locked one beside it

async def _lookup_unicode_threadsafe(t: "ThreadState", dk: int, key: int, hash: int) -> int:
    """`unicodekeys_lookup_unicode_threadsafe` / `do_lookup` with
    `compare_unicode_unicode_threadsafe` on immortal keys: the entry index, or DKIX_EMPTY."""
    mem = t.mem
    mask = (1 << mem.load_u8(dk + DK_LOG2_SIZE)) - 1
    entries = dk_entries(mem, dk)
    i = hash & mask
    perturb = hash
    while True:
        ix = await mem.load(_index_addr(dk, i), 1, RELAXED)
        ix = ix - 256 if ix >= 128 else ix
        if ix >= 0:
            startkey = await mem.load(entries + ix * SIZEOF_UNICODE_ENTRY + ME_KEY, 8, RELAXED)
            if startkey == key:
                return ix
            # an immortal key of another string (same hash or not) is not equal: interned
        elif ix == DKIX_EMPTY:
            return DKIX_EMPTY
        perturb >>= PERTURB_SHIFT
        i = (i * 5 + perturb + 1) & mask


def dict_lookup(t: "ThreadState", mp: int, key: int) -> tuple[int, int]:
    """`_Py_dict_lookup` with the critical section held (plain reads): (ix, borrowed value)."""
    mem = t.mem
    dk = load_field(t, mp, MA_KEYS)
    if dk == 0:
        return DKIX_EMPTY, 0
    hash = unicode_get_hash(mem, key)
    mask = (1 << mem.load_u8(dk + DK_LOG2_SIZE)) - 1
    entries = dk_entries(mem, dk)
    i = hash & mask
    perturb = hash
    while True:
        ix = _get_index(mem, dk, i)
        if ix == DKIX_EMPTY:
            return DKIX_EMPTY, 0
        ep = entries + ix * SIZEOF_UNICODE_ENTRY
        if mem.load_u64(ep + ME_KEY) == key:
            return ix, mem.load_u64(ep + ME_VALUE)
        perturb >>= PERTURB_SHIFT
        i = (i * 5 + perturb + 1) & mask


async def lookup_threadsafe(t: "ThreadState", mp: int, key: int) -> tuple[int, int]:
    """`_Py_dict_lookup_threadsafe`: (ix, a new reference to the value or 0)."""
    await ensure_shared_on_read(t, mp)
    mem = t.mem
    dk = await mem.load(mp + MA_KEYS, 8, SEQ_CST)   # pairs with set_keys' release
    if dk == 0:
        return DKIX_EMPTY, 0            # Py_EMPTY_KEYS: never freed, never written
    ix = await _lookup_unicode_threadsafe(t, dk, key, unicode_get_hash(mem, key))
    if ix < 0:
        return ix, 0
    value = await try_xget_ref(t, dk_entries(mem, dk) + ix * SIZEOF_UNICODE_ENTRY + ME_VALUE)
    if value:
        if t.rt.mutated("dict-lookup-no-keys-recheck"):
            return ix, value
        if dk == await mem.load(mp + MA_KEYS, 8, SEQ_CST):
            return ix, value
        await t.decref(value)
    return await _read_failed(t, mp, key)


async def _read_failed(t: "ThreadState", mp: int, key: int) -> tuple[int, int]:
    """The `read_failed` path: the lookup under the critical section, then
    `_Py_NewRefWithLock`, which also makes a never-shared value lock-free readable."""
    c = await cs.begin(t, mp)
    ix, value = dict_lookup(t, mp, key)
    if value:
        await new_ref_with_lock(t, value)
    await cs.end(t, c)
    return ix, value


async def getitem_ref(t: "ThreadState", mp: int, key: int) -> int:
    """`PyDict_GetItemRef` / a `LOAD_GLOBAL`-style read: a new reference, or 0 if absent."""
    t.rt.observer.dict_lookup_started(t, mp, key)
    value = (await lookup_threadsafe(t, mp, key))[1]
    t.rt.observer.dict_lookup_finished(t, mp, key, value)
    return value


# ---------------------------------------------------------------------------------------------
# Insertion and resize (critical section held)

async def _set_keys(t: "ThreadState", mp: int, dk: int) -> None:
    """`set_keys`: publish a table; pairs with the acquire load of `ma_keys` by readers."""
    await t.mem.store(mp + MA_KEYS, dk, 8, RELEASE, Tag.PAYLOAD)


async def dictresize(t: "ThreadState", mp: int, log2_newsize: int) -> None:
    """`dictresize` (combined unicode -> combined unicode): a new table with the entries
    copied and the indices rebuilt, published with `set_keys`; then the old table is freed,
    through QSBR if the dict is shared."""
    mem = t.mem
    oldkeys = mem.load_u64(mp + MA_KEYS)
    ensure_shared_on_resize(t, mp)
    newkeys = await new_keys_object(t, log2_newsize, owner=mp)
    numentries = mem.load_u64(mp + MA_USED)
    if oldkeys:
        # no deletions are modelled, so the old entries are dense: one memcpy
        mem.write_bytes(dk_entries(mem, newkeys),
                        mem.read_bytes(dk_entries(mem, oldkeys), SIZEOF_UNICODE_ENTRY * numentries))
    entries = dk_entries(mem, newkeys)
    for ix in range(numentries):        # build_indices_unicode
        hash = unicode_get_hash(mem, mem.load_u64(entries + ix * SIZEOF_UNICODE_ENTRY))
        mem.store_u8(_index_addr(newkeys, _find_empty_slot(mem, newkeys, hash)), ix, Tag.PAYLOAD)
    mem.store_u64(newkeys + DK_USABLE, mem.load_u64(newkeys + DK_USABLE) - numentries,
                  Tag.PAYLOAD)
    mem.store_u64(newkeys + DK_NENTRIES, numentries, Tag.PAYLOAD)
    await _set_keys(t, mp, newkeys)
    if oldkeys:
        await free_keys_object(t, oldkeys, is_dict_shared(mem, mp))


async def insertdict(t: "ThreadState", mp: int, key: int, value: int) -> None:
    """`insertdict` / `insert_to_emptydict` / `insert_combined_dict` (critical section held):
    store `value` (a reference the dict takes from the caller) under `key`; a replaced value is
    dropped while the lock is still held, as in C."""
    mem = t.mem
    ix, old_value = dict_lookup(t, mp, key)
    if ix == DKIX_EMPTY:
        dk = mem.load_u64(mp + MA_KEYS)
        if dk == 0 or mem.load_u64(dk + DK_USABLE) <= 0:
            used = mem.load_u64(mp + MA_USED)
            await dictresize(t, mp, calculate_log2_keysize(GROWTH_RATE(used)))
            dk = mem.load_u64(mp + MA_KEYS)
        n = mem.load_u64(dk + DK_NENTRIES)
        hashpos = _find_empty_slot(mem, dk, unicode_get_hash(mem, key))
        await mem.store(_index_addr(dk, hashpos), n, 1, RELAXED, Tag.PAYLOAD)
        ep = dk_entries(mem, dk) + n * SIZEOF_UNICODE_ENTRY
        await mem.store(ep + ME_KEY, key, 8, RELEASE, Tag.PAYLOAD)        # STORE_KEY
        await mem.store(ep + ME_VALUE, value, 8, RELEASE, Tag.PAYLOAD)    # STORE_VALUE
        t.rt.observer.dict_value_set(t, mp, key, value)
        mem.store_u64(dk + DK_USABLE, mem.load_u64(dk + DK_USABLE) - 1, Tag.PAYLOAD)
        mem.store_u64(dk + DK_NENTRIES, n + 1, Tag.PAYLOAD)
        await mem.store(mp + MA_USED, mem.load_u64(mp + MA_USED) + 1, 8, RELAXED, Tag.PAYLOAD)
        return
    if old_value != value:
        dk = mem.load_u64(mp + MA_KEYS)
        ep = dk_entries(mem, dk) + ix * SIZEOF_UNICODE_ENTRY
        await mem.store(ep + ME_VALUE, value, 8, RELEASE, Tag.PAYLOAD)    # STORE_VALUE
        t.rt.observer.dict_value_set(t, mp, key, value)
    await t.decref(old_value)


async def setitem(t: "ThreadState", mp: int, key: int, value: int) -> None:
    """`PyDict_SetItem`: `d[key] = value` under the critical section (the dict takes a new
    reference; the caller keeps its own)."""
    await t.incref(value)
    c = await cs.begin(t, mp)
    await insertdict(t, mp, key, value)
    await cs.end(t, c)


# ---------------------------------------------------------------------------------------------
# setdefault

async def setdefault_lock_held(t: "ThreadState", mp: int, key: int, default: int,
                               incref_result: bool) -> tuple[int, int]:
    """`dict_setdefault_ref_lock_held`: (0, value) after inserting `default`, (1, value) if
    the key was present; the value is a new reference if `incref_result`, else borrowed."""
    ix, value = dict_lookup(t, mp, key)
    if ix == DKIX_EMPTY:
        await t.incref(default)                 # the dict's reference
        await insertdict(t, mp, key, default)
        if incref_result:
            await t.incref(default)
        return 0, default
    if incref_result:
        await t.incref(value)
    return 1, value


async def setdefault_ref(t: "ThreadState", mp: int, key: int, default: int,
                         want_result: bool = True) -> tuple[int, int]:
    """`PyDict_SetDefaultRef(mp, key, default, &result)`: (-1, 0) if `mp` is not a dict;
    (0, new ref to `default`) if inserted; (1, new ref to the present value) otherwise. With
    `want_result` False (`result` NULL) no reference is returned. `borrowed-setdefault`: the
    result is `PyDict_SetDefault`'s borrowed pointer."""
    if not is_dict(t, mp):
        return -1, 0                            # PyErr_BadInternalCall
    if t.rt.mutated("borrowed-setdefault"):
        return await _setdefault(t, mp, key, default)
    c = await cs.begin(t, mp)
    rc, value = await setdefault_lock_held(t, mp, key, default, want_result)
    await cs.end(t, c)
    return rc, (value if want_result else 0)


async def _setdefault(t: "ThreadState", mp: int, key: int, default: int) -> tuple[int, int]:
    c = await cs.begin(t, mp)
    rc, value = await setdefault_lock_held(t, mp, key, default, False)
    await cs.end(t, c)
    return rc, value


async def setdefault(t: "ThreadState", mp: int, key: int, default: int) -> int:
    """`PyDict_SetDefault`: the value, *borrowed*, returned after the critical section ended."""
    return (await _setdefault(t, mp, key, default))[1]


def setdefault_release(t: "ThreadState", value: int):
    """Drop what `setdefault_ref` returned (nothing under `borrowed-setdefault`)."""
    if t.rt.mutated("borrowed-setdefault") or not value:
        return t.yield_now()
    return t.decref(value)


# ---------------------------------------------------------------------------------------------
# tp_traverse, tp_clear, tp_dealloc

def dict_traverse(mem, mp: int) -> list[int]:
    """`dict_traverse`: the values (the keys are immortal strings)."""
    dk = mem.load_u64(mp + MA_KEYS)
    if dk == 0:
        return []
    entries = dk_entries(mem, dk)
    n = mem.load_u64(dk + DK_NENTRIES)
    return [v for ix in range(n)
            if (v := mem.load_u64(entries + ix * SIZEOF_UNICODE_ENTRY + ME_VALUE))]


async def dict_clear(t: "ThreadState", mp: int) -> None:
    """`PyDict_Clear` (`tp_clear`): unlink the table (empty keys, used 0), drop the values,
    free the table (through QSBR if shared)."""
    mem = t.mem
    dk = load_field(t, mp, MA_KEYS)
    if dk == 0:
        return
    values = dict_traverse(mem, mp)
    await mem.store(mp + MA_USED, 0, 8, RELAXED, Tag.PAYLOAD)
    await _set_keys(t, mp, 0)
    t.rt.observer.dict_emptied(t, mp)
    for v in values:
        await t.decref(v)
    await free_keys_object(t, dk, is_dict_shared(mem, mp))


async def dict_dealloc(t: "ThreadState", mp: int) -> None:
    """The body of `dict_dealloc`: untrack, drop the values, free the table at once (a dead
    dict has no readers)."""
    gc_untrack(t, mp)
    mem = t.mem
    dk = load_field(t, mp, MA_KEYS)
    if dk == 0:
        return
    for v in dict_traverse(mem, mp):
        await t.decref(v)
    await free_keys_object(t, dk, False)


DICT = PyType("dict", basicsize=SIZEOF_DICT, gc=True, clear=dict_dealloc,
              traverse=dict_traverse, tp_clear=dict_clear)
