"""Counterexamples in words (issue 16): accesses named from the runtime's layout, steps grouped
under their modelled C function, uninteresting runs folded (`--full` unfolds them)."""

from __future__ import annotations

import re

import pytest

from ftlab import Config, run
from ftlab.report.names import named_accesses
from ftlab.report.timeline import Fold, Head, format_timeline, timeline_items
from ftlab.scenarios import get
from ftlab.sim import Random, Replay

# shrunk counterexamples found by `ftlab explore` (seed 0)
TRYINCREF = ("tryincref-zero", "tryincref-accepts-zero", "S1:ab4a6.rko5zv")
HAND_OFF = ("hand-off", "brc-no-queue", "S1:a143.10i1bgc")


def _replay(case, trace=True):
    name, mutation, schedule = case
    return run(get(name), Config(mutations=frozenset([mutation])), Replay(schedule), trace=trace)


@pytest.fixture(scope="module")
def tryincref():
    return _replay(TRYINCREF)


@pytest.fixture(scope="module")
def hand_off():
    return _replay(HAND_OFF)


def _texts(r) -> str:
    return "\n".join(e.what for e in r.trace)


def test_object_fields_are_named_by_the_object_and_its_field(tryincref):
    text = _texts(tryincref)
    assert re.search(r"cas OldItem#1\.ob_ref_shared \[0x[0-9a-f]+\] 0x0 -> 0x4", text)
    assert "OldItem#1.ob_ref_local" in text and "OldItem#1.ob_type" in text
    assert "PyType(OldItem).ob_tid" in text          # a static type object


def test_runtime_structs_are_named_by_struct_field_and_slot(tryincref):
    text = _texts(tryincref)
    assert "load qsbr.wr_seq [" in text
    assert re.search(r"store qsbr\.slot\[\d\]\.seq \[", text)
    assert re.search(r"cas tstate#1\.state \[", text)
    assert "slot.addr [" in text                        # the scenario's shared word


def test_mimalloc_structures_are_named(hand_off):
    text = _texts(hand_off)
    assert "heap(a, OBJECT).thread_delayed_free [" in text
    assert "page(seg 0, slice 1).xthread_free [" in text
    assert "page(seg 0, slice 1).xheap [" in text
    assert "segment(seg 0).abandoned_next [" in text
    assert "abandoned_pool.abandoned_visited [" in text


def test_blocks_are_named_with_their_kind_and_size():
    # a raw PyMem block (delayed-free-reentrant's 64-byte buffer): no object, no layout
    r = _replay(("delayed-free-reentrant", "process-queue-rd-after-free", "S1:a3b19.n00z8b"))
    assert re.search(r"block#2\(MEM, 64 B\)\+0 \[", _texts(r))
    # the queue's work chunk is named by its thread's queue
    assert re.search(r"tstate#1\.mem_free_queue\.array\[0\]\.ptr \[", _texts(r))
    assert re.search(r"tstate#1\.mem_free_queue\.wr_idx \[", _texts(r))


def test_header_writes_before_object_created_are_named_by_the_object(tryincref):
    # new_reference writes ob_flags before object_created: renamed from block#1(OBJECT, 48 B)+8
    text = _texts(tryincref)
    assert "write 2 OldItem#1.ob_flags [" in text and "write 8 OldItem#1.ob_type [" in text
    assert "block#1(OBJECT" not in text


def test_names_are_deterministic(tryincref):
    again = _replay(TRYINCREF)
    assert [e.what for e in again.trace] == [e.what for e in tryincref.trace]


def test_untraced_runs_name_nothing_and_explore_the_same():
    plain = _replay(TRYINCREF, trace=False)
    assert plain.trace is None
    traced = _replay(TRYINCREF)
    assert (plain.schedule, plain.steps, plain.violation.kind) == \
        (traced.schedule, traced.steps, traced.violation.kind)


def test_steps_carry_their_c_function(tryincref):
    funcs = {e.func for e in tryincref.trace if e.thread >= 0}
    assert {"_Py_TryIncRefShared", "Py_DECREF", "_Py_qsbr_attach", "_mi_heap_init_ex"} <= funcs
    last = [e for e in tryincref.trace if e.thread >= 0][-1]
    assert last.func == "_Py_TryIncRefShared" and last.what.startswith("cas ")


