"""`Include/internal/pycore_llist.h`: CPython's intrusive doubly linked list, over simulated
memory.

A `struct llist_node` is two pointer words, `next` then `prev`, embedded in the struct it links
(a page's `qsbr_node` in `mi_page_t`). A list is a sentinel node (`tstate->mimalloc.page_list`):
empty when its `next` points at itself; `llist_init` makes it so. `llist_insert_tail` links a
node before the sentinel; `llist_remove` unlinks a node from whatever list holds it and sets its
two words to NULL, which is how callers tell a linked node from an unlinked one
(`_PyMem_mi_page_clear_qsbr` tests `qsbr_node.next != NULL`).

Every access here is a plain (non-atomic) 8-byte load or store, as in C: the lists are
protected by their owner (only the owning thread touches its list) or by the stop-the-world,
and the race detector sees each access, so a thread touching a list it does not own without
either is reported as a data race on the link word.

Invariants of a list with sentinel `h`: following `next` from `h` comes back to `h`; for every
node `n` on it `n.next.prev == n` and `n.prev.next == n`; an unlinked node has both words 0.
"""

from __future__ import annotations

from typing import Iterator

from ftlab.sim.memory import AddressSpace, Tag

LLIST_NEXT = 0      # offsetof(struct llist_node, next)
LLIST_PREV = 8      # offsetof(struct llist_node, prev)
LLIST_NODE_SIZE = 16


def llist_init(mem: AddressSpace, head: int) -> None:
    """`llist_init`: an empty list (the sentinel points at itself both ways)."""
    mem.store_u64(head + LLIST_NEXT, head, Tag.META)
    mem.store_u64(head + LLIST_PREV, head, Tag.META)


def llist_empty(mem: AddressSpace, head: int) -> bool:
    """`llist_empty`."""
    return mem.load_u64(head + LLIST_NEXT) == head


def llist_insert_tail(mem: AddressSpace, head: int, node: int) -> None:
    """`llist_insert_tail`: link `node` just before the sentinel."""
    tail = mem.load_u64(head + LLIST_PREV)
    mem.store_u64(node + LLIST_PREV, tail, Tag.META)
    mem.store_u64(node + LLIST_NEXT, head, Tag.META)
    mem.store_u64(tail + LLIST_NEXT, node, Tag.META)
    mem.store_u64(head + LLIST_PREV, node, Tag.META)


def llist_remove(mem: AddressSpace, node: int) -> None:
    """`llist_remove`: unlink `node` from its list and clear both its words."""
    prev = mem.load_u64(node + LLIST_PREV)
    nxt = mem.load_u64(node + LLIST_NEXT)
    mem.store_u64(prev + LLIST_NEXT, nxt, Tag.META)
    mem.store_u64(nxt + LLIST_PREV, prev, Tag.META)
    mem.store_u64(node + LLIST_PREV, 0, Tag.META)
    mem.store_u64(node + LLIST_NEXT, 0, Tag.META)


def llist_nodes_raw(mem: AddressSpace, head: int, limit: int = 1 << 16) -> Iterator[int]:
    """The nodes of the list at `head`, first to last, read without reporting the accesses to
    the race detector (for oracles, tests and reports, which are not threads of the run).
    Raises `ValueError` on a list that does not come back to its sentinel within `limit` nodes
    or that reaches a NULL link."""
    node = mem.raw_load(head + LLIST_NEXT, 8)
    n = 0
    while node != head:
        if node == 0:
            raise ValueError(f"the list at {head:#x} reaches a NULL next link after {n} nodes")
        n += 1
        if n > limit:
            raise ValueError(f"the list at {head:#x} does not come back to its sentinel within "
                             f"{limit} nodes (a cycle that skips it)")
        yield node
        node = mem.raw_load(node + LLIST_NEXT, 8)
