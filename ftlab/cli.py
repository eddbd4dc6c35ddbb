"""The `ftlab` command. Exit status: 0 no violation, 1 a violation, 2 bad input (DESIGN §8).

Bad input gets one line on stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ftlab.config import MUTATIONS, Config, ConfigError
from ftlab.scenarios import UnknownName, catalog, get
from ftlab.sim.schedule import ScheduleError
from ftlab.sim.strategies import DFS, PCT, Random, RoundRobin, Strategy


class BadInput(Exception):
    """One line for the user; exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise BadInput(message)


def parse_strategy(spec: str, seed: int, pct_steps: int = 50) -> Strategy:
    """`random`, `pct[:DEPTH]`, `dfs[:BOUND]`, `roundrobin[:QUANTUM]`."""
    name, _, arg = spec.partition(":")
    try:
        value = int(arg) if arg else None
    except ValueError:
        raise BadInput(f"bad strategy parameter {arg!r} in {spec!r}: expected a whole number") from None
    if value is not None and value < 0:
        raise BadInput(f"bad strategy parameter {arg!r} in {spec!r}: must not be negative")
    if name == "random":
        return Random(seed)
    if name == "pct":
        return PCT(seed, depth=value or 2, steps=pct_steps)
    if name == "dfs":
        return DFS(preemption_bound=value)
    if name in ("roundrobin", "rr"):
        return RoundRobin(value or 1)
    raise BadInput(f"unknown strategy {spec!r} (known: random, pct[:DEPTH], dfs[:BOUND], roundrobin[:QUANTUM])")


def _config(args) -> Config:
    return Config(mutations=frozenset(args.mutate or ()), version=getattr(args, "version", "3.14"))


def _print_result(result, show_trace: bool) -> None:
    from ftlab.report.timeline import format_timeline

    mut = ",".join(sorted(result.config.mutations)) or "none"
    print(f"{result.scenario}  (mutations: {mut})")
    print(f"steps {result.steps}, decisions {result.decisions}, preemptions {result.preemptions}")
    print(f"schedule: {result.schedule}")
    if result.trace is not None and (show_trace or result.violations):
        print()
        print(format_timeline(result.trace, result.threads, result.violation))
    elif result.violations:
        print(result.violation)
    if result.violations:
        flags = "".join(f" --mutate {m}" for m in sorted(result.config.mutations))
        print(f"\nreplay: ftlab replay {result.scenario} {result.schedule}{flags}")
    else:
        print("no violation")


def cmd_list(args) -> int:
    print("scenarios:")
    for s in catalog().values():
        muts = ", ".join(s.mutations) or "-"
        print(f"  {s.name:<22} {s.description}  [mutations: {muts}]")
    print("mutations:")
    for name, what in MUTATIONS.items():
        print(f"  {name:<28} {what}")
    return 0


def cmd_run(args) -> int:
    from ftlab.explore.execute import run

    scenario = get(args.scenario)
    config = _config(args)
    strategy = parse_strategy(args.strategy, args.seed, scenario.pct_steps)
    if args.runs < 1:
        raise BadInput(f"--runs must be at least 1, not {args.runs}")
    result = None
    for i in range(args.runs):
        if strategy.execution(i) is None:
            break
        result = run(scenario, config, strategy, execution=i, trace=True)
        if result.violations:
            if args.runs > 1:
                print(f"violation in execution {i + 1} of at most {args.runs}")
            break
    assert result is not None
    _print_result(result, args.trace)
    return 1 if result.violations else 0


def cmd_replay(args) -> int:
    from ftlab.explore.execute import run
    from ftlab.sim.strategies import Replay

    scenario = get(args.scenario)
    result = run(scenario, _config(args), Replay(args.schedule), trace=True)
    _print_result(result, args.trace)
    return 1 if result.violations else 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ftlab", description="explore thread interleavings of a model of CPython's free-threaded runtime")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    s = sub.add_parser("list", help="scenarios, workloads and mutations")
    s.set_defaults(fn=cmd_list)

    s = sub.add_parser("run", help="run a scenario under one strategy")
    s.add_argument("scenario")
    s.add_argument("--strategy", default="random")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--runs", type=int, default=1, help="executions to try, stopping at the first violation")
    s.add_argument("--mutate", action="append", metavar="M")
    s.add_argument("--trace", action="store_true")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("replay", help="replay a schedule string")
    s.add_argument("scenario")
    s.add_argument("schedule")
    s.add_argument("--mutate", action="append", metavar="M")
    s.add_argument("--trace", action="store_true")
    s.set_defaults(fn=cmd_replay)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "fn", None):
            parser.print_help()
            return 2
        return args.fn(args)
    except (BadInput, ConfigError, UnknownName, ScheduleError) as e:
        print(f"ftlab: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ftlab list | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("ftlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
