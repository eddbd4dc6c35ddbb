"""The `page-list` oracle (ftlab.check.pagelist): hand-made broken lists in simulated memory and
the two gh-145615 mutations make it fire; faithful runs that defer pages keep it quiet."""

from __future__ import annotations

import pytest

from ftlab import Config
from ftlab.check.pagelist import PageListOracle
from ftlab.explore.execute import run
from ftlab.runtime.llist import LLIST_NEXT, LLIST_PREV
from ftlab.runtime.mimalloc.segment import segment_page_of
from ftlab.runtime.mimalloc.types import HeapTag
from ftlab.runtime.pystate import Runtime
from ftlab.scenarios import get
from ftlab.sim import Random
from ftlab.sim.memory import Tag
from ftlab.sim.violation import ViolationError


def _with_a_waiting_page(breakage, version: str = "main"):
    """Run one thread that defers an OBJECT page (it waits on the thread's list), then applies
    `breakage(t, page, mem)` to the list in memory and returns what the oracle says."""
    rt = Runtime(Config(version=version))
    oracle = PageListOracle(rt)         # not an observer: called by hand below
    out = {}

    async def main(t):
        heap = t.mimalloc.heaps[HeapTag.OBJECT]
        p = await heap.malloc(48)
        await t.free(p)
        await heap.collect(False)       # the only page of its size: retired, then deferred
        seg = rt.mimalloc.segments[p & ~((32 << 20) - 1)]
        page = segment_page_of(seg, p)
        out["before"] = oracle.check_lists()
        breakage(t, page, rt.mem)
        try:
            oracle.sweep(t)
        except ViolationError as e:
            out["error"] = e
        out["t"], out["page"] = t, page

    rt.run_main(main)
    assert out["before"] == {out["page"]: out["t"]}, "the deferred page waits on its owner's list"
    return out.get("error")


def test_quiet_on_a_consistent_list():
    assert _with_a_waiting_page(lambda t, page, mem: None) is None


def test_fires_on_asymmetric_links():
    def breakage(t, page, mem):
        mem.raw_store(page.qsbr_node_addr + LLIST_PREV, 8, page.qsbr_node_addr, Tag.META)
    e = _with_a_waiting_page(breakage)
    assert e is not None and e.kind == "page-list" and "qsbr_node.prev" in e.message
    assert "a:main's QSBR page list" in e.message


def test_fires_on_a_list_that_does_not_come_back_to_its_sentinel():
    def breakage(t, page, mem):
        mem.raw_store(page.qsbr_node_addr + LLIST_NEXT, 8, 0, Tag.META)
    e = _with_a_waiting_page(breakage)
    assert e is not None and "NULL next link" in e.message


def test_fires_on_a_listed_page_that_lost_its_goal():
    def breakage(t, page, mem):
        page.qsbr_goal = 0              # cleared without leaving the list
    e = _with_a_waiting_page(breakage)
    assert e is not None and "on a:main's QSBR page list without a goal" in e.message


def test_fires_on_an_all_free_page_with_a_goal_on_no_list():
    def breakage(t, page, mem):     # unlinked by hand, the goal kept
        head = t.mimalloc.page_list
        for a, v in ((head, head), (head + 8, head), (page.qsbr_node_addr, 0),
                     (page.qsbr_node_addr + 8, 0)):
            mem.raw_store(a, 8, v, Tag.META)
    e = _with_a_waiting_page(breakage)
    assert e is not None and "on no page list" in e.message and "a:main's heap" in e.message


@pytest.mark.parametrize("mutation,match", [
    ("qsbr-page-list-current-thread", "not its owner's"),
    ("qsbr-page-stranded", "stranded"),
])
def test_the_mutations_fire_it(mutation, match):
    r = run(get("qsbr-page-foreign"), Config(mutations=frozenset({mutation})))
    assert r.violation is not None and r.violation.kind == "page-list", r.violation
    assert match in r.violation.message


@pytest.mark.parametrize("name,version", [
    ("qsbr-page-foreign", "main"), ("gc-reader-page", "main"), ("gc-reader-page", "3.14"),
    ("gc-thread-exit", "main"), ("mimalloc-stress", "main"),
])
def test_quiet_on_faithful_runs(name, version):
    for n in range(4):
        r = run(get(name), Config(version=version), Random(11), execution=n)
        assert r.ok, f"{name} {version} #{n}: {r.violation}"


def test_the_fixed_page_waits_on_its_owners_list_out_of_the_full_queue():
    from ftlab.runtime.pystate import Runtime  # noqa: F401  (the run builds one)
    r = run(get("qsbr-page-foreign"), Config(version="main"))
    assert r.ok, r.violation
    assert r.stats["qsbr_pages_deferred"] >= 1




def test_a_foreign_list_is_the_old_behaviour_and_quiet_under_3_14():
    r = run(get("qsbr-page-foreign"), Config(version="3.14"))
    assert r.ok, r.violation
    assert r.stats["qsbr_pages_deferred"] >= 1


def test_fires_on_a_reused_page_left_first_on_the_list_after_a_walk():
    def breakage(t, page, mem):
        page.used += 1                  # as if allocated from again and left there by the walk
        oracle = PageListOracle(t.rt)
        try:
            oracle.qsbr_page_list_walked(t)
        finally:
            page.used -= 1
    e = _with_a_waiting_page(lambda t, page, mem: None)
    assert e is None
    with pytest.raises(ViolationError, match=r"still first on a:main's QSBR page list after"):
        _with_a_waiting_page(breakage)


def test_the_walk_drops_a_listed_page_allocated_from_again():
    r = run(get("qsbr-page-small-reuse"), Config(version="main"), Random(3), execution=0)
    assert r.ok, r.violation
    assert r.stats["qsbr_pages_dropped_reused"] >= 1, "the walk meets the reused listed page"


def test_fires_on_a_goal_in_memory_that_differs_from_the_mirror():
    def breakage(t, page, mem):
        mem.raw_store(page.qsbr_node_addr + 16, 8, page.qsbr_goal + 2, Tag.META)
    e = _with_a_waiting_page(breakage)
    assert e is not None and "qsbr_goal in memory" in e.message
