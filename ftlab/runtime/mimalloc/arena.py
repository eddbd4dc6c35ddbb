"""Arenas (`src/arena.c`, with the parts of `src/os.c` they use): where segment memory comes from.

An arena is a large reservation divided into `MI_ARENA_BLOCK_SIZE` (32 MiB) blocks; a segment
takes one block (a huge segment a run of them). Claiming always searches from block 0, so the
lowest free run wins and a freed segment's slot is the next one handed out. The first arena is
reserved on the first segment allocation: `arena_reserve` (1 GiB) rounded to blocks; arenas
after the eighth double in size every eight arenas; a request bigger than a new arena goes
straight to the OS (`mem.reserve`, released on free).

Commit: with `arena_eager_commit` = 2 on an OS that overcommits (Linux), a new arena is
committed as a whole, so every block starts committed. Freeing a block schedules a purge after
`purge_delay * arena_purge_mult` (100 ms); the purge decommits the blocks that are still free,
and a later claim of a decommitted block commits it again (it then reads as zeros; a block
reclaimed before its purge keeps its old contents, as on Linux).

Model simplifications, each chosen because it cannot change where a block is placed:
* The arena bitmaps are atomics in C. Here an arena call is one atomic step with no scheduling
  point inside (its outcome depends only on which blocks are claimed, and every claim is
  serialised by the machine anyway).
* Time is the machine's virtual clock (`MiRuntime.clock_now`, in virtual milliseconds).
* Arena purging is attempted, as in C, at every arena free and on `arena_collect`.
* Ordering: in C a free unclaims the blocks with a release RMW on the `blocks_inuse` bitmap
  and a claim sets them with an acq_rel CAS, so whatever the last owner wrote into a segment
  happens before the next owner's accesses. The model gives each block a word in the runtime's
  metadata area (`Arena.bitmap`) and reports those two RMWs to the race detector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ftlab.runtime.mimalloc.types import (
    MI_ARENA_BLOCK_SIZE,
    MI_ARENA_RESERVE,
    MI_MAX_ARENAS,
    MI_OPTION_ARENA_PURGE_MULT,
    MI_OPTION_PURGE_DELAY,
    MI_SEGMENT_ALIGN,
    MemId,
)

if TYPE_CHECKING:
    from ftlab.runtime.mimalloc.init import MiRuntime


class Arena:
    """`mi_arena_t`: `blocks_inuse`, `blocks_committed`, `blocks_dirty`, `blocks_purge` as lists
    of bools, one per 32 MiB block."""

    __slots__ = ("index", "base", "block_count", "inuse", "committed", "dirty", "purge",
                 "purge_expire", "bitmap")

    def __init__(self, index: int, base: int, block_count: int, bitmap: int) -> None:
        self.index = index
        self.base = base
        self.block_count = block_count
        self.inuse = [False] * block_count
        self.committed = [True] * block_count   # arena_eager_commit: committed up front
        self.dirty = [False] * block_count
        self.purge = [False] * block_count
        self.purge_expire = 0
        self.bitmap = bitmap    # one word per block: the happens-before of claim and free

    def __repr__(self) -> str:
        return f"<arena {self.index} at {self.base:#x} x{self.block_count}>"


def arena_purge_delay() -> int:
    """`mi_arena_purge_delay`: ms before a freed arena block is decommitted."""
    return MI_OPTION_PURGE_DELAY * MI_OPTION_ARENA_PURGE_MULT


# ---------------------------------------------------------------------------------------------
# Allocation

def _try_claim(arena: Arena, blocks: int) -> int:
    """`mi_arena_try_claim`: the lowest run of `blocks` free blocks, claimed; -1 if none."""
    inuse = arena.inuse
    run = 0
    for i in range(arena.block_count):
        if inuse[i]:
            run = 0
            continue
        run += 1
        if run == blocks:
            start = i - blocks + 1
            for j in range(start, i + 1):
                inuse[j] = True
            return start
    return -1


def _alloc_at(mi: "MiRuntime", arena: Arena, start: int, blocks: int, commit: bool) -> tuple[int, MemId]:
    """`mi_arena_alloc_at`: the claimed blocks' address and memid (commit and zero state)."""
    addr = arena.base + start * MI_ARENA_BLOCK_SIZE
    memid = MemId(arena, start, blocks)
    rng = range(start, start + blocks)
    for j in rng:
        _bitmap_rmw(mi, arena, j, acquire=True)   # the claim's CAS (acq_rel)
    for j in rng:
        arena.purge[j] = False          # none of the claimed blocks may be purged now
    memid.initially_zero = not any(arena.dirty[j] for j in rng)
    for j in rng:
        arena.dirty[j] = True
    all_committed = all(arena.committed[j] for j in rng)
    if commit and not all_committed:
        mi.mem.commit(addr, blocks * MI_ARENA_BLOCK_SIZE)
        for j in rng:
            arena.committed[j] = True
        all_committed = True
    memid.initially_committed = all_committed
    return addr, memid


def _bitmap_rmw(mi: "MiRuntime", arena: Arena, block: int, acquire: bool) -> None:
    """Report an RMW of block `block`'s bitmap word to the race detector (release always;
    acquire too for a claim)."""
    race = mi.race
    if race is not None and mi.machine.current is not None:
        addr = arena.bitmap + 8 * block
        race.access(addr, 8, True, True)
        race.atomic_sync(mi.machine.current, addr, acquire, True, True, True)


