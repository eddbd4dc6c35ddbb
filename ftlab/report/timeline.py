"""A failing run as a timeline: one column per thread, one row per event, the violation last.

Each access is named by what it touches (`OldItem#1.ob_ref_shared`, `qsbr.slot[6].seq`; see
`ftlab/report/names.py`), and consecutive events of one thread in one modelled C function are
grouped under a `▸ function` row. The events that touch the memory the violation names (the
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
_NAMED = re.compile(r"(\S+) \[(0x[0-9a-fA-F]+)\]")       # "name [0xaddr]" from the trace
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


@dataclass(frozen=True)
class Fold:
    """A folded run of rows: `text` says what it was, `rows` are the rows it hides."""
    text: str
    rows: tuple[TimelineRow, ...]


@dataclass(frozen=True)
class Head:
    """The start of a call: the next rows of `thread` are in `func`."""
    thread: int
    func: str


def conflict_words(violation: Violation | None) -> set[int]:
    """The 8-byte words named in the violation's message and details."""
    if violation is None:
        return set()
    text = " ".join((violation.message, *violation.details))
    return {int(a, 16) >> 3 for a in _ADDR.findall(text)}


def _words(text: str, raw: bool) -> str:
    """An event in words: `name [addr]` becomes `name` (both with `raw`)."""
    return text if raw else _NAMED.sub(r"\1", text)


def _object_of(name: str) -> str:
    """`OldItem#1.ob_ref_shared` -> `OldItem#1`: the named thing, without field or offset."""
    return re.split(r"[.+]", name, maxsplit=1)[0]


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
                                getattr(e, "func", ""), last is not None and last != e.thread))
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


def timeline_items(trace: Sequence[Event], threads: Sequence[str],
                   violation: Violation | None = None, *, full: bool = False,
                   raw: bool = False) -> list[TimelineRow | Fold | Head]:
    """The rows, with a `Head` where a thread enters another function and, unless `full`, the
    runs of more than FOLD_MIN unmarked rows folded."""
    rows = timeline_rows(trace, violation, raw)
    things = violation_things(trace, violation)
    items: list[TimelineRow | Fold | Head] = []
    current: dict[int, str] = {}
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
        if r.func and current.get(r.thread) != r.func:
            items.append(Head(r.thread, r.func))
        current[r.thread] = r.func
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
            lines.append(line("", "", it.thread, f"▸ {it.func}"))
        else:
            marked = marked or it.mark
            flag = ("*" if it.mark else "") + ("»" if it.switch else "")
            lines.append(line(str(it.step), flag, it.thread, "  " + it.text))
    if violation is not None:
        lines.append("")
        lines.append(_name_addresses(str(violation), trace))
        lines.append(f"invariant broken ({violation.kind}): {invariant(violation.kind)}")
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
