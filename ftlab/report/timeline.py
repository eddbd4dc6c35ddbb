"""A failing run as a timeline: one column per thread, one row per event, the violation last.

Each access is named by what it touches (`OldItem#1.ob_ref_shared`, `qsbr.slot[6].seq`; see
`ftlab/report/names.py`), and consecutive events of one call of a modelled C function are
grouped under a `▸ function -> result` row (the result when the call returned one; traced runs
record it, `Machine.results_hook`). The events that touch the memory the violation names (the
conflicting accesses: both sides of a data race, the free and the use of a use-after-free, and
every access to the objects the violation is about) are marked with `*`; a thread switch is
marked with `»`. Every other run of more than `FOLD_MIN` events folds into one line with a
count ("… 214 steps of b:reader (thread start: _mi_heap_init_ex, …), no access to OldItem#1"),
unless `full`. `raw` shows the machine's addresses as well. The report ends with the violated
invariant in words. `timeline_items` gives the same content as data for the HTML report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from ftlab.report.invariants import invariant
from ftlab.sim.machine import Event
from ftlab.sim.schedule import thread_letter
from ftlab.sim.violation import Violation

_ADDR = re.compile(r"0x[0-9a-fA-F]{4,}")
# "name [0xaddr]" from the trace; a name may hold spaces in parentheses: `heap(a, OBJECT).x`
_NAMED = re.compile(r"((?:[^\s(\[]|\([^)]*\))+) \[(0x[0-9a-fA-F]+)\]")
_BARE = re.compile(r"\[(0x[0-9a-fA-F]+)\]")
FOLD_MIN = 3                                             # shorter runs stay as they are


@dataclass(frozen=True)
class TimelineRow:
    step: int
    thread: int       # column; -1 for the machine (the violation line)
    text: str
    mark: bool        # touches memory the violation names
    func: str = ""    # the modelled C function
    switch: bool = False   # another thread ran the event before
    call: int = 0     # which call of `func` (0: grouped by the function's name alone)


@dataclass(frozen=True)
class Fold:
    """A folded run of rows: `text` says what it was, `rows` are the rows it hides."""
    text: str
    rows: tuple[TimelineRow, ...]


@dataclass(frozen=True)
class Head:
    """The start of a call: the next rows of `thread` are in `func`, which returned `result`
    ("" for a void call, one that has not returned, or a result with no C value)."""
    thread: int
    func: str
    result: str = ""

    @property
    def text(self) -> str:
        return f"▸ {self.func}" + (f" -> {self.result}" if self.result else "")


def conflict_words(violation: Violation | None) -> set[int]:
    """The 8-byte words named in the violation's message and details."""
    if violation is None:
        return set()
    text = " ".join((violation.message, *violation.details))
    return {int(a, 16) >> 3 for a in _ADDR.findall(text)}


_OP_OR_WIDTH = re.compile(r"^[a-z_-]*$|^\d+$")       # `load [0x…]`: a bare address, no name


def _words(text: str, raw: bool) -> str:
    """An event in words: `name [addr]` becomes `name` (both with `raw`); a bare address
    stays."""
    if raw:
        return text
    return _NAMED.sub(lambda m: m.group(0) if _OP_OR_WIDTH.match(m.group(1)) else m.group(1),
                      text)


# a field whose target is a block of its own (names.py `block_layout`): `dict#1.ma_keys.dk_usable`
# is in the keys object `dict#1.ma_keys`, not in the dict (a tuple's `ob_item` is inline)
_THING = re.compile(r"([^.+\[]+)(\.(?:ma_keys|ob_item|mem_free_queue)(?:#\d+)?(?=[.\[]))?")


def _object_of(name: str) -> str:
    """`OldItem#1.ob_ref_shared` -> `OldItem#1`, `dict#1.ma_keys.dk_usable` ->
    `dict#1.ma_keys`: the named thing, without field or offset."""
    m = _THING.match(name)
    if m is None:
        return name
    return m.group(0) if m.group(2) and not m.group(1).startswith("tuple#") else m.group(1)


