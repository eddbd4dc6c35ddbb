"""Micro-benchmark of the AddressSpace fast path: ns per plain load/store inside a backed page.

Run: python bench/bench_memory.py   (from the repo root)
"""

from __future__ import annotations

import os
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ftlab.sim.memory import OS_PAGE_SIZE, AddressSpace, Tag  # noqa: E402

N = 200_000
REPEAT = 5


def per_call_ns(stmt: str, env: dict[str, object]) -> float:
    """Best-of-REPEAT time of one call in ns, with the empty loop's cost subtracted."""
    loop = min(timeit.repeat("pass", number=N, repeat=REPEAT))
    best = min(timeit.repeat(stmt, globals=env, number=N, repeat=REPEAT))
    return (best - loop) / N * 1e9


def main() -> None:
    mem = AddressSpace()
    base = mem.reserve(1 << 25)
    mem.commit(base, 16 * OS_PAGE_SIZE)
    addr = base + 128
    mem.store_u64(addr, 1)                      # back the page: the rest is the fast path
    mem.store_u64(base + OS_PAGE_SIZE - 4, 1)   # and the next one
    env: dict[str, object] = {
        "mem": mem, "addr": addr, "odd": addr + 3, "cross": base + OS_PAGE_SIZE - 4,
        "load_u64": mem.load_u64, "store_u64": mem.store_u64, "META": Tag.META,
        "raw_load": mem.raw_load, "raw_store": mem.raw_store,
    }
    rows = [
        ("load_u64 (aligned)", "load_u64(addr)"),
        ("store_u64 (aligned)", "store_u64(addr, 12345)"),
        ("store_u64 (aligned, tag=META)", "store_u64(addr, 12345, META)"),
        ("load_u64 (unaligned)", "load_u64(odd)"),
        ("store_u64 (unaligned)", "store_u64(odd, 12345)"),
        ("raw_load 8", "raw_load(addr, 8)"),
        ("raw_store 8", "raw_store(addr, 8, 12345, META)"),
        ("load_u64 (page-crossing, slow)", "load_u64(cross)"),
        ("store_u64 (page-crossing, slow)", "store_u64(cross, 12345)"),
    ]
    print(f"AddressSpace fast path, Python {sys.version.split()[0]}, bound methods, "
          f"best of {REPEAT} x {N}")
    for name, stmt in rows:
        print(f"  {name:34s} {per_call_ns(stmt, env):7.1f} ns")
    env["hook"] = lambda addr, width, is_write: None
    mem.on_plain_access = env["hook"]  # type: ignore[assignment]
    print(f"  {'load_u64 (with a no-op hook)':34s} {per_call_ns('load_u64(addr)', env):7.1f} ns")


def run(quick: bool = False) -> list:
    """Plain u64 load and store against the same struct access on a bare bytearray (what the
    fast path cannot beat), measured in the same run."""
    import struct

    from common import Figure

    mem = AddressSpace()
    base = mem.reserve(1 << 25)
    mem.commit(base, OS_PAGE_SIZE)
    addr = base + 128
    mem.store_u64(addr, 1)
    page = bytearray(OS_PAGE_SIZE)
    u64 = struct.Struct("<Q")
    env = {"load_u64": mem.load_u64, "store_u64": mem.store_u64, "addr": addr,
           "unpack": u64.unpack_from, "pack": u64.pack_into, "page": page}
    figures = []
    for what, model, bare in (("load_u64", "load_u64(addr)", "unpack(page, 128)[0]"),
                              ("store_u64", "store_u64(addr, 12345)", "pack(page, 128, 12345)")):
        m_ns, b_ns = per_call_ns(model, env), per_call_ns(bare, env)
        figures.append(Figure(name=f"memory: plain {what}, backed page", value=m_ns, baseline=b_ns,
                              baseline_name="struct on a bytearray", unit="ns/call",
                              lower_is_better=True))
    return figures


if __name__ == "__main__":
    main()