def test_consecutive_steps_of_one_call_are_grouped_under_it(tryincref):
    items = timeline_items(tryincref.trace, tryincref.threads, tryincref.violation)
    i = next(i for i, it in enumerate(items)
             if isinstance(it, Head) and it.func == "_Py_TryIncRefShared")
    rows = items[i + 1:]
    assert [r.text.split()[0] for r in rows] == ["load", "cas"]     # one head for both
    assert all(r.mark for r in rows)


def test_uninteresting_runs_fold_and_full_unfolds_them(hand_off):
    folded = format_timeline(hand_off.trace, hand_off.threads, hand_off.violation)
    full = format_timeline(hand_off.trace, hand_off.threads, hand_off.violation, full=True)
    assert len(folded.splitlines()) < 45 < 500 < len(full.splitlines())
    assert re.search(r"… \d+ steps of b:receiver, c:finalize \(.*\), no access to OldItem#1",
                     folded)
    assert "thread start" in folded
    assert not re.search(r"… \d+ steps", full)                       # nothing folded
    items = timeline_items(hand_off.trace, hand_off.threads, hand_off.violation)
    hidden = sum(len(it.rows) for it in items if isinstance(it, Fold))
    shown = sum(1 for it in items if not isinstance(it, (Fold, Head)))
    assert hidden + shown == sum(1 for e in hand_off.trace if e.thread >= 0)
    # the accesses to the leaked object stay visible, marked
    assert re.search(r"\*.*fetch_add OldItem#1\.ob_ref_shared", folded)


def test_raw_keeps_the_addresses(tryincref):
    raw = format_timeline(tryincref.trace, tryincref.threads, tryincref.violation, raw=True,
                          width=80)
    words = format_timeline(tryincref.trace, tryincref.threads, tryincref.violation, width=80)
    assert re.search(r"OldItem#1\.ob_ref_shared \[0x[0-9a-f]+\]", raw)
    assert "OldItem#1.ob_ref_shared" in words
    assert not re.search(r"ob_ref_shared \[0x", words)


def test_the_violation_names_its_object(tryincref):
    text = format_timeline(tryincref.trace, tryincref.threads, tryincref.violation)
    assert re.search(r"0x[0-9a-f]+ \(OldItem#1\)", text)


def test_named_fraction_on_a_few_rows(tryincref, hand_off):
    named = total = 0
    for r in (tryincref, hand_off, _replay(("message-passing", "relaxed-message",
                                            _race_schedule()))):
        n, t = named_accesses(r.trace)
        named, total = named + n, total + t
    print(f"named accesses: {named}/{total}")
    assert total > 500 and named / total >= 0.99


def _race_schedule() -> str:
    scenario, config = get("message-passing"), Config(mutations=frozenset(["relaxed-message"]))
    for i in range(200):
        r = run(scenario, config, Random(0), execution=i)
        if r.violations:
            return r.schedule
    raise AssertionError("no race found")


def test_named_accesses_counts_bare_addresses_as_unnamed():
    class E:
        def __init__(self, what):
            self.thread, self.what = 0, what
    trace = [E("load qsbr.wr_seq [0x7f0000000000] -> 0x1"), E("load [0x7f0000000008] -> 0x1"),
             E("read 8 region#1(0x1000B)+0x8 [0x7f0000000010]")]
    assert named_accesses(trace) == (1, 3)


@pytest.mark.slow
def test_named_fraction_over_the_catalog(tmp_path, capsys):
    """Every catalog row explored (one version, a small budget) on a fresh store: every mutated
    row finds a counterexample, and over the shrunk counterexamples >= 99% of the memory
    accesses are shown with a symbolic name. Prints each row's fraction and its length in lines
    before and after folding (the figures of issue 16's note)."""
    from ftlab import cli
    from ftlab.explore.store import Store
    from ftlab.report.naming_survey import survey

    db = tmp_path / "all.db"
    cli.main(["explore", "--workers", "1", "--budget", "200", "--version", "3.14",
              "--db", str(db)])
    capsys.readouterr()
    store = Store.open(str(db), create=False)
    try:
        rows = store.rows(store.latest_campaign())
    finally:
        store.close()
    missed = [(r["scenario"], r["mutation"]) for r in rows
              if r["mutation"] and r["violation_id"] is None]
    measured = survey(str(db))
    # a row whose mutation takes more than 200 schedules (list-attach-c11's qsbr-scan-no-fence
    # is found at 69-388) gets the default budget on a store of its own
    for k, (scenario, mutation) in enumerate(missed):
        again = tmp_path / f"again-{k}.db"
        cli.main(["explore", scenario, "--mutate", mutation, "--workers", "1", "--version",
                  "3.14", "--db", str(again)])
        capsys.readouterr()
        store = Store.open(str(again), create=False)
        try:
            (row,) = store.rows(store.latest_campaign())
        finally:
            store.close()
        assert row["violation_id"] is not None, f"{scenario} / {mutation}: no counterexample"
        measured += survey(str(again))
    named, fields, total = (sum(r.named for r in measured), sum(r.fields for r in measured),
                            sum(r.total for r in measured))
    with capsys.disabled():
        print()
        for r in measured:
            print(r.line())
        print(f"named accesses over the catalog's counterexamples: {named}/{total} "
              f"= {named / total:.4f}; by field or item {fields}/{total} = {fields / total:.4f}")
    assert total > 0 and named / total >= 0.99
    assert fields / total >= 0.95, "names fell back to offsets in objects and blocks"


