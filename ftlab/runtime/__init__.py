"""The modelled runtime: one module per CPython or mimalloc source file (DESIGN §1)."""

from ftlab.runtime.pystate import Runtime, ThreadState

__all__ = ["Runtime", "ThreadState"]
