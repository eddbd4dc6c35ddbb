"""Violations: what an oracle reports when an invariant of DESIGN §5 fails.

A violation stops the run. It is raised as `ViolationError` from the point where it is
detected (a memory access, a scheduler decision, an oracle hook) and caught by the machine,
which records it with the step and thread where it happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field


# Every oracle's name. Scenario `check` steps report `check`.
KINDS = (
    "segfault",
    "use-after-free",
    "resurrection",
    "premature-reuse",
    "refcount",
    "double-free",
    "invalid-free",
    "heap-integrity",
    "leak",
    "gc-count",
    "block-count",
    "ref-total",
    "type-cache",
    "dict-lookup",          # dicts: §5.9 for a dict's lock-free read
    "page-list",            # QSBR page lists (gh-145615)
    "lifecycle",            # no attach after another thread started finalizing (issue 11)
    "deadlock",
    "livelock",
    "data-race",
    "check",
    "crash",
)


@dataclass(frozen=True)
class Violation:
    kind: str
    message: str
    step: int = -1
    thread: str | None = None
    details: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        assert self.kind in KINDS, f"unknown violation kind {self.kind!r}"

    def __str__(self) -> str:
        where = f" at step {self.step}" if self.step >= 0 else ""
        who = f" in {self.thread}" if self.thread else ""
        lines = [f"{self.kind}{where}{who}: {self.message}"]
        lines.extend("    " + d for d in self.details)
        return "\n".join(lines)


class ViolationError(Exception):
    """Raised where an invariant fails; the machine records it and stops the run."""

    def __init__(self, kind: str, message: str, details: tuple[str, ...] = ()) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.details = details
