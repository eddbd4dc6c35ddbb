"""The `ftlab` command. Exit status: 0 no violation, 1 a violation, 2 bad input (DESIGN §8).

Bad input gets one line on stderr and exit 2, never a traceback. `ftlab explore` exits 0 when
every unmutated scenario is clean and every mutation is found, 1 otherwise, and 130 when
interrupted (everything done so far is kept and the campaign can be resumed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Sequence

from ftlab.config import MUTATIONS, VERSIONS, Config, ConfigError
from ftlab.explore.portfolio import ExploreError, parse_spec
from ftlab.scenarios import UnknownName, catalog, get
from ftlab.sim.schedule import ScheduleError
from ftlab.sim.strategies import RoundRobin, Strategy
from ftlab.workloads import UnknownWorkload


class BadInput(Exception):
    """One line for the user; exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise BadInput(message)


def _count(what: str, minimum: int, maximum: int = 10**9):
    """An argparse type: a whole number in [minimum, maximum]."""
    def parse(text: str) -> int:
        try:
            value = int(text) if text.strip().isascii() else None
        except ValueError:
            value = None
        if value is None:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number, not {text!r}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be at least {minimum}, not {value}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"{what} must be at most {maximum}, not {value}")
        return value
    parse.__name__ = what
    return parse


def parse_strategy(spec: str, seed: int, pct_steps: int = 50) -> Strategy:
    """What `explore` accepts (`random`, `pct[:DEPTH]`, `dfs[:BOUND]`), plus `roundrobin[:QUANTUM]`
    for a single run."""
    name, colon, arg = spec.partition(":")
    if name in ("roundrobin", "rr"):
        if colon and not (arg.isascii() and arg.isdigit() and 1 <= int(arg) <= 10**6):
            raise BadInput(f"bad round-robin quantum {arg!r} in {spec!r}: a whole number from 1")
        return RoundRobin(int(arg) if colon else 1)
    return parse_spec(spec).make(seed, pct_steps)


def _config(args, scenario=None) -> Config:
    version = getattr(args, "version", None)
    if scenario is not None:
        version = _scenario_version(scenario, version)
    return Config(mutations=frozenset(args.mutate or ()), version=version or "3.14",
                  memory_model=_memory_model(scenario, getattr(args, "memory_model", None)))


def _memory_model(scenario, asked: str | None) -> str:
    """`--memory-model` of run/replay: by default the scenario's own (a c11 row sets it in its
    config), else sc. Another one runs the scenario under it (`_in_model`), as `ftlab explore
    --memory-model` does."""
    own = scenario.config.get("memory_model") if scenario is not None else None
    return asked or own or "sc"


def _in_model(scenario, config: Config):
    """The scenario under `config`'s memory model (its own config would otherwise win)."""
    from ftlab.scenarios import in_memory_model

    return in_memory_model(scenario, config.memory_model)


def _scenario_version(scenario, asked: str | None) -> str:
    """`--version` of run/replay: by default the scenario's first version when it is restricted
    to some (`Scenario.versions`), else 3.14; a version the scenario excludes is bad input."""
    if asked is None:
        return scenario.versions[0] if scenario.versions else "3.14"
    if scenario.versions and asked not in scenario.versions:
        raise BadInput(f"{scenario.name} runs only under version {', '.join(scenario.versions)}, "
                       f"not {asked}")
    return asked


def _stdout_console():
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160, soft_wrap=False)


def _print_result(result, show_trace: bool, args=None) -> None:
    from ftlab.report.timeline import format_timeline

    mut = ",".join(sorted(result.config.mutations)) or "none"
    model = "" if result.config.memory_model == "sc" else f", memory model {result.config.memory_model}"
    print(f"{result.scenario}  (version {result.config.version}{model}, mutations: {mut})")
    print(f"steps {result.steps}, decisions {result.decisions}, preemptions {result.preemptions}")
    print(f"schedule: {result.schedule}")
    if result.trace is not None and (show_trace or result.violations):
        print()
        print(format_timeline(result.trace, result.threads, result.violation,
                              full=bool(getattr(args, "full", False)),
                              raw=bool(getattr(args, "raw", False))))
    elif result.violations:
        print(result.violation)
    if result.violations:
        flags = "".join(f" --mutate {m}" for m in sorted(result.config.mutations))
        from ftlab.scenarios import catalog as scenarios, own_memory_model

        # c11 memory model: name the model it ran under whenever c11 is involved (the
        # scenario's own model would otherwise win on replay)
        own = scenarios().get(result.scenario)
        if "c11" in (result.config.memory_model, own_memory_model(own) if own else "sc"):
            flags += f" --memory-model {result.config.memory_model}"
        print(f"\nreplay: ftlab replay {result.scenario} {result.schedule}{flags}")
    else:
        print("no violation")


