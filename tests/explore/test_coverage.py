"""`ftlab coverage`: the catalog's coverage of the runtime, with the multi-threaded split."""

from ftlab.cli import main
from ftlab.explore.coverage import measure, runtime_functions
from ftlab.scenarios import get


def test_runtime_functions_lists_methods_and_nested_functions_but_not_the_observer():
    fns = {str(f) for f in runtime_functions()}
    assert "qsbr.py:advance" in fns or any(f.endswith(":advance") for f in fns)
    assert "mimalloc/segment.py:abandoned_reclaim_all" in fns
    assert not any(f.startswith("observer.py:") for f in fns)


def test_multi_threaded_reach_is_told_apart_from_single_threaded_reach():
    report = measure([get("mimalloc-stress")], schedules=1, versions=["3.14"])
    by_name = {str(f): f for f in report.functions}
    # freeing on the owner and cross-thread runs while the other threads are alive
    mt_free = by_name["mimalloc/free.py:free_block_mt"]
    assert mt_free in report.multi and mt_free in report.reached
    # finalization runs on one thread after all others exit: reached, never multi-threaded
    fini = by_name["obmalloc.py:fini_delayed"]
    assert fini in report.reached and fini not in report.multi
    assert fini in report.single_only
    # nothing the scenario never calls is reached
    assert by_name["mimalloc/segment.py:abandoned_reclaim_all"] in report.unreached
    assert report.runs == 2 and 0 < report.lines_run < report.lines_total
    assert 0 < report.branches_run < report.branches_total


def test_cli_prints_both_lists(capsys):
    assert main(["coverage", "hand-off", "--schedules", "1", "--version", "3.14"]) == 0
    out = capsys.readouterr().out
    assert "not reached by any scenario" in out and "reached only single-threaded" in out


def test_cli_unknown_scenario_is_bad_input(capsys):
    assert main(["coverage", "no-such-scenario"]) == 2
    assert "unknown scenario" in capsys.readouterr().err
