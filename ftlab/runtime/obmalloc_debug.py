"""The debug hooks on the Python memory allocators (PEP 445, `PYTHONMALLOC=debug`):
`_PyMem_DebugRawAlloc`, `_PyMem_DebugRawFree`, `_PyMem_DebugCheckAddress`,
`_PyObject_DebugDumpAddress`, `fill_mem_debug` and `_PyMem_IsPtrFreed` in `Objects/obmalloc.c`,
with the free-threaded changes of PR #115745 and the fixes of PR #116018.

A request of n bytes becomes an underlying allocation of n + 3 words, laid out as

    p:            size n, big-endian (one word)
    p + 8:        the API id ('r' raw, 'm' mem, 'o' object), then 7 FORBIDDENBYTEs
    p + 16:       the n data bytes (the pointer returned), CLEANBYTE when fresh
    p + 16 + n:   8 FORBIDDENBYTEs

Free checks the id and both pads (a mismatch is fatal in C: here an `invalid-free` violation
with the dump), fills the two leading words and the data plus the trailing pad with DEADBYTE,
and frees p.

Free-threaded rule: for the object domain, neither fill touches the first bytes of the block
up to `ob_type`, so that `ob_tid`, `ob_ref_local` and `ob_ref_shared` of a freed object stay
valid for lock-free readers that still hold a pointer (they must read "dead": 0 or MERGED/0,
never 0xDD..., which try-incref would accept). How many bytes to keep is the mimalloc heap's
`debug_offset`, set when the thread's heaps are bound (`tstate_mimalloc_bind`): `ob_type`'s
offset 24, plus the two debug words when the hooks are on, plus the pre-header for GC_PRE;
0 for the MEM heap. It is measured from the start of the mimalloc block, so the hooks subtract
the two debug words; at allocation it is the current object heap's, at free the block's page's
(the current object heap is only meaningful during an allocation).

Mutations:
- `debug-fill-header`: the object domain is filled like the others (the default build's
  behaviour): a freed object's refcount fields read 0xDD..., and a stale try-incref succeeds.
- `debug-offset-bug` (PR #116018, first bug): the two debug words are not subtracted, so the
  fills start 16 bytes late: a freed object's `ob_type` keeps its type pointer and the object
  no longer reads as freed (`_PyObject_IsFreed`), which is what the hooks are for.
- `debug-dealloc-heap-bug` (PR #116018, second bug): at free the offset comes from the current
  object heap (OBJECT, 40) instead of the block's page; for a GC_PRE object (56) the fill then
  starts 16 bytes early, over `ob_mutex`, `ob_gc_bits`, `ob_ref_local` and `ob_ref_shared`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Awaitable, Callable

from ftlab.runtime.mimalloc.types import HeapTag
from ftlab.sim.memory import Tag
from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.runtime.pystate import Runtime, ThreadState

SST = 8                                 # sizeof(size_t)
PYMEM_DEBUG_EXTRA_BYTES = 3 * SST       # without PYMEM_DEBUG_SERIALNO
PYMEM_CLEANBYTE = 0xCD
PYMEM_DEADBYTE = 0xDD
PYMEM_FORBIDDENBYTE = 0xFD

API_RAW = "r"
API_MEM = "m"
API_OBJECT = "o"

# offsetof(PyObject, ob_type): what the free-threaded build keeps intact in a freed object.
BASE_DEBUG_OFFSET = 24
PREHEADER_SIZE = 2 * 8


def heap_debug_offset(tag: int, debug_enabled: bool) -> int:
    """The `debug_offset` of a thread's heap with `tag` (`tstate_mimalloc_bind`)."""
    if tag == HeapTag.MEM:
        return 0
    base = BASE_DEBUG_OFFSET + (2 * SST if debug_enabled else 0)
    return base + PREHEADER_SIZE if tag == HeapTag.GC_PRE else base


def _pattern(byte: int) -> int:
    return int.from_bytes(bytes((byte,)) * SST, "little")


def is_ptr_freed(value: int) -> bool:
    """`_PyMem_IsPtrFreed`: NULL or a word of a debug fill byte."""
    return value in (0, _pattern(PYMEM_CLEANBYTE), _pattern(PYMEM_DEADBYTE),
                     _pattern(PYMEM_FORBIDDENBYTE))


def object_is_freed(mem, op: int) -> bool:
    """`_PyObject_IsFreed` (a heuristic of the debug build): the pointer or its `ob_type`
    reads as a debug fill. Not an access: for checks and oracles."""
    return is_ptr_freed(op) or is_ptr_freed(mem.raw_load(op + 24, 8))


# ---------------------------------------------------------------------------------------------
# Allocation and free

async def debug_malloc(t: "ThreadState", api: str, nbytes: int,
                       raw_malloc: Callable[["ThreadState", int], Awaitable[int]]) -> int:
    """`_PyMem_DebugMalloc` / `_PyMem_DebugRawAlloc` (not calloc) over `raw_malloc`."""
    _check_attached(t, "_PyMem_DebugMalloc")
    mem = t.mem
    p = await raw_malloc(t, nbytes + PYMEM_DEBUG_EXTRA_BYTES)
    data = p + 2 * SST
    mem.write_bytes(p, nbytes.to_bytes(SST, "big"), Tag.DEBUG_PAD)
    mem.write_bytes(p + SST, api.encode() + bytes((PYMEM_FORBIDDENBYTE,)) * (SST - 1),
                    Tag.DEBUG_PAD)
    if nbytes > 0:
        fill_mem_debug(t, api, data, PYMEM_CLEANBYTE, nbytes, True)
    mem.fill(data + nbytes, SST, PYMEM_FORBIDDENBYTE, Tag.DEBUG_PAD)
    return data