# ---------------------------------------------------------------------------------------------
# list, run, replay

def cmd_list(args) -> int:
    from ftlab.workloads import catalog as workloads

    print("scenarios:")
    for s in catalog().values():
        muts = ", ".join(s.mutations) or "-"
        print(f"  {s.name:<22} {s.description}  [mutations: {muts}]")
    print("workloads:")
    ws = workloads()
    for w in ws.values():
        print(f"  {w.name:<22} {w.description}")
    if not ws:
        print("  (none yet)")
    print("mutations:")
    for name, what in MUTATIONS.items():
        print(f"  {name:<28} {what}")
    return 0


def _warn_unexposed(scenario, config: Config) -> None:
    for m in sorted(config.mutations - scenario.mutations.keys()):
        print(f"ftlab: note: {scenario.name} is not a scenario that exposes {m} "
              f"(it exposes: {', '.join(scenario.mutations) or 'none'})", file=sys.stderr)


def cmd_run(args) -> int:
    from ftlab.explore.execute import run_chooser

    scenario = get(args.scenario)
    config = _config(args, scenario)
    _warn_unexposed(scenario, config)
    scenario = _in_model(scenario, config)
    strategy = parse_strategy(args.strategy, args.seed, scenario.pct_steps)
    result = None
    for i in range(args.runs):
        chooser = strategy.execution(i)  # once: DFS hands out each execution once
        if chooser is None:
            break
        result = run_chooser(scenario, config, chooser, trace=True)
        if result.violations:
            if args.runs > 1:
                print(f"violation in execution {i + 1} of at most {args.runs}")
            break
    assert result is not None, "run --runs N made no run"
    _print_result(result, args.trace, args)
    return 1 if result.violations else 0


def _violation_id(text: str) -> int | None:
    t = text.lstrip("#")
    return int(t) if t.isascii() and t.isdigit() and len(t) <= 18 else None


def cmd_replay(args) -> int:
    from ftlab.explore.execute import run
    from ftlab.sim.strategies import Replay

    if args.schedule is None:
        vid = _violation_id(args.target)
        if vid is None:
            raise BadInput(f"expected a stored violation id or SCENARIO SCHEDULE, not {args.target!r}")
        for flag, given in (("--mutate", args.mutate), ("--version", args.version),
                            ("--memory-model", args.memory_model)):
            if given:
                raise BadInput(f"{flag} goes with SCENARIO SCHEDULE; a stored violation has its own")
        v = _stored_violation(args.db, vid)
        scenario, config = _stored_target(v)
        use_shrunk = bool(v["shrunk_schedule"]) and not args.original
        schedule = v["shrunk_schedule"] if use_shrunk else v["schedule"]
        if not schedule:
            raise BadInput(f"violation #{vid} has no schedule to replay (it happened outside the threads)")
        which = "shrunk" if use_shrunk else "original"
        print(f"violation #{vid}: {v['kind']} in {v['scenario']}, replaying the {which} schedule")
        result = run(scenario, config, Replay(schedule), trace=True)
        if result.violation is None or result.violation.kind != v["kind"]:
            got = result.violation.kind if result.violation else "no violation"
            _print_result(result, args.trace, args)
            print(f"ftlab: stale violation #{vid}: it was stored as {v['kind']}, the replay now "
                  f"gives {got} (the model changed since it was stored)", file=sys.stderr)
            return 2
    else:
        scenario = get(args.target)
        config = _config(args, scenario)
        _warn_unexposed(scenario, config)
        scenario = _in_model(scenario, config)
        result = run(scenario, config, Replay(args.schedule), trace=True)
    _print_result(result, args.trace, args)
    return 1 if result.violations else 0