def _about(a: int, words: set[int]) -> bool:
    """`a` is a word the violation names, or in the object header at such an address (the
    violation names an object by its pointer; its fields lie from -16 to +32 around it)."""
    return any((a >> 3) + d in words for d in range(-3, 3))


def timeline_rows(trace: Sequence[Event], violation: Violation | None = None,
                  raw: bool = True) -> list[TimelineRow]:
    words = conflict_words(violation)
    # the things (objects, blocks, structs) whose words the violation names: every access to
    # them is part of the story
    things = set(violation_things(trace, violation))
    rows = []
    last = None
    for e in trace:
        if e.thread < 0:
            continue  # machine-level events: the violation is reported below the table
        mark = bool(words) and any(int(a, 16) >> 3 in words for a in _ADDR.findall(e.what))
        if not mark and things:
            mark = any(_object_of(n) in things for n, _ in _NAMED.findall(e.what))
        rows.append(TimelineRow(e.step, e.thread, _words(e.what, raw), mark,
                                getattr(e, "func", ""), last is not None and last != e.thread,
                                getattr(e, "call", 0)))
        last = e.thread
    return rows


def violation_things(trace: Sequence[Event], violation: Violation | None) -> list[str]:
    """The named things the violation is about, in the order the trace first names them."""
    words = conflict_words(violation)
    out: list[str] = []
    for e in trace:
        for name, a in _NAMED.findall(e.what):
            thing = _object_of(name)
            if "#" in thing and _about(int(a, 16), words) and thing not in out:
                out.append(thing)
    return out


def _fold_text(rows: Sequence[TimelineRow], threads: Sequence[str], things: Sequence[str]) -> str:
    who = []
    for r in rows:
        label = threads[r.thread] if r.thread < len(threads) else thread_letter(r.thread)
        if label not in who:
            who.append(label)
    texts = [r.text for r in rows]
    if any(t.startswith("start ") for t in texts):
        what = "thread start"
    elif any(t == "exit" for t in texts) or any(t.startswith("joined") for t in texts):
        what = "thread teardown"
    else:
        what = ""
    funcs: list[str] = []
    for r in rows:
        if r.func and r.func not in funcs:
            funcs.append(r.func)
    detail = ", ".join(funcs[:3]) + (", …" if len(funcs) > 3 else "")
    inside = ": ".join(x for x in (what, detail) if x)
    n = len({(r.step, r.thread) for r in rows})
    text = f"… {n} step{'s' if n != 1 else ''} of {', '.join(who)}"
    if inside:
        text += f" ({inside})"
    if things:
        text += f", no access to {', '.join(things)}"
    return text


def call_results(trace: Sequence[Event], raw: bool = False) -> dict[int, str]:
    """What each traced call returned, in words, by call number (Event.call)."""
    return {e.call: _words(e.result, raw) for e in trace if getattr(e, "result", "") and e.call}


