"""The QSBR part of the `premature-reuse` oracle (DESIGN §5.3): a goal is reported reached only
after every thread that was attached when the goal was handed out has since passed a quiescent
state or detached.

Ghost state, kept from the runtime's QSBR events only (never from `wr_seq`, `rd_seq` or the
slots, so a wrong scan or a wrong comparison in `ftlab.runtime.qsbr` cannot hide itself):

- `attached`: the threads whose QSBR `seq` is online (`qsbr_attach` .. `qsbr_detach`);
- `last_quiescent[t]`: the event number of `t`'s latest quiescent state or detach;
- `pending[goal]`: for each thread attached when some goal with this value was handed out
  (`qsbr_advance`: `advance`, `deferred_advance` or `shared_next`), the number of the latest
  such event. The latest one is enough: a quiescent state after it is after every earlier one.

When the runtime says a goal G is reached (`qsbr_goal_reached`: `goal_reached` or `poll`
returned True, so whatever waits for G, or for any goal at or below it, may be freed now),
every pending goal at or below G (wrap-safe) must have every one of its threads quiescent or
detached since the goal was handed out; otherwise some thread may still hold a pointer it
loaded before the unlink, and the oracle raises `premature-reuse`. Checked goals are dropped:
the condition, once true, stays true.

Why a correct QSBR never trips it (the safety argument of `ftlab.runtime.qsbr`): a thread
attached when G was handed out had `seq` below G; `rd_seq >= G` needs a scan that found its
`seq` at least G or OFFLINE, i.e. a quiescent store or a detach after that moment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ftlab.runtime.observer import Observer
from ftlab.runtime.qsbr import QSBR_LEQ
from ftlab.sim.violation import ViolationError

if TYPE_CHECKING:
    from ftlab.runtime.pystate import Runtime, ThreadState


class QsbrOracle(Observer):
    """Install with `QsbrOracle.install(rt)` (or `rt.add_observer(QsbrOracle())`)."""

    def __init__(self) -> None:
        self.clock = 0
        self.attached: dict[ThreadState, None] = {}     # insertion-ordered set
        self.last_quiescent: dict[ThreadState, int] = {}
        self.pending: dict[int, dict[ThreadState, int]] = {}
        self.goals_checked = 0

    @classmethod
    def find(cls, rt: "Runtime") -> "QsbrOracle | None":
        return rt.find_observer(cls)

    @classmethod
    def install(cls, rt: "Runtime") -> "QsbrOracle":
        """Add the oracle to `rt` once; returns the installed one."""
        found = cls.find(rt)
        if found is not None:
            return found
        oracle = cls()
        rt.add_observer(oracle)
        return oracle

    # -- events --

    def qsbr_attach(self, t: "ThreadState", seq: int) -> None:
        self.clock += 1
        self.attached[t] = None

    def qsbr_detach(self, t: "ThreadState") -> None:
        self.clock += 1
        self.attached.pop(t, None)
        self.last_quiescent[t] = self.clock

    def qsbr_quiescent(self, t: "ThreadState", seq: int) -> None:
        self.clock += 1
        self.last_quiescent[t] = self.clock

    def qsbr_advance(self, t: "ThreadState", goal: int) -> None:
        self.clock += 1
        waiting = self.pending.setdefault(goal, {})
        for u in self.attached:
            waiting[u] = self.clock

    def qsbr_goal_reached(self, t: "ThreadState", goal: int) -> None:
        for g in [g for g in self.pending if QSBR_LEQ(g, goal)]:
            for u, handed_out in self.pending[g].items():
                if self.last_quiescent.get(u, 0) <= handed_out:
                    raise ViolationError(
                        "premature-reuse",
                        f"QSBR goal {goal} reported reached to {t.name}, but {u.name}, attached "
                        f"when goal {g} was handed out, has passed no quiescent state and not "
                        f"detached since: it may still hold a pointer loaded before the unlink",
                        (f"{u.name}: {'attached' if u in self.attached else 'detached'} now, "
                         f"last quiescent at QSBR event {self.last_quiescent.get(u, 0)}, goal "
                         f"{g} handed out at event {handed_out}",))
            del self.pending[g]
            self.goals_checked += 1