# a list's item array (issue 16): named by the list and the index, from list_allocate_array's
# block_layout event
LIST_RESIZE = ("list-resize", "no-free-delayed", "S1:b2a2b3ab3a3b4a3.1ic6wzh")


def test_list_items_are_named_by_the_list_and_index():
    text = _texts(_replay(LIST_RESIZE))
    assert re.search(r"list#1\.ob_item\[\d+\]", text), "no list item named by its index"
    assert "list#1.ob_item.allocated" in text
    assert not re.search(r"block#\d+\(MEM, 1048584 B\)", text), "the item array is still a block"


# a call's result on its group line (issue 16): `▸ _Py_qsbr_reserve -> 6`, a pointer by its name
def test_group_lines_show_the_calls_result(tryincref):
    full = format_timeline(tryincref.trace, tryincref.threads, tryincref.violation, full=True,
                           width=70)
    assert re.search(r"▸ _Py_qsbr_reserve -> \d+\n", full)
    assert "▸ _Py_qsbr_shared_current -> 1\n" in full
    assert "▸ _Py_SetImmortal -> PyType(OldItem)\n" in full       # a pointer, by what it starts
    assert "▸ Py_DECREF\n" in full                                  # void: no result
    # the last call never returned (the violation stopped it): no result
    assert full.count("▸ _Py_TryIncRefShared\n") == 1
    raw = format_timeline(tryincref.trace, tryincref.threads, tryincref.violation, full=True,
                          width=70, raw=True)
    assert re.search(r"▸ _Py_SetImmortal -> PyType\(OldItem\) \[0x[0-9a-f]+\]", raw)


def test_two_calls_of_one_function_are_two_groups():
    from ftlab.sim.machine import Event
    a = Event(1, 0, "load x [0x10000] -> 0x0 (rlx)", "f", 1)
    b = Event(2, 0, "load x [0x10000] -> 0x1 (rlx)", "f", 2)
    a.result, b.result = "0", "1"
    heads = [it.text for it in timeline_items([a, b], ["a:t"], full=True) if isinstance(it, Head)]
    assert heads == ["▸ f -> 0", "▸ f -> 1"]


# a dict's keys object, a tuple's items, a type's fields (issue 16): from the runtime's offsets
DICT_RESIZE = ("dict-resize-read", "dict-keys-freed-at-once", "S1:b6a38.sa2jg4")


def test_dict_keys_tuple_items_and_type_fields_are_named():
    r = _replay(DICT_RESIZE)
    text = _texts(r)
    assert re.search(r"dict#1\.ma_keys\.dk_entries\[\d\]\.me_value \[", text)
    assert re.search(r"dict#1\.ma_keys\.dk_indices\[\d\] \[", text)
    assert "dict#1.ma_keys.dk_nentries [" in text and "dict#1.ma_used [" in text
    assert re.search(r"dict#1\.ma_keys#2\.dk_", text), "the resized table is the second one"
    assert "PyType(dict).tp_flags [" in text or "PyType(dict).tp_basicsize [" in text
    n, t = named_accesses(r.trace, by_field=True)
    assert n / t >= 0.95, f"only {n}/{t} accesses named by a field"
    # the keys object is a thing of its own: the fold says which one the violation is about
    folded = format_timeline(r.trace, r.threads, r.violation)
    assert "no access to dict#1.ma_keys" in folded


def test_result_that_is_not_a_pointer_shows_as_a_number():
    r = _replay(LIST_RESIZE)
    full = format_timeline(r.trace, r.threads, r.violation, full=True, width=70)
    assert re.search(r"▸ list_capacity -> 0x[0-9a-f]+\n", full)
    assert "-> [0x" not in full