async def debug_free(t: "ThreadState", api: str, p: int,
                     raw_free: Callable[["ThreadState", int], Awaitable[None]]) -> None:
    """`_PyMem_DebugFree` / `_PyMem_DebugRawFree`: check, fill with DEADBYTE, free."""
    if p == 0:
        return
    _check_attached(t, "_PyMem_DebugFree")
    mem = t.mem
    q = p - 2 * SST
    check_address(t.rt, "_PyMem_DebugRawFree", api, p)
    nbytes = int.from_bytes(mem.read_bytes(q, SST), "big") + PYMEM_DEBUG_EXTRA_BYTES - 2 * SST
    mem.fill(q, 2 * SST, PYMEM_DEADBYTE, Tag.DEBUG_FILL)
    fill_mem_debug(t, api, p, PYMEM_DEADBYTE, nbytes, False)
    await raw_free(t, q)


def fill_mem_debug(t: "ThreadState", api: str, data: int, byte: int, nbytes: int,
                   is_alloc: bool) -> None:
    """`fill_mem_debug`: fill `nbytes` at `data`, except, for objects in the free-threaded
    build, the first `debug_offset - 2*SST` bytes."""
    rt = t.rt
    mem = t.mem
    mutated = rt.config.mutations
    if api == API_OBJECT and "debug-fill-header" not in mutated:
        if is_alloc or "debug-dealloc-heap-bug" in mutated:
            offset = t.mimalloc.current_object_heap.debug_offset
        else:
            offset = page_debug_offset(rt, data - 2 * SST)
        if "debug-offset-bug" not in mutated:
            offset -= 2 * SST                   # the debug words are before `data`
        if offset < nbytes:
            mem.fill(data + offset, nbytes - offset, byte, Tag.DEBUG_FILL)
        return
    mem.fill(data, nbytes, byte, Tag.DEBUG_FILL)


def page_debug_offset(rt: "Runtime", block: int) -> int:
    """`_mi_ptr_page(block)->debug_offset`."""
    from ftlab.runtime import object as obj
    return obj.page_debug_offset(rt, block)


# ---------------------------------------------------------------------------------------------
# Checks

def _check_attached(t: "ThreadState", func: str) -> None:
    """`_PyMem_DebugCheckGIL`: the hooks of the mem and object domains need an attached
    thread state (a fatal error in C; a bug of the calling model code here)."""
    if not t.attached:
        raise ViolationError(
            "crash", f"{func}: Python memory allocator called without an active thread state "
            f"({t.name} is {t.status}). Are you trying to call it inside of a "
            "Py_BEGIN_ALLOW_THREADS block?")


def check_address(rt: "Runtime", func: str, api: str, p: int) -> None:
    """`_PyMem_DebugCheckAddress`: the API id, then the leading pad, then the trailing pad;
    a failure is C's fatal error, here an `invalid-free` violation with the dump."""
    mem = rt.mem
    q = p - 2 * SST
    head = mem.read_bytes(q, 2 * SST)
    got = chr(head[SST])
    if got != api:
        raise ViolationError(
            "invalid-free",
            f"{func}: bad ID: Allocated using API '{got}', verified using API '{api}'",
            tuple(dump_address(mem, p)))
    if any(b != PYMEM_FORBIDDENBYTE for b in head[SST + 1:]):
        raise ViolationError("invalid-free", f"{func}: bad leading pad byte",
                             tuple(dump_address(mem, p)))
    nbytes = int.from_bytes(head[:SST], "big")
    if any(b != PYMEM_FORBIDDENBYTE for b in mem.read_bytes(p + nbytes, SST)):
        raise ViolationError("invalid-free", f"{func}: bad trailing pad byte",
                             tuple(dump_address(mem, p)))


def dump_address(mem, p: int) -> list[str]:
    """`_PyObject_DebugDumpAddress`, as lines (reads without reporting accesses)."""
    q = p - 2 * SST
    head = bytes(mem.raw_load(q + i, 1) for i in range(2 * SST))
    nbytes = int.from_bytes(head[:SST], "big")
    lines = [f"Debug memory block at address p={p:#x}: API '{chr(head[SST])}'",
             f"    {nbytes} bytes originally requested"]
    lead = head[SST + 1:]
    if all(b == PYMEM_FORBIDDENBYTE for b in lead):
        lines.append(f"    The {SST - 1} pad bytes at p-{SST - 1} are FORBIDDENBYTE, as expected.")
    else:
        lines.append(f"    The {SST - 1} pad bytes at p-{SST - 1} are not all FORBIDDENBYTE: "
                     + " ".join(f"{b:02x}" for b in lead))
        return lines    # the size may be nuts: do not read the tail
    tail = bytes(mem.raw_load(p + nbytes + i, 1) for i in range(SST))
    if all(b == PYMEM_FORBIDDENBYTE for b in tail):
        lines.append(f"    The {SST} pad bytes at tail={p + nbytes:#x} are FORBIDDENBYTE, as expected.")
    else:
        lines.append(f"    The {SST} pad bytes at tail={p + nbytes:#x} are not all FORBIDDENBYTE: "
                     + " ".join(f"{b:02x}" for b in tail))
    if nbytes > 0:
        data = bytes(mem.raw_load(p + i, 1) for i in range(min(nbytes, 8)))
        lines.append("    Data at p: " + " ".join(f"{b:02x}" for b in data)
                     + (" ..." if nbytes > 8 else ""))
    return lines