def timeline_items(trace: Sequence[Event], threads: Sequence[str],
                   violation: Violation | None = None, *, full: bool = False,
                   raw: bool = False) -> list[TimelineRow | Fold | Head]:
    """The rows, with a `Head` where a thread enters another function and, unless `full`, the
    runs of more than FOLD_MIN unmarked rows folded."""
    rows = timeline_rows(trace, violation, raw)
    things = violation_things(trace, violation)
    results = call_results(trace, raw)
    items: list[TimelineRow | Fold | Head] = []
    current: dict[int, tuple[str, int]] = {}
    run: list[TimelineRow] = []

    def flush() -> None:
        if len(run) > FOLD_MIN and not full:
            items.append(Fold(_fold_text(run, threads, things), tuple(run)))
            current.clear()         # after a fold, say again where each thread is
        else:
            for r in run:
                emit(r)
        run.clear()

    def emit(r: TimelineRow) -> None:
        if r.func and current.get(r.thread) != (r.func, r.call):
            items.append(Head(r.thread, r.func, results.get(r.call, "") if r.call else ""))
        current[r.thread] = (r.func, r.call)
        items.append(r)

    tail = len(rows) - FOLD_MIN         # the last rows lead to the violation: never folded
    for i, r in enumerate(rows):
        if r.mark or full or i >= tail:
            flush()
            emit(r)
        else:
            run.append(r)
    flush()
    return items


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_timeline(trace: Sequence[Event], threads: Sequence[str],
                    violation: Violation | None = None, width: int = 48, *,
                    full: bool = False, raw: bool = False) -> str:
    cols = len(threads)
    header = "step    " + "  ".join(f"{name:<{width}}" for name in threads)
    lines = [header.rstrip(), "-" * min(len(header), 8 + cols * (width + 2))]

    def line(step: str, flag: str, thread: int, text: str) -> str:
        cells = [""] * cols
        cells[thread] = _clip(text, width)
        return f"{step:>4}{flag:<2}  " + "  ".join(f"{c:<{width}}" for c in cells).rstrip()

    items = timeline_items(trace, threads, violation, full=full, raw=raw)
    marked = False
    for it in items:
        if isinstance(it, Fold):
            lines.append(f"{it.rows[0].step:>4}    {it.text}")
        elif isinstance(it, Head):
            lines.append(line("", "", it.thread, it.text))
        else:
            marked = marked or it.mark
            flag = ("*" if it.mark else "") + ("»" if it.switch else "")
            lines.append(line(str(it.step), flag, it.thread, "  " + it.text))
    if violation is not None:
        lines.append("")
        lines.append(_name_addresses(str(violation), trace))
        lines.append(f"invariant broken ({violation.kind}): {invariant(violation.kind)}")
        story = block_story(trace, threads, violation)
        if story:
            lines.append(story)
        if marked:
            lines.append("* marks the accesses to the memory the violation names; "
                         "» a switch of thread")
    if any(isinstance(it, Fold) for it in items):
        lines.append("… folded runs: --full shows every step")
    return "\n".join(lines)


def _name_addresses(text: str, trace: Sequence[Event]) -> str:
    """The violation's text with each address followed by the name of what the trace shows
    there: the field named at that address, else the object whose header holds it."""
    exact: dict[int, str] = {}
    for e in trace:
        for name, a in _NAMED.findall(e.what):
            exact.setdefault(int(a, 16), name)

    def sub(m: re.Match[str]) -> str:
        a = int(m.group(0), 16)
        name = exact.get(a)
        if name is None:            # an object pointer: a header field from -16 to +32
            near = [exact[b] for b in range(a - 16, a + 32) if b in exact and "#" in exact[b]]
            name = _object_of(near[0]) if near else None
        elif "#" in name:
            name = _object_of(name)
        return f"{m.group(0)} ({name})" if name else m.group(0)
    return _ADDR.sub(sub, text)


# --- the block's history in words (issue 16) ----------------------------------------------------
# The oracles record each block's history as they observe it (`ftlab/check/uaf.py` Block.history,
# `refcount.py` GhostObject.history, the heap oracles' `history()`); the violation carries it in
# its details. `block_story` re-reads those lines into one or two sentences: nothing is
# recomputed from the trace but the access itself.

_WHO = r"([a-z]+:\S+)"
_ALLOC = (re.compile(rf"allocated \(([\d,]+) bytes, heap (\w+)\) by {_WHO} at step (\d+)"),
          re.compile(rf"created as an? ([\d,]+)-byte (\w+) object at \S+ (?:\([^)]*\) )?"
                     rf"by {_WHO} at step (\d+)"),
          re.compile(rf"step (\d+) {_WHO}: created"))