def _stored_target(v):
    """The scenario and config a stored violation ran under: its version, mutations and the
    memory model of its row (stored with it; ftlab.explore.campaign.violation_target)."""
    from ftlab.explore.campaign import violation_target

    return violation_target(v, get)


def _open_store(path: str, create: bool, write: bool = False):
    from ftlab.explore.store import Store

    return Store.open(path, create=create, write=write)


def _stored_violation(db: str, vid: int):
    store = _open_store(db, create=False)
    try:
        v = store.violation(vid)
    finally:
        store.close()
    if v is None:
        raise BadInput(f"no violation #{vid} in {db} (see `ftlab report`)")
    return v


# ---------------------------------------------------------------------------------------------
# explore

def _progress(console):
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} schedules/s" if speed else "… schedules/s", style="cyan")

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    RateColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    console=console, transient=True, disable=not console.is_terminal)


@contextlib.contextmanager
def _sigterm_interrupts():
    """`kill PID` stops a campaign as Ctrl-C does: what is done stays, the campaign resumes."""
    import signal
    import threading

    def handler(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_explore(args) -> int:
    from rich.console import Console

    from ftlab.explore.campaign import explore
    from ftlab.report.table import print_campaign

    if args.resume is not None and args.fresh:
        raise BadInput("--resume and --fresh do not go together")
    resume: int | bool | None = None
    if args.fresh:
        resume = False
    elif args.resume is not None:
        if args.resume is True:
            resume = True
        else:
            vid = _violation_id(args.resume)
            if vid is None:
                raise BadInput(f"--resume takes a campaign id, not {args.resume!r}")
            resume = vid
    err = Console(stderr=True)
    with _sigterm_interrupts(), _progress(err) as bar:
        task = bar.add_task("starting", total=None)

        def progress(done: int, total: int, rows_done: int, rows: int) -> None:
            bar.update(task, completed=done, total=max(total, 1),
                       description=f"rows {rows_done}/{rows}")

        result = explore(
            None if args.scenario in ([], ["all"]) else args.scenario,
            mutations=args.mutate, budget=args.budget, strategies=args.strategy,
            seed=args.seed, workers=args.workers, cluster=args.cluster, db=args.db,
            version=args.version, batch=args.batch, shrink=not args.no_shrink, resume=resume,
            memory_model=args.memory_model, progress=progress)
    print_campaign(result, _stdout_console())
    if result.interrupted:
        print(f"interrupted: everything finished so far is in {result.db}; run the same command "
              f"again, or `ftlab explore --resume {result.id} --db {result.db}`, to go on",
              file=sys.stderr)
    return result.exit_code


# ---------------------------------------------------------------------------------------------
# shrink, report

def cmd_shrink(args) -> int:
    import json

    from ftlab.explore.shrink import shrink

    vid = _violation_id(args.run_id)
    if vid is None:
        raise BadInput(f"expected a stored violation id (see `ftlab report`), not {args.run_id!r}")
    store = _open_store(args.db, create=False, write=True)
    try:
        v = store.violation(vid)
        if v is None:
            raise BadInput(f"no violation #{vid} in {args.db} (see `ftlab report`)")
        if not v["schedule"]:
            raise BadInput(f"violation #{vid} has no schedule (it happened outside the threads)")
        scenario, config = _stored_target(v)
        r = shrink(scenario, config, v["schedule"], v["kind"], max_runs=args.max_runs)
        if not r.verified:
            print(f"violation #{vid}: {r.note}")
            return 1
        store.set_shrunk(vid, r.as_dict())
    finally:
        store.close()
    muts = "".join(f" --mutate {m}" for m in json.loads(v["mutations"]))
    print(f"violation #{vid}: {v['kind']} in {v['scenario']}{' with' + muts if muts else ''}")
    print(f"  original: {r.original}  ({r.original_preemptions} preemptions, {r.original_steps} steps)")
    print(f"  shrunk:   {r.schedule}  ({r.preemptions} preemptions, {r.steps} steps, "
          f"{r.decisions} decisions; {r.runs} candidate runs)")
    if r.note:
        print(f"  note: {r.note}")
    print(f"replay: ftlab replay {vid}   or   ftlab replay {v['scenario']} {r.schedule}{muts}")
    return 0


def cmd_report(args) -> int:
    from ftlab.explore.campaign import load_campaign
    from ftlab.report.table import print_campaign, violations_table

    store = _open_store(args.db, create=False)
    try:
        cid = args.campaign if args.campaign is not None else store.latest_campaign()
        if cid is None:
            raise BadInput(f"{args.db} holds no campaign yet (run `ftlab explore`)")
        result = load_campaign(store, cid)
        if args.html:
            from ftlab.report.html import write_html

            try:
                write_html(store, cid, args.html)
            except OSError as e:
                raise BadInput(f"cannot write {args.html}: {e.strerror or e}") from None
            print(f"wrote {args.html}")
            return 0
        console = _stdout_console()
        campaigns = store.campaigns()
        if len(campaigns) > 1:
            console.print("campaigns: " + ", ".join(
                f"#{c['id']} ({c['status']}, {c['started']})" for c in campaigns[-8:]))
        print_campaign(result, console)
        vs = store.violations(cid)
        if vs:
            console.print(f"\nviolations of campaign {cid} (replay one with `ftlab replay ID`):")
            console.print(violations_table(vs))
    finally:
        store.close()
    return 0


# ---------------------------------------------------------------------------------------------
# simulate, bench

def cmd_simulate(args) -> int:
    from ftlab.workloads import catalog as workloads, get as get_workload

    if args.workload is None:
        ws = workloads()
        print("workloads:")
        for w in ws.values():
            print(f"  {w.name:<22} {w.description}")
        if not ws:
            print("  (none yet)")
        return 0
    w = get_workload(args.workload)
    if args.plot:
        _check_writable(args.plot)
    threads = args.threads or w.default_threads
    numbers = w.run(_config(args), threads)
    print(f"{w.name} ({threads} threads)")
    width = max((len(k) for k in numbers), default=0)
    for k, v in numbers.items():
        print(f"  {k:<{width}}  {v:,.6g}")
    if args.plot:
        from ftlab.report.plots import bar_chart_png

        png = (w.plot(_config(args), threads) if w.plot is not None
               else bar_chart_png(numbers, f"{w.name}, {threads} threads"))
        Path(args.plot).write_bytes(png)
        print(f"wrote {args.plot}")
    return 0


def _check_writable(path: str) -> None:
    p = Path(path)
    if p.is_dir():
        raise BadInput(f"{path}: is a directory")
    if not p.parent.is_dir():
        raise BadInput(f"{path}: no such directory {str(p.parent)!r}")
    if not os.access(p.parent, os.W_OK):
        raise BadInput(f"{path}: the directory is not writable")


def _num(v: float) -> str:
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def bench_dir() -> Path:
    """bench/ of the source checkout the package was installed from (`pip install -e .`)."""
    import ftlab

    return Path(ftlab.__file__).resolve().parents[1] / "bench"


def cmd_bench(args) -> int:
    import importlib.util

    from rich.table import Table

    directory = bench_dir()
    if not directory.is_dir():
        raise BadInput(f"no bench/ directory beside the ftlab package (looked for {directory}); "
                       "`ftlab bench` needs a source checkout installed with `pip install -e .`")
    paths = sorted(directory.glob("bench_*.py"))
    if args.only:
        paths = [p for p in paths if args.only in p.stem]
        if not paths:
            raise BadInput(f"no benchmark module matches {args.only!r} in {directory}")
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    console = _stdout_console()
    failed = 0
    table = Table(title=f"ftlab bench{' --quick' if args.quick else ''}", title_justify="left",
                  pad_edge=False)
    for col in ("module", "figure", "value", "baseline", "ratio", "goal"):
        table.add_column(col, justify="right" if col in ("value", "ratio") else "left")
    for path in paths:
        name = path.stem
        console.print(f"running {name} …", style="dim")
        try:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # importable by name: worker processes unpickle from it
            spec.loader.exec_module(module)
            run = getattr(module, "run", None)
            if not callable(run):
                table.add_row(name, "(no run(quick): skipped)", "", "", "", "")
                continue
            figures = run(args.quick)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # one benchmark failing does not hide the others
            failed += 1
            table.add_row(name, f"FAILED: {type(e).__name__}: {e}", "", "", "", "")
            continue
        for f in figures:
            table.add_row(name, f.name, f"{_num(f.value)} {f.unit}",
                          f"{f.baseline_name}: {_num(f.baseline)}", f"{f.ratio:.2f}x", f.goal)
    console.print(table)
    console.print("ratio: how many times worse than the baseline (1.00 = as good)")
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------
# The parser

# --- coverage (issue 12): the catalog's coverage of ftlab/runtime/ ---------------------------

def cmd_coverage(args) -> int:
    from ftlab.explore.coverage import measure

    scenarios = [get(n) for n in args.scenario] if args.scenario else list(catalog().values())
    versions = args.version or list(VERSIONS)
    report = measure(scenarios, schedules=args.schedules, versions=versions)
    print(report.format(all_functions=args.all))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ftlab.explore.portfolio import DEFAULT_BATCH
    from ftlab.explore.shrink import DEFAULT_MAX_RUNS
    from ftlab.explore.store import DEFAULT_DB

    p = _Parser(prog="ftlab", description="explore thread interleavings of a model of CPython's free-threaded runtime")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    seed = _count("--seed", 0, 2**32 - 1)

    s = sub.add_parser("list", help="scenarios, workloads and mutations")
    s.set_defaults(fn=cmd_list)

    s = sub.add_parser("run", help="run a scenario under one strategy")
    s.add_argument("scenario")
    s.add_argument("--strategy", default="random")
    s.add_argument("--seed", type=seed, default=0)
    s.add_argument("--runs", type=_count("--runs", 1), default=1,
                   help="executions to try, stopping at the first violation")
    s.add_argument("--mutate", action="append", metavar="M")
    s.add_argument("--version", choices=VERSIONS, default=None,
                   help="the CPython version policy (default: the scenario's first, else 3.14)")
    s.add_argument("--trace", action="store_true")
    # issue 16: timelines in words
    s.add_argument("--full", action="store_true", help="show the folded runs of the timeline")
    s.add_argument("--raw", action="store_true", help="show the addresses beside the names")
    # c11 memory model (ftlab/sim/c11.py)
    s.add_argument("--memory-model", choices=("sc", "c11"), default=None)
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("replay", help="replay a stored violation (ID) or a schedule string (SCENARIO SCHEDULE)")
    s.add_argument("target", metavar="ID|SCENARIO")
    s.add_argument("schedule", nargs="?")
    s.add_argument("--mutate", action="append", metavar="M")
    s.add_argument("--version", choices=VERSIONS, default=None,
                   help="with SCENARIO SCHEDULE: the version policy (default: as `run`)")
    s.add_argument("--trace", action="store_true")
    s.add_argument("--original", action="store_true", help="a stored violation's unshrunk schedule")
    # issue 16: timelines in words
    s.add_argument("--full", action="store_true", help="show the folded runs of the timeline")
    s.add_argument("--raw", action="store_true", help="show the addresses beside the names")
    # c11 memory model (ftlab/sim/c11.py)
    s.add_argument("--memory-model", choices=("sc", "c11"), default=None)
    s.add_argument("--db", default=str(DEFAULT_DB))
    s.set_defaults(fn=cmd_replay)

    s = sub.add_parser("explore", help="the main job: every scenario, unmutated and under each mutation")
    s.add_argument("scenario", nargs="*", metavar="SCENARIO",
                   help="scenarios to explore (default: all of the catalog)")
    s.add_argument("--budget", type=_count("--budget", 1), default=None,
                   help="schedules per row (default 1000)")
    s.add_argument("--strategy", action="append", metavar="S",
                   help="random, pct:DEPTH, dfs[:BOUND] (repeatable; default: the portfolio)")
    s.add_argument("--seed", type=seed, default=0)
    s.add_argument("--mutate", action="append", metavar="M",
                   help="only the rows of this mutation ('none': the unmutated rows)")
    s.add_argument("--workers", type=_count("--workers", 1), default=os.cpu_count() or 1)
    s.add_argument("--cluster", metavar="tcp://HOST:PORT")
    s.add_argument("--db", default=str(DEFAULT_DB))
    s.add_argument("--resume", nargs="?", const=True, default=None, metavar="ID",
                   help="continue an unfinished campaign (the latest, or ID) with its parameters")
    s.add_argument("--fresh", action="store_true",
                   help="start a new campaign even if an unfinished one has the same parameters")
    s.add_argument("--batch", type=_count("--batch", 1), default=DEFAULT_BATCH)
    s.add_argument("--no-shrink", action="store_true")
    from ftlab.config import VERSION_RELEASES  # both version policies (issue 12)

    s.add_argument("--version", action="append", choices=VERSIONS,
                   help="only this version (repeatable; default: every version, "
                        + "; ".join(f"{v} = {d}" for v, d in VERSION_RELEASES.items()) + ")")
    # c11 memory model (ftlab/sim/c11.py, issue 14)
    s.add_argument("--memory-model", choices=("sc", "c11"), default=None,
                   help="c11: the rows of the scenarios that need C11 atomics (or of the "
                        "scenarios named) under sc and c11 side by side; sc: every row under "
                        "sc (default: each scenario under its own model)")
    s.set_defaults(fn=cmd_explore)

    s = sub.add_parser("shrink", help="shrink a stored violation's schedule")
    s.add_argument("run_id", metavar="RUN_ID")
    s.add_argument("--db", default=str(DEFAULT_DB))
    s.add_argument("--max-runs", type=_count("--max-runs", 1), default=DEFAULT_MAX_RUNS)
    s.set_defaults(fn=cmd_shrink)

    s = sub.add_parser("simulate", help="run a workload and print its numbers")
    s.add_argument("workload", nargs="?")
    s.add_argument("--threads", type=_count("--threads", 1, 52), default=None)
    s.add_argument("--plot", metavar="FILE")
    s.add_argument("--mutate", action="append", metavar="M")
    s.add_argument("--version", choices=VERSIONS, default="3.14")
    s.set_defaults(fn=cmd_simulate)

    s = sub.add_parser("report", help="print stored campaigns, or write them as one HTML page")
    s.add_argument("--db", default=str(DEFAULT_DB))
    s.add_argument("--campaign", type=_count("--campaign", 1), default=None)
    s.add_argument("--html", metavar="FILE")
    s.set_defaults(fn=cmd_report)

    s = sub.add_parser("bench", help="run every benchmark in bench/ and print figure, baseline, ratio")
    s.add_argument("--quick", action="store_true")
    s.add_argument("--only", metavar="NAME", help="modules whose name contains NAME")
    s.set_defaults(fn=cmd_bench)
    # coverage (issue 12)
    s = sub.add_parser("coverage", help="line/branch coverage of ftlab/runtime/ by the catalog; "
                                        "functions unreached or reached only single-threaded")
    s.add_argument("scenario", nargs="*", metavar="SCENARIO", help="default: all of the catalog")
    s.add_argument("--schedules", type=_count("--schedules", 1, 1000), default=20,
                   help="Random schedules per scenario and version, seeds 0..N-1 (default 20), "
                        "and max(1, N // 4) PCT schedules")
    s.add_argument("--version", action="append", choices=VERSIONS,
                   help="only this version (repeatable; default: every version)")
    s.add_argument("--all", action="store_true",
                   help="list every function, not only the safety-relevant ones")
    s.set_defaults(fn=cmd_coverage)

    return p


_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


def _one_line(text: str) -> str:
    """A message that quotes the user's input stays one line: line breaks in it are escaped."""
    return "".join(repr(c)[1:-1] if c in _LINE_BREAKS else c for c in text)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "fn", None):
            parser.print_help()
            return 2
        if getattr(args, "html", None):
            _check_writable(args.html)
        return args.fn(args)
    except (BadInput, ConfigError, UnknownName, UnknownWorkload, ScheduleError, ExploreError) as e:
        print(f"ftlab: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ftlab list | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("ftlab: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug in ftlab itself: one line, and the traceback on request
        if os.environ.get("FTLAB_DEBUG"):
            raise
        print(f"ftlab: internal error: {type(e).__name__}: {e} (FTLAB_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
