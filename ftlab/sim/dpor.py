"""Source-DPOR with sleep sets (Abdulla, Aronis, Jonsson and Sagonas, "Optimal dynamic partial
order reduction", POPL 2014, Algorithm 1), stateless: each execution re-runs the program from
the start under a chooser that replays a prefix and then explores.

An execution is a sequence of events, one per machine step (a thread resumed at a scheduling
point and run to its next one). Each event has a footprint: the simulated memory words it read
and wrote (plain accesses through `on_plain_access`, atomics through `on_atomic_access`), the
mutexes, events and threads it operated on (`Machine.dpor.sync`), and the address space's
reservations (`on_map`). Two events are dependent when their footprints share a key and one of
them writes it; everything else commutes.

After each execution E the races of E are computed with vector clocks over that dependency: e
races with e' when they are dependent, of different threads, and e happens before e' through
nothing but their own conflict. For each race, at the state before e, the initials of
notdep(e, E).e' (the threads whose first event in that sequence has no predecessor in it) are
all added to the node's backtrack set (all enabled threads when none of them is enabled there).
Algorithm 1 adds one of them, which is enough when an event is one access; a step here runs on
to its next scheduling point, so e' may do more when it runs earlier (a read that sees another
value, then exits), gain a predecessor and stop being an initial: the other initials keep a
true one in the set. The next execution branches at the deepest node with a backtrack thread
not yet explored and not asleep.

A run may end with threads still alive: the process exit after `Py_FinalizeEx` ends the
daemon threads where they are (`Machine.end_thread`). Such an execution is not maximal, which
Algorithm 1 assumes. The ending step writes each other thread's key, which every step of that
thread reads, and its race with the next step of a runnable thread it ends (a step that never
ran) adds that thread at the node before it, so some execution runs that step first.

Sleep sets: a node remembers the event each explored thread took from it; the next branch
starts with those threads asleep, and a sleeping thread wakes when an event dependent with its
remembered event runs. A thread is never scheduled while asleep; when every enabled thread is
asleep the execution is equivalent to one already explored, so it stops there ("blocked"),
and only its events up to that point are analysed.

Invariants:
- every Mazurkiewicz trace of the program (over this dependency) has one complete execution
  explored, and no two complete explored executions are equivalent;
- a run is a pure function of the program and the prefix: the same prefix gives the same
  events and footprints (the mutex/event keys are creation serials, deterministic given the
  prefix);
- the state is plain data (`snapshot`/`restore`), so a search crosses process boundaries.

Soundness is relative to the footprints: model state kept in Python objects that several
threads change, outside simulated memory and the sync primitives, is not seen. The
comparisons with the unbounded DFS in the tests check it on the scenarios they cover.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from ftlab.sim.memory import chain_access_hooks
from ftlab.sim.schedule import ScheduleError

if TYPE_CHECKING:
    from ftlab.sim.machine import Machine, VThread

Footprint = dict[int, bool]     # key -> written; keys >= 0 are memory words, < 0 sync objects

WORD_SHIFT = 3
# Commit and decommit change what an access does, so each access also reads the key of its
# 64 KiB chunk (a mimalloc slice), which they write: coarser than an OS page (a segment's
# commit is 512 keys, not 8,192), so more conservative, never less.
CHUNK_SHIFT = 16
CHUNK_KEYS = -(1 << 52)         # chunk c's key is CHUNK_KEYS - c (below every sync key)
SPACE_KEY = -1                  # the address space's next reservation


def mutex_key(serial: int) -> int:
    return -2 - 3 * serial


def event_key(serial: int) -> int:
    return -3 - 3 * serial


def thread_key(index: int) -> int:
    return -4 - 3 * index


def independent(a: Footprint, b: Footprint) -> bool:
    if len(a) > len(b):
        a, b = b, a
    for key, written in a.items():
        other = b.get(key)
        if other is not None and (written or other):
            return False
    return True


class _Node:
    """The state before one step of the current execution."""

    __slots__ = ("enabled", "chosen", "backtrack", "done", "sleep", "taken")

    def __init__(self, enabled: tuple[int, ...], sleep: dict[int, Footprint]) -> None:
        self.enabled = enabled
        self.chosen = -1
        self.backtrack: set[int] = set()
        self.done: set[int] = set()
        self.sleep = sleep                          # asleep on arrival
        self.taken: dict[int, Footprint] = {}       # thread -> the event it took from here

    def dump(self) -> list:
        return [list(self.enabled), self.chosen, sorted(self.backtrack), sorted(self.done),
                [[t, _dump_fp(f)] for t, f in self.sleep.items()],
                [[t, _dump_fp(f)] for t, f in self.taken.items()]]

    @classmethod
    def load(cls, data: list) -> "_Node":
        enabled, chosen, backtrack, done, sleep, taken = data
        node = cls(tuple(enabled), {t: _load_fp(f) for t, f in sleep})
        node.chosen = chosen
        node.backtrack = set(backtrack)
        node.done = set(done)
        node.taken = {t: _load_fp(f) for t, f in taken}
        return node


def _dump_fp(fp: Footprint) -> list[int]:
    out: list[int] = []
    for key, written in fp.items():
        out += (key, int(written))
    return out


def _load_fp(data: list[int]) -> Footprint:
    return {data[i]: bool(data[i + 1]) for i in range(0, len(data), 2)}


# ---------------------------------------------------------------------------------------------
# Footprints of a run's steps

class Recorder:
    """Records each step of a run as (thread, footprint) in `events`. `Machine.run` calls
    `attach` before the first step and the chooser's `finish` after the last."""

    def __init__(self) -> None:
        self.events: list[tuple[int, Footprint]] = []
        self._machine: Machine | None = None
        self._base = 0                  # the machine's step count when the run started
        self._fp: Footprint = {}        # the footprint of the step in progress
        self._saved: tuple = ()
        self._quiet = False             # the oracles' own reads after a step are not its
        self.ended_runnable: list[tuple[int, int]] = []     # (event, thread) of `ended`

    def attach(self, m: "Machine") -> None:
        if m.c11 is not None:
            raise ValueError("DPOR runs under sequential consistency only: the c11 memory "
                             "model's read-from choices are not in its dependency relation")
        self._machine = m
        self._base = m.steps
        mem = m.mem
        self._saved = (mem.on_plain_access, mem.on_atomic_access, mem.unobserved, m.after_step)
        mem.on_plain_access = chain_access_hooks(self.access, mem.on_plain_access)
        mem.watch_atomics(chain_access_hooks(self.access, mem.on_atomic_access))
        mem.on_map = self._map
        # what the model reads and writes without a hook of its own: relaxed peeks, parking
        # lots' checks, free-list links (the atomics' own raw accesses repeat what they report)
        mem.on_raw_access = self._raw
        after = m.after_step
        if after is None:
            m.after_step = self._step
        else:
            def both(t: "VThread") -> None:
                self._step(t)
                self._quiet = True
                try:
                    after(t)
                finally:
                    self._quiet = False
            m.after_step = both
        m.dpor = self

    def detach(self) -> None:
        """Unhook, and record the step a violation cut short before `after_step`."""
        m = self._machine
        if m is None:
            return
        mem = m.mem
        mem.on_plain_access, mem.on_atomic_access, mem.unobserved, m.after_step = self._saved
        mem.on_map = None
        mem.on_raw_access = None
        m.dpor = None
        self._machine = None
        if self._fp and m.violation is not None and m.last is not None:
            self._step(m.last)

    def access(self, addr: int, width: int, is_write: bool) -> None:
        """A memory access of the step in progress."""
        fp = self._fp
        end = addr + width - 1
        for w in range(addr >> WORD_SHIFT, (end >> WORD_SHIFT) + 1):
            if is_write:
                fp[w] = True
            elif w not in fp:
                fp[w] = False
        for c in range(addr >> CHUNK_SHIFT, (end >> CHUNK_SHIFT) + 1):
            fp.setdefault(CHUNK_KEYS - c, False)    # ordered with a commit or decommit

    def _raw(self, addr: int, width: int, is_write: bool) -> None:
        if not self._quiet:
            self.access(addr, width, is_write)

    def _map(self, addr: int, size: int) -> None:
        fp = self._fp
        fp[SPACE_KEY] = True
        for c in range(addr >> CHUNK_SHIFT, ((addr + size - 1) >> CHUNK_SHIFT) + 1 if size else 0):
            fp[CHUNK_KEYS - c] = True

    def sync(self, key: int, write: bool) -> None:
        """A mutex, event or thread operation of the step in progress."""
        if write:
            self._fp[key] = True
        elif key not in self._fp:
            self._fp[key] = False

    def ended(self, t: "VThread", runnable: bool) -> None:
        """The step in progress ends thread `t` where it is (the process exit ends every other
        thread, the finished ones included, since in another order they would not be): it is
        dependent with every step of `t`, and with `t`'s next step, which never runs, when
        `t` is runnable."""
        if runnable:
            self.ended_runnable.append((len(self.events), t.index))
        self._fp[thread_key(t.index)] = True

    def _step(self, t: "VThread") -> None:
        fp = self._fp
        self._fp = {}
        p = t.index
        # after the spawn that made it runnable, and before an end that another thread's step
        # makes of it (`ended`); its own exit writes the key
        fp.setdefault(thread_key(p), False)
        self._event(p, fp)

    def _event(self, p: int, fp: Footprint) -> None:
        self.events.append((p, fp))