_DELAYED = re.compile(rf"passed to _PyMem_FreeDelayed by {_WHO} at step (\d+)")
_FREED = (re.compile(rf"freed by {_WHO} at step (\d+)"), re.compile(rf"step (\d+) {_WHO}: freed$"))
_OBJECT = re.compile(r"the (\w+) object at \S+ (?:\([^)]*\) )?\((\d+) bytes, owner")


def _alloc_words(details: Sequence[str], message: str) -> tuple[str, str, str] | None:
    """(who, as what, step) of the allocation the details record."""
    for d in details:
        m = _ALLOC[0].search(d)
        if m:
            return m.group(3), f"a {m.group(1)}-byte {m.group(2)} block", m.group(4)
        m = _ALLOC[1].search(d)
        if m:
            return m.group(3), f"a {m.group(1)}-byte {m.group(2)} object", m.group(4)
        m = _ALLOC[2].search(d)
        if m:
            o = _OBJECT.search(message)
            what = f"a {o.group(2)}-byte {o.group(1)} object" if o else "an object"
            return m.group(2), what, m.group(1)
    return None


def _free_words(details: Sequence[str], kind: str, alloc_who: str | None) -> str:
    """Who freed the block, when, through which path."""
    queued = next((m for m in map(_DELAYED.search, details) if m), None)
    freed = None
    for d in details:
        m = _FREED[0].search(d)
        if m:
            freed = (m.group(1), m.group(2))
        m = _FREED[1].search(d)
        if m:
            freed = (m.group(2), m.group(1))
    if freed is None:
        return "never freed" if kind == "leak" else ""
    who, step = freed
    if queued is not None:
        path = (f"through the delayed-free queue (queued by {queued.group(1)} at step "
                f"{queued.group(2)}, processed at step {step})")
    elif alloc_who is not None and who != alloc_who:
        path = "from another thread than its allocator (a cross-thread free)"
    else:
        path = "(a direct free by its allocator)"
    return f"freed by {who} at step {step} {path}"


def _access_words(trace: Sequence[Event], violation: Violation, threads: Sequence[str]) -> str:
    """The access that broke the invariant: the violating thread's last event at its step, else
    (an access stopped before the trace recorded it) the access as the violation's message says
    it ("b:reader: atomic read of 8 bytes at 0x… , offset 48 of …")."""
    last = None
    for e in trace:
        if e.step == violation.step and e.thread >= 0 and (
                violation.thread is None or threads[e.thread] == violation.thread):
            last = e
    if last is not None:
        func = getattr(last, "func", "")
        return f"`{_words(last.what, raw=False)}`" + (f" in {func}" if func else "")
    m = re.match(r"\S+: (.+?) at 0x[0-9a-f]+", violation.message)
    if m is None:
        return ""
    off = re.search(r"offset (\d+) of", violation.message)
    return m.group(1) + (f" at offset {off.group(1)} of it" if off else "")


def block_story(trace: Sequence[Event], threads: Sequence[str],
                violation: Violation | None) -> str:
    """The violated block's history in one or two sentences, from what the oracle recorded;
    "" when the violation carries no block history."""
    if violation is None:
        return ""
    alloc = _alloc_words(violation.details, violation.message)
    if alloc is None:
        return ""
    who, what, step = alloc
    first = f"The block was allocated by {who} as {what} at step {step}"
    freed = _free_words(violation.details, violation.kind, who)
    first += (f", and {freed}." if freed else ".")
    if violation.kind == "leak":
        return (f"{first} At the end of the run (step {violation.step}) it has no reference "
                f"left but is still allocated.")
    access = _access_words(trace, violation, threads)
    if violation.step < 0:
        return first
    by = f" {violation.thread}'s" if violation.thread else ""
    second = (f"Then at step {violation.step},{by} {access} broke the invariant "
              f"({violation.kind})." if access else
              f"At step {violation.step} the invariant broke ({violation.kind}).")
    return f"{first} {second}"
