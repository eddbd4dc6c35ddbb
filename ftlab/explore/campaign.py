"""Campaigns: the catalog (or part of it) explored row by row, in parallel, into the store.

A campaign is a list of rows, one per (version, scenario, mutation, memory model): for each
`Config.version` (every one in `VERSIONS` unless narrowed), every scenario unmutated, which must
stay clean, and every scenario under each mutation it exposes, which must be found; each under
the scenario's own memory model, or under SC and C11 side by side (`row_models`). Each
row has a portfolio of strategies and a budget; `portfolio.plan_batches` lays its batches out
in a canonical order, and everything a row reports is counted in that order (see
`portfolio.py`), so a campaign gives the same answer serially, on local processes or on a Dask
cluster.

The loop below keeps the backend busy with tasks (groups of batches from several rows, sized
to take about `TASK_SECONDS`), commits every batch result as it arrives, and closes a row when
every batch before its first decisive execution is in (or, clean, when its budget is spent).
A row with a decisive violation is then shrunk (as a task of its own) before it is done.

Resuming: a campaign is identified by the hash of its parameters, which hold each row's
version (and the campaign's `versions`), so a campaign of other versions never resumes it. `explore` with the same
parameters as an unfinished campaign in the store continues it; `resume=ID` continues that
campaign with its stored parameters. Committed batches are not run again, the DFS chain
continues from the frontier its last committed batch left, and a row that was being shrunk is
shrunk again.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ftlab.config import MUTATIONS, VERSIONS, Config
from ftlab.explore.backends import make_backend
from ftlab.explore.portfolio import (
    DEFAULT_BATCH, DEFAULT_BUDGET, ExploreError, PlannedBatch, StrategySpec, default_portfolio,
    parse_spec, plan_batches,
)
from ftlab.explore.shrink import DEFAULT_MAX_RUNS
from ftlab.explore.store import Store
from ftlab.explore.worker import BatchResult, BatchSpec, ShrinkSpec

TASK_SECONDS = 0.2          # aim for tasks of about this long (sizes them; never changes results)
MIN_TASK_SECONDS = 0.02
FIRST_GUESS = 0.002         # seconds per schedule before a row has been measured
MAX_TASK_ITEMS = 64


# ---------------------------------------------------------------------------------------------
# What a campaign returns

@dataclass
class RowResult:
    ord: int
    scenario: str
    mutation: str                  # "" when unmutated
    expected: list[str]            # kinds that count as finding the mutation
    strategies: list[str]
    budget: int
    status: str                    # pending | shrinking | done
    verdict: str
    ok: bool | None
    schedules: int
    first_detection: int | None
    detected_by: str | None
    exhausted: bool
    seconds: float
    violation: dict | None         # the decisive violation, with its shrunk schedule
    counts: list[dict] = field(default_factory=list)
    version: str = ""              # the row's Config.version
    memory_model: str = "sc"       # the row's Config.memory_model (ftlab/sim/c11.py)
    needs_c11: bool = False        # an SC row of a mutation only C11 exposes: must stay clean

    @property
    def mutated(self) -> bool:
        return bool(self.mutation)

    @property
    def known_gap(self) -> bool:
        """An unmutated row that must find a gap CPython has (Scenario.known_gap)."""
        return not self.mutation and bool(self.expected)


@dataclass
class CampaignResult:
    id: int | None
    db: str
    params: dict
    rows: list[RowResult]
    status: str                    # done | interrupted | running
    wall_seconds: float
    resumed: bool = False

    @property
    def interrupted(self) -> bool:
        return self.status != "done"

    @property
    def ok(self) -> bool:
        """Every unmutated row clean and every mutation found."""
        return self.status == "done" and all(r.ok for r in self.rows)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 0 if self.ok else 1

    def row(self, scenario: str, mutation: str = "", version: str | None = None,
            memory_model: str | None = None) -> RowResult:
        """The row of (scenario, mutation) under `version` and `memory_model` (None: its
        first)."""
        for r in self.rows:
            if (r.scenario == scenario and r.mutation == mutation
                    and (version is None or r.version == version)
                    and (memory_model is None or r.memory_model == memory_model)):
                return r
        raise KeyError((scenario, mutation, version, memory_model))

    def summary(self) -> str:
        done = [r for r in self.rows if r.status == "done"]
        clean = sum(1 for r in done if (not r.mutated or r.needs_c11) and not r.known_gap and r.ok)
        found = sum(1 for r in done if r.mutated and not r.needs_c11 and r.ok)
        gaps = sum(1 for r in done if r.known_gap and r.ok)
        bad = [r for r in done if not r.ok]
        parts = [f"{len(self.rows)} rows", f"{clean} clean", f"{found} found"]
        if gaps:
            parts.append(f"{gaps} known gap{'s' if gaps > 1 else ''} found")
        if bad:
            parts.append(f"{len(bad)} failed")
        if len(done) < len(self.rows):
            parts.append(f"{len(self.rows) - len(done)} unfinished")
        return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# Rows

def select_rows(catalog: Mapping[str, Any], scenario: str | Sequence[str] | None = None,
                mutations: Sequence[str] | None = None) -> list[tuple[Any, str]]:
    """(scenario, mutation) pairs in catalog order; mutation "" is the unmutated row.
    `mutations` narrows to those mutations ("none" selects the unmutated rows)."""
    if scenario is None or scenario == "all":
        names = list(catalog)
    else:
        names = [scenario] if isinstance(scenario, str) else list(scenario)
        for n in names:
            if n not in catalog:
                raise ExploreError(f"unknown scenario {n!r} (known: {', '.join(sorted(catalog))})")
    wanted: list[str] | None = None
    if mutations:
        wanted = []
        for m in mutations:
            if m != "none" and m not in MUTATIONS:
                raise ExploreError(f"unknown mutation {m!r} (see `ftlab list`)")
            wanted.append("" if m == "none" else m)
    pairs = []
    for n in names:
        s = catalog[n]
        for m in [""] + list(s.mutations):
            if wanted is None or m in wanted:
                pairs.append((s, m))
    if not pairs:
        what = ", ".join(mutations or ())
        where = "the catalog" if scenario in (None, "all") else f"scenario(s) {', '.join(names)}"
        raise ExploreError(f"no row to explore: {where} exposes none of: {what}")
    return pairs


# c11 memory model (issue 14): the models a row is explored under. Without `--memory-model`,
# each scenario's own (ftlab.scenarios.own_memory_model): the catalog's rows and its time, with
# c11 rows only for the scenarios that need them. `--memory-model c11` puts each row of the
# selected scenarios (by default those whose own model is c11) under SC and under C11, side by
# side; `--memory-model sc` runs every selected row under SC. A mutation of a c11 scenario
# needs C11 atomics to show: its SC row must stay clean ("not found under SC" is the claim).
MEMORY_MODELS = ("sc", "c11")


def row_models(scenario, memory_model: str | None) -> list[str]:
    from ftlab.scenarios import own_memory_model

    if memory_model is None:
        return [own_memory_model(scenario)]
    return ["sc", "c11"] if memory_model == "c11" else ["sc"]


def needs_c11(scenario, mutation: str, model: str) -> bool:
    """An SC row of a mutation that only C11 atomics expose: it must stay clean."""
    from ftlab.scenarios import own_memory_model

    return bool(mutation) and model == "sc" and own_memory_model(scenario) == "c11"


def row_model(row_params: dict) -> str:
    """A row's memory model; campaigns stored before rows had one ran each scenario under its
    own model (the scenario's config), which is what it still is unless the catalog changed."""
    if row_params.get("memory_model"):
        return row_params["memory_model"]
    from ftlab.scenarios import catalog, own_memory_model

    s = catalog().get(row_params["scenario"])
    return own_memory_model(s) if s is not None else "sc"


def violation_target(v, get: Callable[[str], Any] | None = None) -> tuple[Any, Config]:
    """The scenario and config a stored violation ran under: its version, its mutations and its
    memory model (a violation stored before the column: the scenario's own model, the only one
    rows had then). Replay, shrink and the HTML report all run it this way: a c11
    counterexample replayed under SC would read only the newest stores."""
    from ftlab.scenarios import get as get_scenario, in_memory_model, own_memory_model

    scenario = (get or get_scenario)(v["scenario"])
    keys = v.keys() if hasattr(v, "keys") else ()
    model = (v["memory_model"] if "memory_model" in keys else None) or own_memory_model(scenario)
    mutations = v["mutations"]
    mutations = json.loads(mutations) if isinstance(mutations, str) else mutations
    return (in_memory_model(scenario, model),
            Config(version=v["version"], mutations=frozenset(mutations), memory_model=model))


def pct_steps(scenario, mutation: str, version: str) -> int:
    """PCT's k, the number of decisions a run makes: the scenario's estimate, or more if two
    probe runs (one random, one without preemption) make more decisions. Like Shuttle, which
    learns k from a first run: a stale estimate puts every change point in the first few
    decisions, and PCT then misses bugs of depth > 1. Deterministic, so part of the params."""
    from ftlab.explore.execute import execute
    from ftlab.explore.shrink import ContinueChooser
    from ftlab.sim.strategies import Random

    config = Config(version=version, mutations=frozenset([mutation] if mutation else []))
    k = scenario.pct_steps
    for chooser in (Random(0).execution(0), ContinueChooser(())):
        try:
            k = max(k, execute(scenario, config, chooser).decisions)
        except Exception:  # a crash here shows up as a crash when the row runs
            pass
    return k


def _row_params(scenario, mutation: str, strategies: Sequence[StrategySpec] | None,
                budget: int, version: str, model: str | None = None) -> dict:
    from ftlab.scenarios import in_memory_model, own_memory_model

    model = model or own_memory_model(scenario)     # by default the scenario's own
    specs = list(strategies) if strategies else default_portfolio(scenario)
    if model == "c11":
        if strategies and any(s.kind == "dpor" for s in specs):
            raise ExploreError("dpor runs under the sc memory model only (its footprints "
                               "assume every load reads the newest store)")
        specs = [s for s in specs if s.kind != "dpor"]     # the default portfolio's
    run_as = in_memory_model(scenario, model)
    k = pct_steps(run_as, mutation, version) if any(s.kind == "pct" for s in specs) else scenario.pct_steps
    sc_only = needs_c11(scenario, mutation, model)
    p = {"scenario": scenario.name, "mutation": mutation, "version": version,
         "memory_model": model,
         "expected": ([] if sc_only else list(scenario.mutations[mutation]) if mutation
                      else list(getattr(scenario, "known_gap", ()))),
         "strategies": [str(s) for s in specs], "pct_steps": k, "budget": budget}
    if sc_only:
        p["needs_c11"] = True       # found under C11 only: this SC row must stay clean
    if getattr(scenario, "dpor", False):
        p["dpor_checked"] = True    # its DPOR footprints were checked against sampled runs
    return p


def plan_rows(scenarios_map: Mapping[str, Any], scenario: str | Sequence[str] | None,
              mutations: Sequence[str] | None, specs: Sequence[StrategySpec] | None,
              budget: int, versions: Sequence[str], memory_model: str | None) -> list[dict]:
    """The parameters of a new campaign's rows, in table order: versions, then scenarios and
    mutations in catalog order, then memory models (`row_models`), so that a row's SC and C11
    runs are adjacent. `--memory-model c11` without scenarios selects those whose own model is
    c11: the rows that need it, not the whole catalog twice."""
    selected = scenarios_map
    if memory_model == "c11" and scenario in (None, "all"):
        from ftlab.scenarios import own_memory_model

        selected = {n: s for n, s in scenarios_map.items() if own_memory_model(s) == "c11"}
    pairs = select_rows(selected, scenario, mutations)
    return [_row_params(s, m, specs, budget, v, model)
            for v in versions for s, m in pairs if not s.versions or v in s.versions
            for model in row_models(s, memory_model)]


def campaign_key(params: dict) -> str:
    from ftlab import __version__

    text = json.dumps({"params": params, "ftlab": __version__}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def row_version(row_params: dict, params: dict) -> str:
    """A row's version; campaigns stored before rows had one ran every row at `version`."""
    return row_params.get("version") or params.get("version", "3.14")


def campaign_versions(params: dict) -> list[str]:
    return list(params.get("versions") or [params.get("version", "3.14")])


class _Row:
    """A row while its campaign runs."""

    def __init__(self, ord_: int, p: dict, row_id: int) -> None:
        self.ord = ord_
        self.p = p
        self.version: str = p["version"]
        self.model: str = row_model(p)
        self.id = row_id
        self.specs = [parse_spec(s) for s in p["strategies"]]
        self.plan: list[PlannedBatch] = plan_batches(len(self.specs), p["budget"], p["batch"])
        self.limit = len(self.plan)          # batches at or past this are not counted
        self.results: dict[int, BatchResult] = {}
        self.inflight: set[int] = set()
        self.void: set[int] = set()          # DFS batches after the chain exhausted
        self.unscheduled: list[int] = list(range(len(self.plan)))
        # seq -> the previous batch of the same chained strategy
        self.chain_prev: dict[int, int] = {}
        last: dict[int, int] = {}
        for b in self.plan:
            if self.specs[b.strategy].chained:
                if b.strategy in last:
                    self.chain_prev[b.seq] = last[b.strategy]
                last[b.strategy] = b.seq
        self.status = "pending"
        self.final = 0                       # schedules of a row loaded as explored
        self.seconds = 0.0
        self.shrink_inflight = False

    @property
    def mutations(self) -> tuple[str, ...]:
        return (self.p["mutation"],) if self.p["mutation"] else ()

    @property
    def decisive_kinds(self) -> tuple[str, ...] | None:
        # an unmutated row with expected kinds is a known gap: it must find one of them
        # an SC row of a mutation that needs c11 must stay clean: every violation counts
        if self.p.get("needs_c11"):
            return None
        return tuple(self.p["expected"]) if self.p["mutation"] or self.p["expected"] else None

    def sec_per_schedule(self, fallback: float) -> float:
        ran = sum(b.ran for b in self.results.values())
        if ran >= 5:
            return max(1e-6, sum(b.seconds for b in self.results.values()) / ran)
        return fallback

    def accept(self, b: BatchResult) -> bool:
        """Take a batch result; False when it is past the row's end and not counted."""
        self.inflight.discard(b.seq)
        if self.status != "pending" or b.seq >= self.limit:
            return False
        self.results[b.seq] = b
        if b.decisive is not None:
            self.limit = min(self.limit, b.seq + 1)
        strategy = self.plan[b.seq].strategy
        spec = self.specs[strategy]
        if spec.chained and b.exhausted:
            for later in self.plan[b.seq + 1:]:
                if later.strategy == strategy:
                    self.void.add(later.seq)
            if spec.kind == "dpor" and self.p.get("dpor_checked") and not any(
                    r.violations or r.decisive is not None for s, r in self.results.items()
                    if self.plan[s].strategy == strategy):
                # every Mazurkiewicz trace ran clean: no other schedule can find anything, so
                # the row ends here, in canonical order like a detection
                self.limit = min(self.limit, b.seq + 1)
        return True

    def unscheduled_schedules(self) -> int:
        return sum(self.plan[s].count for s in range(self.limit)
                   if s not in self.results and s not in self.void and s not in self.inflight)

    def explored(self) -> bool:
        return all(s in self.results or s in self.void for s in range(self.limit))

    def done_schedules(self) -> int:
        return sum(b.ran for s, b in self.results.items() if s < self.limit)

    def ready(self, in_task: set[int]) -> PlannedBatch | None:
        """The first unscheduled batch that can run now (a chained batch only after the one
        before it is in, or in the same task)."""
        for seq in self.unscheduled:
            if seq >= self.limit:
                return None
            if seq in self.results or seq in self.void or seq in self.inflight:
                continue
            prev = self.chain_prev.get(seq)
            if prev is not None and prev not in self.results and prev not in in_task:
                if prev in self.void:
                    self.void.add(seq)
                continue
            return self.plan[seq]
        return None


# ---------------------------------------------------------------------------------------------
# The campaign

class Campaign:
    def __init__(self, store: Store, cid: int, params: dict, *, backend, progress=None,
                 on_commit: Callable[[int], None] | None = None) -> None:
        self.store = store
        self.cid = cid
        self.params = params
        self.backend = backend
        self.progress = progress
        self.on_commit = on_commit
        self.commits = 0
        self.worker_seconds = 0.0   # time workers spent on tasks (for the bench's utilisation)
        self.rows: list[_Row] = []
        for r in store.rows(cid):
            rp = params["rows"][r["ord"]]
            p = dict(rp, batch=params["batch"], version=row_version(rp, params))
            row = _Row(r["ord"], p, r["id"])
            row.status = r["status"]
            row.seconds = r["seconds"] or 0.0
            row.final = r["schedules"] or 0
            if row.status == "pending":
                for b in store.batches(r["id"]):
                    row.accept(_stored_batch(b))
            self.rows.append(row)
        self._pending: dict[Any, tuple] = {}

    # -- tasks --------------------------------------------------------------------------------

    def _batch_spec(self, row: _Row, b: PlannedBatch, chain: bool) -> BatchSpec:
        spec = row.specs[b.strategy]
        state = None
        if spec.chained and not chain:
            prev = row.chain_prev.get(b.seq)
            state = row.results[prev].dfs_state if prev is not None else None
        return BatchSpec(row=row.ord, seq=b.seq, scenario=row.p["scenario"],
                         mutations=row.mutations, version=row.version,
                         memory_model=row.model, strategy=str(spec), seed=self.params["seed"],
                         pct_steps=row.p["pct_steps"], start=b.start, count=b.count,
                         decisive=row.decisive_kinds, dfs_state=state, chain=chain)

    def _next_task(self) -> tuple | None:
        """Batches for one task: one from each row per pass, the rows with the most work left
        first (so the long rows do not finish last, alone), until the task is estimated to take
        `TASK_SECONDS` — less near the end, so that the last tasks spread over every worker."""
        fallback = self._fallback()
        left = {r.ord: r.sec_per_schedule(fallback) * r.unscheduled_schedules()
                for r in self.rows if r.status == "pending"}
        if not left:
            return None
        active = sorted((r for r in self.rows if r.ord in left), key=lambda r: (-left[r.ord], r.ord))
        target = min(TASK_SECONDS, max(MIN_TASK_SECONDS,
                                       sum(left.values()) / (4 * self.backend.workers)))
        items: list[BatchSpec] = []
        in_task: dict[int, set[int]] = {}
        est = 0.0
        while est < target and len(items) < MAX_TASK_ITEMS:
            added = False
            for row in active:
                taken = in_task.setdefault(row.ord, set())
                b = row.ready(taken)
                if b is None:
                    continue
                chain = row.chain_prev.get(b.seq) in taken
                items.append(self._batch_spec(row, b, chain))
                taken.add(b.seq)
                row.inflight.add(b.seq)
                est += b.count * row.sec_per_schedule(fallback)
                added = True
                if est >= target or len(items) >= MAX_TASK_ITEMS:
                    break
            if not added:
                break
        return tuple(items) if items else None

    def _fallback(self) -> float:
        ran = secs = 0.0
        for r in self.rows:
            for b in r.results.values():
                ran += b.ran
                secs += b.seconds
        return secs / ran if ran >= 5 else FIRST_GUESS

    # -- results ------------------------------------------------------------------------------

    def _take(self, results: list) -> None:
        by_ord = {r.ord: r for r in self.rows}
        commits = []
        for res in results:
            row = by_ord[res.row]
            self.worker_seconds += res.seconds
            if isinstance(res, BatchResult):
                if row.accept(res):
                    commits.append((row.id, res))
            else:
                row.shrink_inflight = False
                self.store.finish_shrinking(row.id, res.violation,
                                            res.result, res.error, res.seconds)
                row.status = "done"
        if commits:
            self.store.add_batches(commits)
            self.commits += 1
            if self.on_commit is not None:
                self.on_commit(self.commits)
        for row in self.rows:
            if row.status == "pending" and row.explored():
                self._finish_exploring(row)

    def _finish_exploring(self, row: _Row) -> None:
        counted = [row.results.get(s) for s in range(row.limit)]
        schedules = 0
        first = None
        decisive_v = None
        detected_by = None
        violations = []
        counts = [{"strategy": str(s), "seed": self.params["seed"] if not s.chained else None,
                   "schedules": 0, "steps": 0, "violations": 0, "first_detection": None,
                   "exhausted": False} for s in row.specs]
        seconds = 0.0
        for seq, b in enumerate(counted):
            if b is None:
                continue  # void
            c = counts[row.plan[seq].strategy]
            for v in b.violations:
                v = dict(v, strategy=c["strategy"])
                violations.append(v)
                if v["decisive"]:
                    decisive_v = v
                    first = schedules + b.decisive + 1
                    detected_by = c["strategy"]
                    c["first_detection"] = c["schedules"] + b.decisive + 1
            c["schedules"] += b.ran
            c["steps"] += b.steps
            c["violations"] += (1 if b.decisive is not None else 0) + b.others
            c["exhausted"] = c["exhausted"] or b.exhausted
            schedules += b.ran
            seconds += b.seconds
        mutated = bool(row.p["mutation"]) and not row.p.get("needs_c11")
        known_gap = not mutated and bool(row.p["expected"])
        exhausted = any(c["exhausted"] for c in counts)
        if decisive_v is not None:
            kind = decisive_v["kind"]
            if kind == "crash":
                verdict, ok = "crash", False
            elif known_gap:
                verdict, ok = f"known gap (found {kind})", True
            elif mutated:
                verdict, ok = f"found {kind}", True
            else:
                verdict, ok = f"violation: {kind}", False
        elif mutated or known_gap:
            seen = sorted({v["kind"] for v in violations})
            notes = [f"saw {', '.join(seen)}"] if seen else []
            notes += [f"{c['strategy']} exhausted" for c in counts if c["exhausted"]]
            verdict = ("known gap (missed)" if known_gap else "missed") + (
                f" ({'; '.join(notes)})" if notes else "")
            ok = False
        else:
            verdict, ok = "clean", True
        if ok and row.p.get("needs_c11"):
            verdict = "not found (needs c11)"   # side by side with its c11 row
        if not mutated and ok and exhausted:
            dfs = [c for c in counts if c["exhausted"]]
            dpor = [c for c in dfs if c["strategy"] == "dpor"]
            if dpor and decisive_v is None and row.p.get("dpor_checked"):
                # every Mazurkiewicz trace ran: no schedule of the scenario breaks an invariant
                verdict = f"verified (dpor, {dpor[0]['schedules']} executions)"
            elif dpor and decisive_v is None:
                # model state outside simulated memory may escape the footprints (dpor.py)
                verdict = "clean (dpor exhausted; footprints not checked for this scenario)"
            else:
                verdict = f"clean ({dfs[0]['strategy']} exhausted)"
        want_shrink = (decisive_v is not None and decisive_v["schedule"] is not None
                       and self.params["shrink"])
        status = "shrinking" if want_shrink else "done"
        self.store.finish_exploring(
            row.id, self.cid, status=status, verdict=verdict, ok=ok, schedules=schedules,
            first_detection=first, detected_by=detected_by, exhausted=exhausted,
            seconds=row.seconds + seconds, counts=counts, violations=violations,
            scenario=row.p["scenario"], mutations=list(row.mutations),
            version=row.version, memory_model=row.model)
        row.status = status

    def _shrink_tasks(self) -> list[tuple]:
        tasks = []
        for row in self.rows:
            if row.status == "shrinking" and not row.shrink_inflight:
                v = self.store.violation(self.store.rows(self.cid)[row.ord]["violation_id"])
                tasks.append((ShrinkSpec(row=row.ord, violation=v["id"], scenario=v["scenario"],
                                         mutations=row.mutations, version=v["version"],
                                         memory_model=row.model, schedule=v["schedule"], kind=v["kind"],
                                         max_runs=self.params["shrink_runs"]),))
                row.shrink_inflight = True
        return tasks

    # -- progress -----------------------------------------------------------------------------

    def counts(self) -> tuple[int, int]:
        """(schedules done, schedules this campaign will run at most)."""
        done = total = 0
        for r in self.rows:
            if r.status == "pending":
                d = r.done_schedules()
                done += d
                total += d + sum(r.plan[s].count for s in range(r.limit)
                                 if s not in r.results and s not in r.void)
            else:
                d = r.done_schedules() if r.results else r.final
                done += d
                total += d
        return done, total

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> str:
        """Run to the end; returns 'done', or raises KeyboardInterrupt with every result that
        came in committed."""
        backend = self.backend
        pending = self._pending
        limit = max(2, 2 * backend.workers)
        # Rows recovered complete from the store: close them before anything runs.
        self._take([])
        self._update_progress()
        while True:
            for task in self._shrink_tasks():
                pending[backend.submit(task)] = task
            while len(pending) < limit:
                task = self._next_task()
                if task is None:
                    break
                pending[backend.submit(task)] = task
                if backend.name == "serial":
                    break  # check results before planning more: no speculation
            if not pending:
                if all(r.status == "done" for r in self.rows):
                    return "done"
                if any(r.status == "shrinking" for r in self.rows):
                    continue
                raise AssertionError("campaign stalled: rows pending with nothing to run")
            done, _ = backend.wait(list(pending))
            for h in sorted(done, key=lambda h: _task_order(pending[h])):
                pending.pop(h)
                self._take(backend.result(h))
            self._update_progress()

    def _update_progress(self) -> None:
        if self.progress is not None:
            done, total = self.counts()
            rows_done = sum(1 for r in self.rows if r.status == "done")
            self.progress(done, total, rows_done, len(self.rows))


def _task_order(task: tuple) -> tuple[int, int]:
    first = task[0]
    return (first.row, getattr(first, "seq", -1))


def _stored_batch(b) -> BatchResult:
    return BatchResult(row=-1, seq=b["seq"], ran=b["ran"], steps=b["steps"], decisive=b["decisive"],
                       violations=json.loads(b["violations"]), others=b["others"],
                       exhausted=bool(b["exhausted"]), dfs_state=b["dfs_state"],
                       seconds=b["seconds"])


# ---------------------------------------------------------------------------------------------
# Loading results back

def load_campaign(store: Store, cid: int, *, wall_seconds: float | None = None,
                  resumed: bool = False) -> CampaignResult:
    c = store.campaign(cid)
    if c is None:
        raise ExploreError(f"no campaign {cid} in {store.path}")
    params = json.loads(c["params"])
    rows = []
    for r in store.rows(cid):
        v = store.violation(r["violation_id"]) if r["violation_id"] is not None else None
        counts = [dict(x) for x in store.strategy_counts(r["id"])]
        if r["status"] == "pending":
            done = sum(b["ran"] for b in store.batches(r["id"]))
            verdict, schedules = "unfinished", done
        else:
            verdict, schedules = r["verdict"], r["schedules"]
        rows.append(RowResult(
            ord=r["ord"], scenario=r["scenario"], mutation=r["mutation"],
            expected=json.loads(r["expected"]), strategies=json.loads(r["strategies"]),
            budget=r["budget"], status=r["status"], verdict=verdict,
            ok=None if r["ok"] is None else bool(r["ok"]), schedules=schedules,
            first_detection=r["first_detection"], detected_by=r["detected_by"],
            exhausted=bool(r["exhausted"]), seconds=r["seconds"] or 0.0,
            violation=_violation_dict(v) if v is not None else None, counts=counts,
            version=row_version(params["rows"][r["ord"]], params),
            memory_model=row_model(params["rows"][r["ord"]]),
            needs_c11=bool(params["rows"][r["ord"]].get("needs_c11"))))
    return CampaignResult(id=cid, db=store.path, params=params, rows=rows, status=c["status"],
                          wall_seconds=c["wall_seconds"] if wall_seconds is None else wall_seconds,
                          resumed=resumed)


def _violation_dict(v) -> dict:
    d = dict(v)
    d["details"] = json.loads(d["details"])
    d["mutations"] = json.loads(d["mutations"])
    return d


# ---------------------------------------------------------------------------------------------
# The API

def explore(scenario: str | Sequence[str] | None = None, *,
            mutations: Sequence[str] | None = None,
            budget: int | None = None,
            strategies: Sequence[str] | None = None,
            seed: int = 0,
            workers: int = 1,
            cluster: str | None = None,
            db: str | None = None,
            version: str | Sequence[str] | None = None,
            batch: int = DEFAULT_BATCH,
            shrink: bool = True,
            shrink_runs: int = DEFAULT_MAX_RUNS,
            resume: int | bool | None = None,
            memory_model: str | None = None,
            progress: Callable[[int, int, int, int], None] | None = None,
            scenarios: Mapping[str, Any] | None = None,
            on_commit: Callable[[int], None] | None = None) -> CampaignResult:
    """Explore scenarios of the catalog (all of them by default), unmutated and under each of
    their mutations, and return what was found.

    `version`: one `Config.version`, several, or None for every one in `VERSIONS` (each row runs
    once per version). `db`: a path to keep results in (None: an in-memory store). `resume`: None continues an
    unfinished campaign with the same parameters; False always starts a new one; True or an id
    continues the latest unfinished campaign (or that one) with its stored parameters.
    `scenarios` replaces the catalog (serial runs only). `memory_model`: None runs each
    scenario under its own model; "c11" runs the rows of the selected scenarios (by default those
    whose own model is c11) under SC and C11 side by side; "sc" every row under SC (see
    `row_models`). Bad input raises `ExploreError`.
    """
    started = time.perf_counter()
    if budget is not None and budget < 1:
        raise ExploreError(f"budget must be at least 1, not {budget}")
    if workers < 1:
        raise ExploreError(f"workers must be at least 1, not {workers}")
    if batch < 1:
        raise ExploreError(f"batch must be at least 1, not {batch}")
    if seed < 0:
        raise ExploreError(f"seed must not be negative, not {seed}")
    versions = list(VERSIONS) if version is None else [version] if isinstance(version, str) \
        else list(dict.fromkeys(version))
    for v in versions:
        if v not in VERSIONS:
            raise ExploreError(f"unknown version {v!r} (known: {', '.join(VERSIONS)})")
    if not versions:
        raise ExploreError("no version to explore")
    if memory_model is not None and memory_model not in MEMORY_MODELS:
        raise ExploreError(f"unknown memory model {memory_model!r} (known: {', '.join(MEMORY_MODELS)})")
    if memory_model is not None and (resume is True or (isinstance(resume, int)
                                                         and not isinstance(resume, bool))):
        raise ExploreError("a resumed campaign keeps its own memory models; --memory-model "
                           "starts a new one")
    if scenarios is not None and (workers > 1 or cluster):
        raise ExploreError("scenarios outside the catalog can only run serially (workers=1)")
    if scenarios is None:
        from ftlab.scenarios import catalog

        scenarios_map = catalog()
    else:
        scenarios_map = dict(scenarios)

    fresh_params = None
    if not (resume is True or (isinstance(resume, int) and not isinstance(resume, bool))):
        specs = [parse_spec(s) for s in strategies] if strategies else None
        rows = plan_rows(scenarios_map, scenario, mutations, specs, budget or DEFAULT_BUDGET,
                         versions, memory_model)
        if not rows:
            raise ExploreError(f"no row to explore under version(s) {', '.join(versions)}")
        fresh_params = {"rows": rows, "seed": seed, "batch": batch, "versions": versions,
                        "shrink": bool(shrink), "shrink_runs": shrink_runs}
        if memory_model is not None:
            fresh_params["memory_model"] = memory_model     # the header names it
    # Everything that can be bad input is checked before the store is written to.
    backend = make_backend(workers, cluster, scenarios_map)
    try:
        # Resuming needs a store that is there: never create one just to find it empty.
        store = (Store.open(db, create=fresh_params is not None, write=True) if db is not None
                 else Store.memory())
    except BaseException:
        backend.close()
        raise
    try:
        resumed = False
        if fresh_params is None:
            cid = store.latest_unfinished() if resume is True else int(resume)
            c = store.campaign(cid) if cid is not None else None
            if c is None:
                raise ExploreError("no unfinished campaign to resume" if resume is True
                                   else f"no campaign {resume} in {store.path}")
            if c["status"] == "done":
                raise ExploreError(f"campaign {cid} is already complete (see `ftlab report --campaign {cid}`)")
            params = json.loads(c["params"])
            missing = sorted({r["scenario"] for r in params["rows"]} - scenarios_map.keys())
            if missing:
                raise ExploreError(f"campaign {cid} has scenario {missing[0]!r}, which is no longer in the catalog")
            resumed = True
        else:
            params = fresh_params
            key = campaign_key(params)
            cid = store.unfinished(key) if resume is None else None
            if cid is not None:
                resumed = True
            else:
                from ftlab import __version__

                cid = store.new_campaign(key, params, __version__, [
                    dict(r, ord=i) for i, r in enumerate(params["rows"])])
        status = "interrupted"
        campaign = None
        try:
            if resumed:
                store.set_campaign(cid, status="running", wall_seconds=0.0)
            campaign = Campaign(store, cid, params, backend=backend, progress=progress,
                                on_commit=on_commit)
            status = campaign.run()
        except KeyboardInterrupt:
            pass  # every result that came in is committed; the campaign can be resumed
        finally:
            try:
                backend.close(pending=list(campaign._pending)
                              if campaign is not None and status != "done" else ())
            except KeyboardInterrupt:  # a second Ctrl-C while the workers wind down
                pass
            elapsed = time.perf_counter() - started
            if status == "done":
                result = load_campaign(store, cid, resumed=resumed)
                store.set_campaign(cid, status="done", wall_seconds=elapsed,
                                   ok=all(r.ok for r in result.rows))
            else:
                store.set_campaign(cid, status="interrupted", wall_seconds=elapsed)
        result = load_campaign(store, cid, resumed=resumed)
        result.wall_seconds = elapsed
        return result
    except BaseException:
        backend.close()
        raise
    finally:
        store.close()


def first_detection(scenario, mutation: str, budget: int = 1000, seed: int = 0,
                    version: str = "3.14"):
    """Run the default portfolio on `scenario` under `mutation` in the campaign's canonical
    batch order, serially, until the first violation: (that result, schedules run), or
    (None, schedules run) when the budget ends first. What a campaign row computes, without a
    store or workers."""
    from ftlab.explore.execute import execute

    config = Config(version=version, mutations=frozenset([mutation]))
    specs = default_portfolio(scenario)
    k = pct_steps(scenario, mutation, config.version)
    strategies = [s.make(seed, k) for s in specs]
    n = 0
    for b in plan_batches(len(specs), budget, DEFAULT_BATCH):
        for i in range(b.start, b.start + b.count):
            chooser = strategies[b.strategy].execution(i)
            if chooser is None:
                break
            n += 1
            r = execute(scenario, config, chooser)
            if r.violations:
                return r, n
    return None, n