class Traced(Recorder):
    """Any chooser, with the footprints of its run recorded (tests compare trace classes)."""

    def __init__(self, chooser) -> None:
        super().__init__()
        self.chooser = chooser

    def choose(self, runnable, current):
        return self.chooser.choose(runnable, current)

    def finish(self) -> None:
        self.detach()
        self.chooser.finish()


def trace_class(events: list[tuple[int, Footprint]]) -> tuple:
    """The Mazurkiewicz trace of `events`: each thread's sequence of footprints and the order
    of every dependent pair of events of different threads. Two runs are equivalent exactly
    when their classes are equal."""
    per_thread: dict[int, list[tuple]] = {}
    ids: list[tuple[int, int]] = []
    for p, fp in events:
        seq = per_thread.setdefault(p, [])
        ids.append((p, len(seq)))
        seq.append(tuple(sorted(fp.items())))
    order = set()
    for j, (p, fp) in enumerate(events):
        for i in range(j):
            q, fq = events[i]
            if q != p and not independent(fq, fp):
                order.add((ids[i], ids[j]))
    return (tuple(sorted((p, tuple(s)) for p, s in per_thread.items())), frozenset(order))


# ---------------------------------------------------------------------------------------------
# The chooser: replays the prefix, explores past it, keeps the sleep set

