"""Happens-before race detection with vector clocks (FastTrack-style epochs).

Every thread carries a vector clock `vc` (a list indexed by thread index; a missing entry is 0).
Happens-before edges come from thread start (parent -> child), join (child's exit -> joiner),
mutexes and events (release -> acquire), and atomics: a release store or RMW publishes the
thread's clock on the location; an acquire load or RMW joins it. A relaxed store ends the
location's release sequence; a relaxed RMW continues it. Sequential consistency at the
scheduling points does not create happens-before by itself, as in C11.

Each access is kept as an epoch (thread, that thread's clock at the access) in a per-word
shadow, as TSan's: the 8-byte word at `addr & ~7` holds the last writes and the last reads of its
bytes, each with a byte mask. Two accesses race when they come from different threads, neither
happens before the other, their bytes overlap, at least one writes and at least one is plain
(non-atomic). A u32 field and the u16 beside it share a word but not a byte, so neighbouring
header fields never race with each other; a u64 store over both is compared with both.

Byte ranges (`read_bytes`, `write_bytes`, `fill`: memcpy and memset) are compared with every
access inside them. A short one is one access per word; a long one (more than `RANGE_WORDS`
words) is one record per 4 KiB page it touches, compared with the records and the word entries
of those pages, so a 1 MiB memcpy costs 256 records, not 131,072 entries.

What is kept: a write drops the earlier entries whose bytes it covers (FastTrack's "last
write": they happen before it, or this write has just been reported); an entry it covers only
in part stays, and a kept entry that happens before a later access can never be reported
against it. Reads are kept per (thread, atomic, mask), so a thread reading a word's halves at
different times keeps both epochs.

With `locations=True` each access also keeps the file, line and function of the first frame
outside `ftlab/sim`; exploration leaves it off for speed and a failing run is replayed with it on.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.sim.machine import Machine, VThread

_SIM_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# Source locations are named relative to the directory that holds the `ftlab` package, so a
# stored report does not depend on where ftlab was run from.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def vc_join(into: list[int], other: list[int]) -> None:
    n = len(other)
    if len(into) < n:
        into.extend([0] * (n - len(into)))
    for i in range(n):
        if other[i] > into[i]:
            into[i] = other[i]


def _tick(t: "VThread") -> None:
    vc = t.vc
    i = t.index
    if len(vc) <= i:
        vc.extend([0] * (i + 1 - len(vc)))
    vc[i] += 1


# A byte range of more words than this is kept as page records, not word entries.
RANGE_WORDS = 8
PAGE_SHIFT = 12


class RaceDetector:
    __slots__ = ("machine", "locations", "_writes", "_reads", "_ranges", "_paged", "_sync",
                 "checks", "solo")

    def __init__(self, locations: bool = False) -> None:
        self.machine: Machine | None = None
        self.locations = locations
        # word -> [(mask, thread, clock, step, atomic, location, addr, width)] of the last writes
        self._writes: dict[int, list[tuple]] = {}
        # word -> {(thread * 2 + atomic) << 8 | mask: (clock, step, location, addr, width)}
        self._reads: dict[int, dict[int, tuple]] = {}
        # page -> [(lo, hi, thread, clock, step, is_write, location)] of the long plain ranges
        self._ranges: dict[int, list[tuple]] = {}
        # page -> the words with entries in _writes/_reads, in first-touch order (a dict as an
        # ordered set), for the long ranges to find them
        self._paged: dict[int, dict[int, None]] = {}
        # addr -> (publisher, clock) of the release sequence on that atomic location
        self._sync: dict[int, tuple[int, list[int]]] = {}
        self.checks = 0
        # issue 13: the thread that happens after every access recorded so far and runs alone
        # (the finalizing thread, started after all the others ended), or None. Its accesses
        # can race with nothing recorded, and every later thread is started by it (so happens
        # after them): they need neither a check nor a record. Machine.spawn sets and clears it.
        self.solo: VThread | None = None

    # -----------------------------------------------------------------------------------------
    # Happens-before edges

    def on_spawn(self, parent: "VThread | None", child: "VThread") -> None:
        child.vc = list(parent.vc) if parent is not None else []
        _tick(child)
        if parent is not None:
            _tick(parent)

    def on_exit(self, t: "VThread") -> None:
        pass  # joiners acquire t.vc, which no longer changes

    def acquire(self, t: "VThread", clock: list[int] | None) -> None:
        if clock:
            vc_join(t.vc, clock)

    def release(self, t: "VThread") -> list[int]:
        """The clock to publish on a sync object; the thread's own clock moves on."""
        published = list(t.vc)
        _tick(t)
        return published

    def atomic_sync(self, t: "VThread", addr: int, acquire: bool, release: bool,
                    write: bool, rmw: bool) -> None:
        # _sync[addr] = (publisher, clock): publisher is the thread whose clock was copied, or
        # -1 when the clock joins several. A thread's own clock only grows, so it dominates
        # any clock it published itself: joining that again is skipped.
        sync = self._sync
        entry = sync.get(addr)
        ti = t.index
        vc = t.vc
        if acquire and entry is not None and entry[0] != ti:
            vc_join(vc, entry[1])
        if write:
            if release:
                c = vc.copy()
                publisher = ti
                if rmw and not acquire and entry is not None and entry[0] != ti:
                    vc_join(c, entry[1])  # a release RMW continues the release sequence
                    publisher = -1
                sync[addr] = (publisher, c)
                if len(vc) <= ti:       # _tick, inline
                    vc.extend([0] * (ti + 1 - len(vc)))
                vc[ti] += 1
            elif not rmw:
                sync.pop(addr, None)  # a relaxed store ends the release sequence

    # -----------------------------------------------------------------------------------------
    # Accesses

    def _where(self) -> tuple[str, int, str] | None:
        f = sys._getframe(2)
        while f is not None and f.f_code.co_filename.startswith(_SIM_DIR):
            f = f.f_back
        if f is None:
            return None
        path = f.f_code.co_filename
        if path.startswith(_ROOT + os.sep):
            path = path[len(_ROOT) + 1:]
        return (path, f.f_lineno, f.f_code.co_name)

    def plain(self, addr: int, width: int, is_write: bool) -> None:
        """The AddressSpace hook for plain loads and stores, and for byte ranges: `access`
        with atomic=False, its one-word case called directly (issue 13: this runs for every
        plain access of every execution)."""
        off = addr & 7
        if off + width > 8 or self.locations:
            self.access(addr, width, is_write, False)
            return
        t = self.machine.current
        if t is None or t is self.solo:
            return
        self.checks += 1
        self._word(t, addr - off, ((1 << width) - 1) << off, addr, width, is_write, False, None)

    def access(self, addr: int, width: int, is_write: bool, atomic: bool) -> None:
        m = self.machine
        t = m.current
        if t is None or t is self.solo:
            return  # set-up code, before any thread, or `solo`: ordered with everything
        self.checks += 1
        loc = self._where() if self.locations else None
        off = addr & 7
        if off + width <= 8:
            # one word: the fast path of every field access
            self._word(t, addr - off, ((1 << width) - 1) << off, addr, width, is_write, atomic, loc)
        elif width <= 8 * RANGE_WORDS:
            end = addr + width
            word = addr - off
            while word < end:
                lo = addr - word if addr > word else 0
                hi = end - word if end < word + 8 else 8
                self._word(t, word, ((1 << hi) - 1) ^ ((1 << lo) - 1), addr, width, is_write,
                           atomic, loc)
                word += 8
        else:
            self._range(t, addr, width, is_write, loc)

    def _range(self, t: "VThread", addr: int, width: int, is_write: bool, loc) -> None:
        """A long plain byte range (memcpy, memset): compared page by page with the word
        entries and the range records there, then recorded once per page."""
        lo, hi = addr, addr + width
        ti = t.index
        vc = t.vc
        nvc = len(vc)
        writes = self._writes
        reads = self._reads
        p0, p1 = lo >> PAGE_SHIFT, (hi - 1) >> PAGE_SHIFT
        for page in range(p0, p1 + 1):
            words = self._paged.get(page)
            if words:
                covered = []
                for word in words:
                    if word + 8 <= lo or word >= hi:
                        continue
                    a = lo - word if lo > word else 0
                    b = hi - word if hi < word + 8 else 8
                    mask = ((1 << b) - 1) ^ ((1 << a) - 1)
                    for w in writes.get(word, ()):
                        u = w[1]
                        if w[0] & mask and u != ti and w[2] > (vc[u] if u < nvc else 0):
                            self._report(addr, width, is_write, False, t, loc, u, w[3], True, w[4],
                                         w[5], w[6], w[7])
                    rd = reads.get(word)
                    if is_write and rd:
                        for key, r in rd.items():
                            u = key >> 9
                            if key & mask and u != ti and r[0] > (vc[u] if u < nvc else 0):
                                self._report(addr, width, True, False, t, loc, u, r[1], False,
                                             (key >> 8) & 1, r[2], r[3], r[4])
                    if is_write and mask == 0xFF:
                        covered.append(word)
                for word in covered:        # ordered before this write: superseded
                    writes.pop(word, None)
                    reads.pop(word, None)
                    del words[word]
            recs = self._ranges.get(page)
            if recs:
                for r in recs:
                    u = r[2]
                    if (r[0] < hi and lo < r[1] and u != ti and (is_write or r[5])
                            and r[3] > (vc[u] if u < nvc else 0)):
                        self._report(addr, width, is_write, False, t, loc, u, r[4], r[5], False,
                                     r[6], r[0], r[1] - r[0])
        rec = (lo, hi, ti, vc[ti], self.machine.steps, is_write, loc)
        for page in range(p0, p1 + 1):
            recs = self._ranges.get(page)
            if recs is None:
                self._ranges[page] = [rec]
            else:
                # superseded: what a write covers, and this thread's earlier reads it re-reads
                recs[:] = [r for r in recs if not (lo <= r[0] and r[1] <= hi
                                                   and (is_write or (r[2] == ti and not r[5])))]
                recs.append(rec)

    def _touch(self, word: int) -> None:
        words = self._paged.get(word >> PAGE_SHIFT)
        if words is None:
            self._paged[word >> PAGE_SHIFT] = {word: None}
        else:
            words[word] = None

    def _word(self, t: "VThread", word: int, mask: int, addr: int, width: int, is_write: bool,
              atomic: bool, loc) -> None:
        ti = t.index
        vc = t.vc
        nvc = len(vc)
        writes = self._writes.get(word)
        if writes is not None:
            for w in writes:
                u = w[1]
                if (w[0] & mask and u != ti and not (atomic and w[4])
                        and w[2] > (vc[u] if u < nvc else 0)):
                    self._report(addr, width, is_write, atomic, t, loc, u, w[3], True, w[4],
                                 w[5], w[6], w[7])
        ranges = self._ranges.get(word >> PAGE_SHIFT)
        if ranges:
            a0 = word + (mask & -mask).bit_length() - 1
            a1 = word + mask.bit_length()
            for r in ranges:
                u = r[2]
                if (r[0] < a1 and a0 < r[1] and u != ti and (is_write or r[5])
                        and r[3] > (vc[u] if u < nvc else 0)):
                    self._report(addr, width, is_write, atomic, t, loc, u, r[4], r[5], False,
                                 r[6], r[0], r[1] - r[0])
        reads = self._reads.get(word)
        if is_write:
            if reads:
                for key, r in reads.items():
                    u = key >> 9
                    r_atomic = (key >> 8) & 1
                    if (key & mask and u != ti and not (atomic and r_atomic)
                            and r[0] > (vc[u] if u < nvc else 0)):
                        self._report(addr, width, True, atomic, t, loc, u, r[1], False, r_atomic,
                                     r[2], r[3], r[4])
                # Drop the reads this write covers and is ordered after: a plain write is
                # ordered after all of them (else it was reported); an atomic write keeps the
                # unordered atomic reads.
                if mask == 0xFF and not atomic:
                    reads.clear()
                else:
                    self._drop_reads(reads, mask, atomic, ti, vc)
            entry = (mask, ti, vc[ti], self.machine.steps, atomic, loc, addr, width)
            if writes is None:
                self._writes[word] = [entry]
                self._touch(word)
            elif len(writes) == 1 and not writes[0][0] & ~mask:
                writes[0] = entry
            else:
                writes[:] = [w for w in writes if w[0] & ~mask]
                writes.append(entry)
        else:
            if reads is None:
                reads = self._reads[word] = {}
                self._touch(word)
            reads[(ti * 2 + atomic) << 8 | mask] = (vc[ti], self.machine.steps, loc, addr, width)

    @staticmethod
    def _drop_reads(reads: dict[int, tuple], mask: int, atomic: bool, ti: int,
                    vc: list[int]) -> None:
        nvc = len(vc)
        drop = [k for k, r in reads.items()
                if not (k & 0xFF) & ~mask
                and (not atomic or (k >> 9) == ti
                     or r[0] <= (vc[k >> 9] if (k >> 9) < nvc else 0))]
        for k in drop:
            del reads[k]

    def _report(self, addr, width, is_write, atomic, t, loc, u, ustep, u_write, u_atomic, uloc,
                uaddr, uwidth):
        m = self.machine
        def kind(write, atom):
            return f"{'atomic' if atom else 'plain'} {'write' if write else 'read'}"
        other = m.threads[u]
        theirs = "" if (uaddr, uwidth) == (addr, width) else f" of {uwidth} bytes at {uaddr:#x}"
        msg = (f"{kind(is_write, atomic)} of {width} bytes at {addr:#x} by {t.label} at step "
               f"{m.steps} races with the {kind(u_write, u_atomic)}{theirs} by {other.label} at "
               f"step {ustep}: neither happens before the other")
        details = []
        for who, step, where in ((t.label, m.steps, loc), (other.label, ustep, uloc)):
            if where is not None:
                details.append(f"{who} step {step}: {where[0]}:{where[1]} in {where[2]}")
        raise ViolationError("data-race", msg, tuple(details))
