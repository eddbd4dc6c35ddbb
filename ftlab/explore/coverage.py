"""Coverage of the modelled runtime by the scenario catalog, as a measured property.

Every catalog scenario runs unmutated, for each `Config.version`, under a small fixed set of
schedules (Random seeds 0..n-1 and PCT seeds 0..max(1, n // 4)-1, so the measurement is
deterministic; n = 20 by default) with
coverage.py measuring line and branch coverage of `ftlab/runtime/`. Beside it, a profile hook
records, for every runtime function, whether it ever executed while at least two model threads
were alive.

Definitions (the report prints them):

- A runtime function is *reached* when coverage.py records at least one executed line in its
  body (nested functions count separately).
- A function is *multi-threaded reached* when it executes — a call, or the resumption of a
  coroutine — while the run's `Machine` has at least two threads that have been started and
  have not finished (`VThread.state != DONE`). Scenario setup (no thread started yet) and
  finalization (all threads done; one finalizing thread) are single-threaded by this definition,
  as they are in CPython.
- A function is *safety-relevant* when its name says it frees, reuses, merges, advances or polls
  QSBR, abandons, reclaims, collects or processes memory (`SAFETY_RE`): a mistake in one of those is a memory-safety
  bug, so each must be reached by a multi-threaded scenario.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ftlab.config import VERSIONS, Config
from ftlab.scenarios import Scenario
from ftlab.sim.strategies import PCT, Random

RUNTIME_DIR = Path(__file__).resolve().parent.parent / "runtime"
MACHINE_FILE = str(Path(__file__).resolve().parent.parent / "sim" / "machine.py")

SAFETY_RE = re.compile(
    r"free|reuse|merge|advance|poll|quiescent|abandon|reclaim|retire|collect|process|delayed|"
    r"decommit|dealloc|reset|goal", re.IGNORECASE)

# Not measured: the Observer interface's no-op defaults (the oracles' overrides in ftlab/check/
# are what runs; the runtime only calls them).
EXCLUDED = ("observer.py",)

DEFAULT_SCHEDULES = 20  # Random schedules per scenario and version (and a quarter as many PCT)


def pct_schedules(schedules: int) -> int:
    """PCT schedules beside `schedules` Random ones: a quarter, at least one."""
    return max(1, schedules // 4)


@dataclass(frozen=True, order=True)
class Function:
    path: str           # relative to the runtime package, e.g. "mimalloc/segment.py"
    qualname: str
    first: int          # first line of the def (its first decorator, as co_firstlineno)
    body: tuple[int, ...]   # the lines of its own body (statements of nested defs excluded)

    @property
    def name(self) -> str:
        return self.qualname.rsplit(".", 1)[-1]

    @property
    def safety(self) -> bool:
        return bool(SAFETY_RE.search(self.name))

    def __str__(self) -> str:
        return f"{self.path}:{self.qualname}"


@dataclass
class CoverageReport:
    functions: list[Function]
    reached: set[Function] = field(default_factory=set)
    multi: set[Function] = field(default_factory=set)
    lines_total: int = 0
    lines_run: int = 0
    branches_total: int = 0
    branches_run: int = 0
    runs: int = 0

    @property
    def unreached(self) -> list[Function]:
        return sorted(f for f in self.functions if f not in self.reached)

    @property
    def single_only(self) -> list[Function]:
        return sorted(f for f in self.functions if f in self.reached and f not in self.multi)

    def format(self, *, all_functions: bool = False) -> str:
        out = [
            f"runs: {self.runs}   lines: {self.lines_run}/{self.lines_total}   "
            f"branches: {self.branches_run}/{self.branches_total}   "
            f"functions: {len(self.reached)}/{len(self.functions)} reached, "
            f"{len(self.multi)} multi-threaded",
            "reached: at least one line of the body ran; multi-threaded: it ran (call or coroutine "
            "resume) while >= 2 model threads were started and not finished.",
            "'!' marks a safety-relevant function (frees, reuses, merges, advances or polls QSBR, "
            "abandons, reclaims, collects, processes).",
        ]
        for title, fs in (("not reached by any scenario", self.unreached),
                          ("reached only single-threaded", self.single_only)):
            shown = fs if all_functions else [f for f in fs if f.safety]
            what = "" if all_functions else f" (safety-relevant; {len(fs)} in all, --all lists them)"
            out.append(f"\n{title}: {len(shown)}{what}")
            out.extend(f"  {'!' if f.safety else ' '} {f}" for f in shown)
        return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Functions of the runtime

def runtime_functions(root: Path = RUNTIME_DIR) -> list[Function]:
    found: list[Function] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel in EXCLUDED:
            continue
        tree = ast.parse(path.read_text(), str(path))

        def visit(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    qual = f"{prefix}{child.name}"
                    first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                    found.append(Function(rel, qual, first, _own_lines(child)))
                    visit(child, qual + ".<locals>.")
                elif isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}{child.name}.")
                else:
                    visit(child, prefix)

        visit(tree, "")
    return found


def _own_lines(fn: ast.AST) -> tuple[int, ...]:
    lines: set[int] = set()

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                continue
            if isinstance(child, ast.stmt):
                lines.add(child.lineno)
            walk(child)

    walk(fn)
    return tuple(sorted(lines))


# ---------------------------------------------------------------------------------------------
# Measuring

class _ThreadCounter:
    """A profile hook: remembers the current run's Machine (caught as its __init__ is called)
    and, for each runtime code object that starts or resumes, whether >= 2 threads were alive."""

    def __init__(self) -> None:
        self.machine = None
        self.multi: set[tuple[str, int]] = set()
        self.prefix = str(RUNTIME_DIR) + "/"

    def __call__(self, frame, event, arg) -> None:
        if event != "call":
            return
        code = frame.f_code
        fn = code.co_filename
        if fn == MACHINE_FILE and code.co_qualname == "Machine.__init__":
            self.machine = frame.f_locals.get("self")
            return
        if not fn.startswith(self.prefix) or self.machine is None:
            return
        key = (fn, code.co_firstlineno)
        if key in self.multi:
            return
        alive = 0
        for t in self.machine.threads:
            if t.state != 2:                 # machine.DONE
                alive += 1
        if alive >= 2:
            self.multi.add(key)


def measure(scenarios: Iterable[Scenario], *, schedules: int = DEFAULT_SCHEDULES,
            versions: Iterable[str] = VERSIONS) -> CoverageReport:
    import coverage

    from ftlab.explore.execute import execute
    from ftlab.sim.machine import DONE

    assert DONE == 2, "the profile hook's literal DONE must match ftlab.sim.machine.DONE"
    scenarios = list(scenarios)
    versions = list(versions)
    cov = coverage.Coverage(branch=True, data_file=None, source=[str(RUNTIME_DIR)],
                            config_file=False)
    counter = _ThreadCounter()
    runs = 0
    cov.start()
    sys.setprofile(counter)
    try:
        for version in versions:
            for s in scenarios:
                if s.versions and version not in s.versions:
                    continue
                config = Config(version=version)
                for strategy in [Random(seed=i) for i in range(schedules)] + \
                        [PCT(seed=i, steps=s.pct_steps) for i in range(pct_schedules(schedules))]:
                    execute(s, config, strategy.execution(0))
                    runs += 1
    finally:
        sys.setprofile(None)
        cov.stop()

    data = cov.get_data()
    functions = runtime_functions()
    report = CoverageReport(functions, runs=runs)
    executed: dict[str, set[int]] = {}
    for f in data.measured_files():
        p = Path(f).resolve()
        if RUNTIME_DIR in p.parents:
            executed[p.relative_to(RUNTIME_DIR).as_posix()] = set(data.lines(f) or ())
    for fn in functions:
        lines = executed.get(fn.path, set())
        if any(n in lines for n in fn.body):
            report.reached.add(fn)
        if (str(RUNTIME_DIR / fn.path), fn.first) in counter.multi:
            report.multi.add(fn)
    for f in data.measured_files():
        analysis = cov._analyze(f)
        nums = analysis.numbers
        report.lines_total += nums.n_statements
        report.lines_run += nums.n_statements - nums.n_missing
        report.branches_total += nums.n_branches
        report.branches_run += nums.n_branches - nums.n_missing_branches
    return report