class _DPORChooser(Recorder):
    def __init__(self, dpor: "DPOR") -> None:
        super().__init__()
        self._dpor = dpor
        self._nodes = dpor._nodes
        self._replay = dpor._replay     # steps below this replay nodes[k].chosen
        self._sleep: dict[int, Footprint] = {}
        self.blocked = -1               # the step at which every enabled thread was asleep

    def attach(self, m: "Machine") -> None:
        super().attach(m)
        self._arrive(0)

    def _arrive(self, k: int) -> None:
        """The state before step k (counted from the run's start)."""
        nodes = self._nodes
        if k < self._replay - 1:
            return
        if k == self._replay - 1:
            node = nodes[k]         # the branch: the siblings explored before sleep
            self._sleep = dict(node.sleep)
            for p in sorted(node.done):
                if p != node.chosen:
                    self._sleep[p] = node.taken[p]
            return
        enabled = tuple(t.index for t in self._machine.runnable)
        nodes.append(_Node(enabled, dict(self._sleep)))

    def choose(self, runnable, current):
        k = self._machine.steps - self._base
        if k < self._replay:
            want = self._nodes[k].chosen
            for t in runnable:
                if t.index == want:
                    return t
            raise ScheduleError(f"DPOR prefix diverged at step {k}: the program is not deterministic")
        sleep = self._sleep
        awake = [t for t in runnable if t.index not in sleep]
        if not awake:
            self.blocked = k
            return None
        return current if current in awake else awake[0]

    def _step(self, t: "VThread") -> None:
        if self.blocked >= 0:
            self._fp = {}
            return
        super()._step(t)

    def _event(self, p: int, fp: Footprint) -> None:
        k = len(self.events)
        node = self._nodes[k]
        if k >= self._replay:
            if p in self._sleep:            # the only runnable thread is asleep
                self.blocked = k
                return
            node.chosen = p
        node.backtrack.add(p)
        node.done.add(p)
        node.taken[p] = fp
        self.events.append((p, fp))
        if k >= self._replay - 1:
            self._sleep = {r: f for r, f in self._sleep.items() if independent(f, fp)}
        if self._machine is not None:
            self._arrive(k + 1)

    def finish(self) -> None:
        self.detach()
        self._dpor._finished(self)


