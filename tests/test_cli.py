"""The `ftlab` command: every command's happy path, and bad input for every command — one line
on stderr, exit 2, never a traceback."""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftlab import cli
from ftlab.explore.store import Store


ENGINE = ["lost-update", "lock-order", "message-passing"]


def _main(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _bad(capsys, *argv, match: str = ""):
    code, out, err = _main(capsys, *argv)
    assert code == 2, (argv, code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ftlab: "), err
    assert "Traceback" not in err
    if match:
        assert match in err, err
    return err


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    """A store with one small campaign of the whole catalog."""
    path = str(tmp_path_factory.mktemp("db") / "r.sqlite")
    assert cli.main(["explore", *ENGINE, "--budget", "40", "--workers", "1", "--db", path]) == 0
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _foreign(tmp_path: Path) -> Path:
    p = tmp_path / "foreign.sqlite"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    return p


# ---------------------------------------------------------------------------------------------
# Happy paths

def test_list_names_scenarios_workloads_and_mutations(capsys):
    code, out, _ = _main(capsys, "list")
    assert code == 0
    assert "scenarios:" in out and "workloads:" in out and "mutations:" in out
    assert "lost-update" in out


def test_explore_prints_one_table_and_exits_0_when_all_is_as_expected(capsys, tmp_path):
    code, out, err = _main(capsys, "explore", *ENGINE, "--budget", "30", "--workers", "1",
                           "--db", tmp_path / "r.sqlite")
    assert code == 0, err
    for col in ("scenario", "mutation", "verdict", "schedules", "to detect", "counterexample", "time"):
        assert col in out
    assert "found deadlock" in out and "clean" in out and "all as expected" in out


def test_explore_exits_1_when_a_mutation_is_missed(capsys, tmp_path, monkeypatch):
    from ftlab import scenarios
    from ftlab.scenarios import Scenario

    async def idle(t):
        await t.yield_now()

    fake = Scenario("fake", "never fails", (("a", idle), ("b", idle)),
                    mutations={"unsync-rmw": ("check",)}, dfs=False)
    monkeypatch.setattr(scenarios, "catalog", lambda: {"fake": fake})
    code, out, _ = _main(capsys, "explore", "--budget", "10", "--workers", "1",
                         "--db", tmp_path / "r.sqlite")
    assert code == 1
    assert "missed" in out and "NOT all as expected" in out


def test_explore_narrows_by_scenario_mutation_strategy_and_seed(capsys, tmp_path):
    code, out, _ = _main(capsys, "explore", "lock-order", "--mutate", "lock-order-inversion",
                         "--strategy", "pct:2", "--seed", "4", "--budget", "50",
                         "--workers", "1", "--db", tmp_path / "r.sqlite")
    assert code == 0
    assert "lock-order-inversion" in out and "lost-update" not in out
    assert "(pct:2)" in out and "seed 4" in out


def test_report_prints_the_latest_campaign_and_its_violations(capsys, db):
    code, out, _ = _main(capsys, "report", "--db", db)
    assert code == 0
    assert "campaign 1" in out and "found check" in out
    assert "violations of campaign 1" in out


def test_report_html_writes_a_page(capsys, db, tmp_path):
    out_file = tmp_path / "r.html"
    code, out, _ = _main(capsys, "report", "--db", db, "--html", out_file)
    assert code == 0 and out_file.read_text().startswith("<!DOCTYPE html>")


def test_replay_of_a_stored_violation_prints_its_timeline(capsys, db):
    store = Store.open(db, create=False)
    vid = store.violations()[0]["id"]
    store.close()
    code, out, _ = _main(capsys, "replay", vid, "--db", db)
    assert code == 1
    assert f"violation #{vid}" in out and "replaying the shrunk schedule" in out
    assert "step " in out and "invariant broken" in out
    code, out, _ = _main(capsys, "replay", f"#{vid}", "--db", db, "--original")
    assert code == 1 and "original schedule" in out


def test_shrink_stores_a_shrunk_schedule(capsys, db):
    store = Store.open(db, create=False)
    v = store.violations()[0]
    store.close()
    code, out, _ = _main(capsys, "shrink", v["id"], "--db", db)
    assert code == 0
    assert "shrunk:" in out and f"ftlab replay {v['id']}" in out


def test_replay_of_a_schedule_string(capsys):
    code, out, _ = _main(capsys, "run", "lock-order", "--mutate", "lock-order-inversion",
                         "--runs", "200")
    schedule = next(line.split()[1] for line in out.splitlines() if line.startswith("schedule:"))
    code, out, _ = _main(capsys, "replay", "lock-order", schedule, "--mutate", "lock-order-inversion")
    assert code == 1 and "deadlock" in out


def test_simulate_without_a_workload_lists_them(capsys):
    code, out, _ = _main(capsys, "simulate")
    assert code == 0 and "workloads:" in out


def test_bench_runs_every_module_and_prints_figure_baseline_ratio(capsys, tmp_path, monkeypatch):
    (tmp_path / "common.py").write_text(
        (Path(__file__).resolve().parents[1] / "bench" / "common.py").read_text())
    (tmp_path / "bench_a.py").write_text(
        "from common import Figure\n"
        "def run(quick):\n"
        "    return [Figure('a: speed', 50.0, 100.0, 'bare', 'ops/s', goal='<= 3x')]\n")
    (tmp_path / "bench_b.py").write_text("def main():\n    pass\n")
    (tmp_path / "bench_c.py").write_text("def run(quick):\n    raise RuntimeError('boom')\n")
    monkeypatch.setattr(cli, "bench_dir", lambda: tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    code, out, _ = _main(capsys, "bench", "--quick")
    assert code == 1                      # bench_c failed; the others still ran
    assert "a: speed" in out and "2.00x" in out and "bare: 100" in out
    assert "no run(quick): skipped" in out and "FAILED: RuntimeError: boom" in out


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2

def test_no_command_and_unknown_command(capsys):
    assert _main(capsys)[0] == 2
    _bad(capsys, "frobnicate")


@pytest.mark.parametrize("argv, match", [
    (["run", "nope"], "unknown scenario"),
    (["run", "lost-update", "--mutate", "nope"], "unknown mutation"),
    (["run", "lost-update", "--strategy", "zzz"], "unknown strategy"),
    (["run", "lost-update", "--strategy", "pct:0"], "from 1 to 64"),
    (["run", "lost-update", "--strategy", "pct:99999999999"], "expected a whole number"),
    (["run", "lost-update", "--seed", "-1"], "at least 0"),
    (["run", "lost-update", "--seed", "4294967296"], "at most 4294967295"),
    (["replay", "lost-update", "S1:a99999999999.mucpwp"], "more than 10,000,000 choices"),
    (["replay", "lost-update", "S1:\u00e9.x"], "outside ASCII"),
    (["replay", "\u00b2"], "expected a stored violation id"),
    (["explore", "--budget", "99999999999999999999"], "at most"),
    (["simulate", "free-delayed-growth", "--threads", "100000"], "at most 52"),
    (["run", "lost-update", "--runs", "0"], "--runs must be at least 1"),
    (["run", "lost-update", "--seed", "-1"], "--seed must be at least 0"),
    (["run", "lost-update", "--seed", "x"], "whole number"),
    (["replay", "lost-update", "garbage"], "not a schedule string"),
    (["replay", "lost-update", "S1:ab.zz"], "checksum"),
    (["replay", "lost-update", "S1:c.1i6q2zg"], "schedule"),
    (["replay", "nope", "S1:a.1skjwar"], "unknown scenario"),
    (["replay", "lost-update"], "expected a stored violation id"),
    (["explore", "nope"], "unknown scenario"),
    (["explore", "--budget", "-5"], "--budget must be at least 1"),
    (["explore", "--budget", "0"], "--budget must be at least 1"),
    (["explore", "--budget", "many"], "whole number"),
    (["explore", "--workers", "0"], "--workers must be at least 1"),
    (["explore", "--batch", "0"], "--batch must be at least 1"),
    (["explore", "--seed", "-2"], "--seed must be at least 0"),
    (["explore", "--mutate", "nope"], "unknown mutation"),
    (["explore", "lost-update", "--mutate", "relaxed-message"], "no row to explore"),
    (["explore", "--strategy", "bogus"], "unknown strategy"),
    (["explore", "--strategy", "roundrobin"], "single schedule"),
    (["explore", "--resume", "x"], "campaign id"),
    (["explore", "--resume", "--fresh"], "do not go together"),
    (["explore", "--cluster", "http://somewhere"], "bad cluster address"),
    (["explore", "--version", "2.7"], "invalid choice"),
    (["shrink", "abc"], "expected a stored violation id"),
    (["simulate", "nope"], "unknown workload"),
    (["simulate", "nope", "--threads", "0"], "--threads must be at least 1"),
    (["report", "--campaign", "0"], "--campaign must be at least 1"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, match):
    _bad(capsys, *argv, match=match)


def test_bad_paths_are_one_line_and_exit_2(capsys, tmp_path, db):
    foreign = _foreign(tmp_path)
    before = foreign.read_bytes()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    missing = tmp_path / "missing.sqlite"
    for cmd in (["explore", "--workers", "1"], ["report"], ["replay", "1"], ["shrink", "1"]):
        _bad(capsys, *cmd, "--db", tmp_path, match="is a directory")
        _bad(capsys, *cmd, "--db", foreign, match="another application")
    _bad(capsys, "explore", "--workers", "1", "--db", blocker / "r.sqlite", match="cannot create")
    _bad(capsys, "explore", "nope", "--db", missing, match="unknown scenario")
    for cmd in (["report"], ["replay", "1"], ["shrink", "1"]):
        _bad(capsys, *cmd, "--db", missing, match="no results database")
    assert not missing.exists()
    assert foreign.read_bytes() == before
    _bad(capsys, "replay", "999", "--db", db, match="no violation #999")
    _bad(capsys, "shrink", "999", "--db", db, match="no violation #999")
    _bad(capsys, "replay", "1", "--mutate", "unsync-rmw", "--db", db, match="--mutate goes with")
    _bad(capsys, "report", "--db", db, "--campaign", "99", match="no campaign 99")
    _bad(capsys, "explore", "--resume", "99", "--db", db, match="no campaign 99")
    _bad(capsys, "report", "--db", db, "--html", tmp_path / "nodir" / "r.html", match="no such directory")
    _bad(capsys, "report", "--db", db, "--html", tmp_path, match="is a directory")
    _bad(capsys, "simulate", "--plot", tmp_path, "nope", match="unknown workload")


def test_cluster_that_does_not_answer_is_one_line_and_exit_2(capsys, tmp_path):
    start = time.perf_counter()
    _bad(capsys, "explore", "--cluster", f"tcp://127.0.0.1:{_free_port()}",
         "--db", tmp_path / "r.sqlite", match="does not answer")
    assert time.perf_counter() - start < 30
    assert not (tmp_path / "r.sqlite").exists()     # bad input writes nothing


def test_missing_bench_directory_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "bench_dir", lambda: tmp_path / "bench")
    _bad(capsys, "bench", match="no bench/ directory")
    monkeypatch.setattr(cli, "bench_dir", lambda: tmp_path)
    _bad(capsys, "bench", "--only", "zzz", match="no benchmark module matches")


# ---------------------------------------------------------------------------------------------
# The console script, for real

def _ftlab() -> list[str]:
    exe = Path(sys.executable).parent / "ftlab"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ftlab.cli"]


def test_console_script_reports_bad_input_in_one_line(tmp_path):
    p = subprocess.run(_ftlab() + ["replay", "lost-update", "S1:nonsense"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=60)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    p = subprocess.run(_ftlab() + ["list"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert p.returncode == 0 and "lost-update" in p.stdout


def test_ctrl_c_stops_cleanly_keeps_results_and_the_campaign_resumes(tmp_path):
    db = tmp_path / "r.sqlite"
    # random and PCT only: DPOR verifies the engine rows in a few executions and ends them
    args = _ftlab() + ["explore", *ENGINE, "--budget", "200000", "--workers", "2", "--db", str(db),
                       "--strategy", "random", "--strategy", "pct:2"]
    p = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.time() + 60
    while time.time() < deadline:   # wait until some batch is committed
        time.sleep(0.3)
        if db.exists():
            try:
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                n = con.execute("SELECT count(*) FROM batches").fetchone()[0]
                con.close()
            except sqlite3.Error:
                n = 0
            if n >= 3:
                break
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    store = Store.open(db, create=False)
    (c,) = store.campaigns()
    assert c["status"] == "interrupted", (out, err)
    kept = sum(len(store.batches(r["id"])) for r in store.rows(c["id"]))
    store.close()
    assert kept >= 3
    # the same command again picks the campaign up (stopped again at once: it is long)
    p = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    time.sleep(4)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "(resumed)" in out
    store = Store.open(db, create=False)
    assert len(store.campaigns()) == 1
    assert sum(len(store.batches(r["id"])) for r in store.rows(c["id"])) >= kept
    store.close()


def test_simulate_runs_a_workload_and_plots_its_numbers(capsys, tmp_path, monkeypatch):
    import ftlab.workloads as workloads

    w = workloads.Workload("toy", "a toy", lambda config, threads: {"pages held": 3.0 * threads,
                                                                    "peak KiB": 64.0})
    monkeypatch.setattr(workloads, "catalog", lambda: {"toy": w})
    plot = tmp_path / "toy.png"
    code, out, _ = _main(capsys, "simulate", "toy", "--threads", "2", "--plot", plot)
    assert code == 0 and "pages held" in out and "6" in out
    assert plot.read_bytes().startswith(b"\x89PNG")
    code, out, _ = _main(capsys, "list")
    assert "toy" in out


@pytest.mark.slow
def test_bench_explore_measures_rate_efficiency_and_wall_time():
    bench = Path(__file__).resolve().parents[1] / "bench"
    sys.path.insert(0, str(bench))
    try:
        import bench_explore

        figures = bench_explore.run(quick=True)
    finally:
        sys.path.remove(str(bench))
    names = [f.name for f in figures]
    assert any("per worker" in n for n in names) and any("efficiency" in n for n in names)
    assert all(f.value > 0 for f in figures)


def test_run_under_dfs_visits_distinct_schedules(capsys):
    code, out, err = _main(capsys, "run", "lost-update", "--strategy", "dfs:1", "--runs", "50",
                           "--mutate", "unsync-rmw")
    assert code == 1 and "check" in out and err == ""


def test_run_notes_a_mutation_the_scenario_does_not_expose(capsys):
    code, out, err = _main(capsys, "run", "lost-update", "--mutate", "no-page-delay")
    assert code == 0
    assert "lost-update is not a scenario that exposes no-page-delay" in err


def test_run_takes_a_version_and_defaults_to_the_scenarios_own(capsys):
    assert cli.main(["run", "hand-off", "--version", "3.13.0"]) == 0
    assert "(version 3.13.0, mutations: none)" in capsys.readouterr().out
    assert cli.main(["run", "qsbr-page-foreign"]) == 0          # restricted to main
    assert "(version main, mutations: none)" in capsys.readouterr().out


def test_run_refuses_a_version_the_scenario_excludes(capsys):
    assert cli.main(["run", "qsbr-page-foreign", "--version", "3.14"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "runs only under version main, not 3.14" in err
