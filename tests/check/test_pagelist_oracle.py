"""The `page-list` oracle (ftlab.check.pagelist): hand-made broken list states and the two
gh-145615 mutations make it fire; faithful runs that defer pages keep it quiet."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ftlab import Config
from ftlab.check.pagelist import PageListOracle
from ftlab.explore.execute import run
from ftlab.runtime.mimalloc.page_queue import IN_FULL
from ftlab.scenarios import get
from ftlab.sim import Random
from ftlab.sim.violation import ViolationError


class _Ns(SimpleNamespace):
    """A namespace hashed by identity, as the runtime's `Page` objects are."""
    __hash__ = object.__hash__
    __eq__ = object.__eq__


def _thread(label: str, pages=()):
    """A thread state with one heap whose single queue holds `pages` (linked by `next`)."""
    t = SimpleNamespace(vt=SimpleNamespace(label=label))
    for a, b in zip(pages, pages[1:]):
        a.next = b
    if pages:
        pages[-1].next = None
    heap = SimpleNamespace(deleted=False, pages=[SimpleNamespace(first=pages[0] if pages else None)],
                           tld=SimpleNamespace(tstate=t))
    for p in pages:
        p.heap = heap
    t.mimalloc = SimpleNamespace(heaps=[heap])
    return t


def _page(goal: int = 5, used: int = 0, flags: int = 0):
    return _Ns(qsbr_goal=goal, used=used, flags=flags, heap=None, next=None)


def _oracle(version: str = "main") -> PageListOracle:
    return PageListOracle(SimpleNamespace(mimalloc=None, config=Config(version=version)))


def test_quiet_on_a_consistent_list():
    o = _oracle()
    p, q = _page(), _page(goal=0, used=1)
    t = _thread("a", [p, q])
    o.qsbr_page_linked(t, p)
    o.sweep(t)
    o.qsbr_page_unlinked(p)
    p.qsbr_goal = 0
    o.sweep(t)


def test_fires_on_a_page_linked_twice():
    o = _oracle()
    p = _page()
    t = _thread("a", [p])
    o.qsbr_page_linked(t, p)
    with pytest.raises(ViolationError, match="while it is on a's"):
        o.qsbr_page_linked(t, p)


def test_fires_on_a_page_linked_without_a_goal():
    o = _oracle()
    p = _page(goal=0)
    with pytest.raises(ViolationError, match="without a goal"):
        o.qsbr_page_linked(_thread("a", [p]), p)


def test_fires_on_an_unlink_of_a_page_on_no_list():
    with pytest.raises(ViolationError, match="not on"):
        _oracle().qsbr_page_unlinked(_page())


@pytest.mark.parametrize("version", ["main", "3.14"])
def test_a_foreign_list_fires_under_main_only(version):
    o = _oracle(version)
    p = _page()
    _thread("b", [p])
    a = _thread("a")
    if version == "main":
        with pytest.raises(ViolationError, match="not its owner's") as e:
            o.qsbr_page_linked(a, p)
        assert e.value.kind == "page-list"
    else:
        o.qsbr_page_linked(a, p)         # the pre-gh-145615 behaviour


def test_a_page_deferred_in_the_full_queue_fires_under_main():
    o = _oracle()
    p = _page(flags=IN_FULL)
    with pytest.raises(ViolationError, match="stranded"):
        o.qsbr_page_linked(_thread("a", [p]), p)


def test_sweep_fires_on_an_empty_page_with_a_goal_on_no_list():
    o = _oracle()
    p = _page()
    with pytest.raises(ViolationError, match="on no page list"):
        o.sweep(_thread("a", [p]))


def test_sweep_fires_on_a_listed_page_that_lost_its_goal():
    o = _oracle()
    p = _page()
    t = _thread("a", [p])
    o.qsbr_page_linked(t, p)
    p.qsbr_goal = 0                     # cleared without leaving the list
    with pytest.raises(ViolationError, match="without a goal"):
        o.sweep(t)


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


def test_sweep_fires_on_a_listed_page_left_in_the_full_queue_under_main():
    from ftlab.runtime.mimalloc.types import MI_BIN_FULL
    o = _oracle()
    p = _page()
    t = _thread("a", [p])
    o.qsbr_page_linked(t, p)
    heap = t.mimalloc.heaps[0]
    heap.pages = [SimpleNamespace(first=None) for _ in range(MI_BIN_FULL)] + [heap.pages[0]]
    with pytest.raises(ViolationError, match="stranded"):
        o.sweep(t)