# ---------------------------------------------------------------------------------------------
# The strategy

class DPOR:
    """Source-DPOR with sleep sets over the whole interleaving space (no bound)."""

    name = "dpor"
    parallel = False

    def __init__(self) -> None:
        self._nodes: list[_Node] = []
        self._replay = 0
        self._exhausted = False
        self._running = False
        self.executions = 0     # complete executions (one per trace)
        self.blocked = 0        # executions stopped by the sleep sets
        self.races = 0

    @property
    def exhausted(self) -> bool:
        return self._exhausted

    def execution(self, i: int) -> _DPORChooser | None:
        if self._exhausted:
            return None
        if self._running:
            raise RuntimeError("DPOR: the previous execution did not finish")
        self._running = True
        return _DPORChooser(self)

    def describe(self) -> str:
        return "dpor"

    def _finished(self, c: _DPORChooser) -> None:
        self._running = False
        if c.blocked >= 0:
            self.blocked += 1
        else:
            self.executions += 1
        self.races += _analyse(c.events, self._nodes)
        self._ended_races(c)
        self._next_branch()

    def _ended_races(self, c: _DPORChooser) -> None:
        """An execution ended with threads still runnable is not maximal: the event that ended
        thread d races with d's next step, which never ran. Reversing it runs d's step first,
        from the state before that event; the ordinary races of d's step then reach back
        further. Without this, a thread the process exit ends before its first step would
        never run in any execution."""
        n = len(c.events)
        for j, d in c.ended_runnable:
            if j < n:
                node = self._nodes[j]
                if d in node.enabled:
                    node.backtrack.add(d)
                else:
                    node.backtrack.update(node.enabled)
                self.races += 1

    def _next_branch(self) -> None:
        nodes = self._nodes
        for b in range(len(nodes) - 1, -1, -1):
            node = nodes[b]
            todo = sorted(node.backtrack - node.done - node.sleep.keys())
            if todo:
                del nodes[b + 1:]
                node.chosen = todo[0]
                self._replay = b + 1
                return
        del nodes[:]
        self._exhausted = True

    def snapshot(self) -> dict:
        return {"nodes": [n.dump() for n in self._nodes], "replay": self._replay,
                "exhausted": self._exhausted, "executions": self.executions,
                "blocked": self.blocked, "races": self.races}

    @classmethod
    def restore(cls, state: dict) -> "DPOR":
        d = cls()
        d._nodes = [_Node.load(n) for n in state["nodes"]]
        d._replay = state["replay"]
        d._exhausted = state["exhausted"]
        d.executions = state["executions"]
        d.blocked = state["blocked"]
        d.races = state["races"]
        return d