def _reserve(mi: "MiRuntime", req_size: int) -> Arena | None:
    """`mi_arena_reserve`: a new arena big enough for `req_size`, committed up front."""
    count = len(mi.arenas)
    if count >= MI_MAX_ARENAS:
        return None
    reserve = MI_ARENA_RESERVE
    if 8 <= count <= 128:
        reserve = (1 << (count // 8)) * reserve
    if reserve < req_size:
        return None
    base = mi.mem.reserve(reserve, MI_SEGMENT_ALIGN)
    mi.mem.commit(base, reserve)
    blocks = reserve // MI_ARENA_BLOCK_SIZE
    arena = Arena(count, base, blocks, mi.raw_alloc(8 * blocks))
    mi.arenas.append(arena)
    return arena


def arena_alloc_aligned(mi: "MiRuntime", size: int, commit: bool) -> tuple[int, MemId]:
    """`_mi_arena_alloc_aligned` for segment memory (alignment 32 MiB, offset 0)."""
    blocks = (size + MI_ARENA_BLOCK_SIZE - 1) // MI_ARENA_BLOCK_SIZE
    for arena in mi.arenas:
        start = _try_claim(arena, blocks)
        if start >= 0:
            return _alloc_at(mi, arena, start, blocks, commit)
    arena = _reserve(mi, size)
    if arena is not None:
        start = _try_claim(arena, blocks)
        assert start >= 0, "a fresh arena holds the request"
        return _alloc_at(mi, arena, start, blocks, commit)
    # too big for an arena: straight from the OS (`_mi_os_alloc_aligned`), committed
    base = mi.mem.reserve(size, MI_SEGMENT_ALIGN)
    mi.mem.commit(base, (size + 4095) & ~4095)
    memid = MemId(None, 0, blocks)
    memid.initially_committed = True
    memid.initially_zero = True
    return base, memid


# ---------------------------------------------------------------------------------------------
# Free and purge

def arena_free(mi: "MiRuntime", addr: int, size: int, committed_size: int, memid: MemId) -> None:
    """`_mi_arena_free`: give the blocks back and schedule their purge."""
    arena = memid.arena
    if arena is None:
        mi.mem.release(addr)
        return
    assert isinstance(arena, Arena), f"memid of {addr:#x} names {arena!r}, not an arena"
    rng = range(memid.block_index, memid.block_index + memid.block_count)
    if committed_size != size:
        for j in rng:
            arena.committed[j] = False    # recommit the whole range when it is reused
    _schedule_purge(mi, arena, memid.block_index, memid.block_count)
    for j in rng:
        arena.inuse[j] = False
        _bitmap_rmw(mi, arena, j, acquire=False)  # the unclaim (release)
    arenas_try_purge(mi, False, False)


def _schedule_purge(mi: "MiRuntime", arena: Arena, start: int, blocks: int) -> None:
    """`mi_arena_schedule_purge`."""
    delay = arena_purge_delay()
    if arena.purge_expire != 0:
        arena.purge_expire += delay // 10
    else:
        arena.purge_expire = mi.clock_now() + delay
    for j in range(start, start + blocks):
        arena.purge[j] = True


def _purge(mi: "MiRuntime", arena: Arena, start: int, blocks: int) -> None:
    """`mi_arena_purge`: decommit (the purge of a free block is a decommit on Linux)."""
    mi.mem.decommit(arena.base + start * MI_ARENA_BLOCK_SIZE, blocks * MI_ARENA_BLOCK_SIZE)
    # for the premature-reuse oracle (ftlab.check.reuse), as segment_purge reports its purges
    mi.observer.mi_decommitted(arena.base + start * MI_ARENA_BLOCK_SIZE,
                               blocks * MI_ARENA_BLOCK_SIZE)
    for j in range(start, start + blocks):
        arena.purge[j] = False
        arena.committed[j] = False


def _try_purge(mi: "MiRuntime", arena: Arena, now: int, force: bool) -> bool:
    """`mi_arena_try_purge`: purge the scheduled blocks that are still free."""
    expire = arena.purge_expire
    if expire == 0 or (not force and expire > now):
        return False
    arena.purge_expire = 0
    any_purged = False
    full = True
    for j in range(arena.block_count):
        if arena.purge[j]:
            if arena.inuse[j]:
                full = False
                continue
            _purge(mi, arena, j, 1)
            any_purged = True
    if not full:
        arena.purge_expire = mi.clock_now() + arena_purge_delay()
    return any_purged


def arenas_try_purge(mi: "MiRuntime", force: bool, visit_all: bool) -> None:
    """`mi_arenas_try_purge`."""
    now = mi.clock_now()
    budget = len(mi.arenas) if visit_all else 1
    for arena in mi.arenas:
        if _try_purge(mi, arena, now, force):
            if budget <= 1:
                break
            budget -= 1


def arena_collect(mi: "MiRuntime", force_purge: bool) -> None:
    """`_mi_arena_collect`."""
    arenas_try_purge(mi, force_purge, True)


def arena_contains(mi: "MiRuntime", addr: int) -> bool:
    """Is `addr` inside some arena (`_mi_arena_contains`)?"""
    for arena in mi.arenas:
        if arena.base <= addr < arena.base + arena.block_count * MI_ARENA_BLOCK_SIZE:
            return True
    return False