# ---------------------------------------------------------------------------------------------
# Race analysis

def _analyse(events: list[tuple[int, Footprint]], nodes: list[_Node]) -> int:
    """Add to the nodes' backtrack sets what the races of `events` ask for; returns the number
    of races."""
    n_threads = 1 + max((p for p, _ in events), default=0)
    vcs: list[list[int]] = []
    local: list[int] = []
    steps_of: list[list[int]] = [[] for _ in range(n_threads)]
    last_write: dict[int, int] = {}
    reads: dict[int, list[int]] = {}
    races = 0
    for j, (p, fp) in enumerate(events):
        prev = steps_of[p][-1] if steps_of[p] else -1
        conflicts: list[int] = []
        for key, written in fp.items():
            w = last_write.get(key)
            if written:
                rs = reads.get(key)
                cands = rs if rs else ((w,) if w is not None else ())
            else:
                cands = (w,) if w is not None else ()
            for c in cands:
                if events[c][0] != p and c not in conflicts:
                    conflicts.append(c)
        vc = list(vcs[prev]) if prev >= 0 else [0] * n_threads
        for c in conflicts:
            _join(vc, vcs[c])
        vc[p] = len(steps_of[p]) + 1
        for c in conflicts:
            q = events[c][0]
            mark = local[c] + 1
            others = [x for x in conflicts if x != c]
            if prev >= 0:
                others.append(prev)
            if any(vcs[x][q] >= mark for x in others):
                continue        # c happens before e_j through another event: not a race
            races += 1
            minus = [0] * n_threads
            for x in others:
                _join(minus, vcs[x])
            _backtrack(nodes[c], c, q, mark, j, p, minus, events, vcs, steps_of)
        vcs.append(vc)
        local.append(len(steps_of[p]))
        steps_of[p].append(j)
        for key, written in fp.items():
            if written:
                last_write[key] = j
                reads.pop(key, None)
            else:
                reads.setdefault(key, []).append(j)
    return races


def _join(into: list[int], other: list[int]) -> None:
    for r, v in enumerate(other):
        if v > into[r]:
            into[r] = v


def _backtrack(node: _Node, i: int, q: int, mark: int, j: int, p: int, minus: list[int],
               events, vcs, steps_of) -> None:
    """The race e_i (thread q) < e_j (thread p): put the initials of notdep(e_i, E).e_j in node
    i's backtrack set."""
    initials: list[int] = []
    for r in range(len(steps_of)):
        if r == q:
            continue            # q's later events all happen after e_i
        s = steps_of[r]
        f = s[bisect.bisect_right(s, i)] if s and s[-1] > i else -1
        if r == p and (f < 0 or f >= j):
            clock = minus       # e_j itself, without its edge from e_i
        elif f < 0 or f >= j:
            continue            # r has no event in notdep(e_i, E) before e_j
        else:
            clock = vcs[f]
            if clock[q] >= mark:
                continue        # f happens after e_i, so every later event of r does
        if all(r2 == r or clock[r2] == 0 or steps_of[r2][clock[r2] - 1] < i
               for r2 in range(len(steps_of))):
            initials.append(r)
    # Every initial, not one: a step runs on from its first access to the next scheduling
    # point, so e_j's step may do more when it runs before e_i (a read that sees another value
    # and then exits, say) and gain a predecessor in the sequence. The initials of the other
    # threads stay initials (their steps read what they read in E), so adding them all keeps
    # a true initial of the reversed sequence in the backtrack set.
    enabled = node.enabled
    add = [r for r in initials if r in enabled]
    node.backtrack.update(add if add else enabled)
