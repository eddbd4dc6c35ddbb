"""Campaigns: verdicts, canonical counting, identical results serially / in processes / on Dask,
interruption and resumption."""

from __future__ import annotations

import logging

import pytest

from ftlab import explore
from ftlab.config import VERSIONS
from ftlab.explore import worker
from ftlab.explore.campaign import CampaignResult, select_rows
from ftlab.explore.portfolio import ExploreError, plan_batches
from ftlab.explore.store import Store
from ftlab.scenarios import catalog


def _essence(result: CampaignResult) -> list:
    """Everything a campaign reports except wall times and database ids."""
    out = []
    for r in result.rows:
        v = r.violation
        out.append((r.scenario, r.mutation, r.version, r.verdict, r.ok, r.schedules,
                    r.first_detection, r.detected_by, r.exhausted,
                    None if v is None else (v["kind"], v["strategy"], v["execution"],
                                            v["schedule"], v["shrunk_schedule"],
                                            v["shrunk_preemptions"], v["shrunk_steps"]),
                    [(c["strategy"], c["seed"], c["schedules"], c["steps"], c["violations"],
                      c["first_detection"], c["exhausted"]) for c in r.counts]))
    return out


# ---------------------------------------------------------------------------------------------
# Verdicts

ENGINE = ["lost-update", "lock-order", "message-passing"]


def test_engine_scenarios_are_as_expected():
    result = explore(ENGINE, budget=100)
    assert result.status == "done"
    assert result.ok, result.summary()
    assert result.exit_code == 0


def test_default_campaign_has_every_scenario_unmutated_and_under_each_mutation():
    result = explore(budget=5, shrink=False)
    assert result.status == "done"
    # every version policy, each with the whole catalog (issue 12)
    assert [(r.version, r.scenario, r.mutation) for r in result.rows] == [
        (v, s.name, m) for v in VERSIONS for s in catalog().values()
        if not s.versions or v in s.versions
        for m in [""] + list(s.mutations)]
    for r in result.rows:
        s = catalog()[r.scenario]
        # an unmutated row expects its scenario's known gaps (issue 12 item 4), usually none
        assert r.expected == (list(s.mutations[r.mutation]) if r.mutation else list(s.known_gap))


def test_mutated_row_stops_at_first_detection_and_keeps_a_shrunk_counterexample():
    result = explore("lost-update", budget=400)
    row = result.row("lost-update", "unsync-rmw")
    assert row.verdict == "found check" and row.ok
    assert row.schedules == row.first_detection < 400
    v = row.violation
    assert v["kind"] == "check" and v["decisive"]
    assert v["shrunk_schedule"] and v["shrunk_preemptions"] <= v["preemptions"]
    clean = result.row("lost-update")
    # the engine scenarios' spaces are small: the portfolio's unbounded DFS exhausts them
    assert clean.verdict == "clean (dfs exhausted)" and clean.violation is None
    assert 0 < clean.schedules <= 400


def test_portfolio_budget_is_shared_and_counted_per_strategy():
    result = explore("lock-order", mutations=["none"], budget=103,
                     strategies=["random", "pct:1", "pct:2", "pct:3"])
    row = result.rows[0]
    assert [c["strategy"] for c in row.counts] == ["random", "pct:1", "pct:2", "pct:3"]
    assert [c["schedules"] for c in row.counts] == [26, 26, 26, 25]
    assert sum(c["schedules"] for c in row.counts) == row.schedules == 103


def test_strategy_option_replaces_the_portfolio():
    result = explore("message-passing", budget=50, strategies=["pct:3", "random"])
    for r in result.rows:
        assert r.strategies == ["pct:3", "random"]


def test_crash_is_never_a_detection(odd_scenarios):
    result = explore("crasher", scenarios=odd_scenarios, budget=40)
    row = result.row("crasher", "unsync-rmw")
    assert row.verdict == "crash" and row.ok is False
    assert result.row("crasher").ok
    assert not result.ok and result.exit_code == 1


def test_violation_of_another_kind_does_not_count_as_found(odd_scenarios):
    result = explore("wrong-kind", scenarios=odd_scenarios, budget=40)
    row = result.row("wrong-kind", "unsync-rmw")
    assert row.verdict == "missed (saw check)" and row.ok is False
    assert row.schedules == 40
    assert result.exit_code == 1


def test_missed_mutation_fails_the_campaign(odd_scenarios):
    result = explore("never-fails", scenarios=odd_scenarios, budget=30)
    assert result.row("never-fails", "unsync-rmw").verdict == "missed"
    assert result.exit_code == 1


def test_unmutated_violation_fails_the_campaign(odd_scenarios):
    result = explore("always-fails", scenarios=odd_scenarios, budget=30)
    row = result.row("always-fails")
    assert row.verdict == "violation: check" and row.ok is False
    assert row.first_detection == 1
    assert result.exit_code == 1


def test_bounded_dfs_says_when_its_space_is_exhausted(odd_scenarios):
    result = explore("small-space", scenarios=odd_scenarios, budget=500, batch=3)
    row = result.rows[0]
    dfs = [c for c in row.counts if c["strategy"] == "dfs:1"][0]
    assert dfs["exhausted"] and 0 < dfs["schedules"] < 100
    assert row.verdict == "clean (dfs:1 exhausted)"


def test_dfs_chain_across_batches_runs_each_schedule_once(odd_scenarios):
    one = explore("small-space", scenarios=odd_scenarios, budget=150, strategies=["dfs"], batch=150)
    many = explore("small-space", scenarios=odd_scenarios, budget=150, strategies=["dfs"], batch=2)
    assert one.rows[0].schedules == many.rows[0].schedules
    assert one.rows[0].counts[0]["steps"] == many.rows[0].counts[0]["steps"]


def test_progress_reports_schedules_done_and_the_most_left():
    seen = []
    explore("lost-update", budget=200, progress=lambda d, t, rd, rt: seen.append((d, t, rd, rt)))
    assert seen[-1][2] == seen[-1][3] == 2 * len(VERSIONS)   # two rows per version
    assert seen[-1][0] == seen[-1][1]
    assert all(d <= t for d, t, _, _ in seen)


@pytest.mark.parametrize("kwargs, message", [
    ({"budget": 0}, "budget must be at least 1"),
    ({"workers": 0}, "workers must be at least 1"),
    ({"seed": -1}, "seed must not be negative"),
    ({"strategies": ["bogus"]}, "unknown strategy"),
    ({"strategies": ["pct:x"]}, "bad strategy parameter"),
    ({"mutations": ["no-such"]}, "unknown mutation"),
    ({"mutations": ["relaxed-message"], "scenario": "lost-update"}, "no row to explore"),
    ({"scenario": "nope"}, "unknown scenario"),
])
def test_bad_parameters_are_refused(kwargs, message):
    with pytest.raises(ExploreError, match=message):
        explore(**kwargs)


def test_select_rows_follows_catalog_order():
    rows = select_rows(catalog())
    names = [s.name for s, m in rows]
    assert names == sorted(names, key=list(catalog()).index)


# ---------------------------------------------------------------------------------------------
# Same results everywhere

# One scenario of each kind of row, under every version: an engine row, refcount, BRC, GC,
# a version-restricted row, a known gap, a dict (the whole catalog is ~200 rows, too slow here).
SAME = ["lost-update", "tryincref-zero", "hand-off", "gc-cycle", "qsbr-page-foreign",
        "abandoned-page-goal", "dict-resize-read"]


def test_processes_give_the_results_of_a_serial_run():
    # one version policy (issue 13: the rows, each shrunk, not the budget, set the cost; the
    # process pool does not depend on the version)
    serial = explore(SAME, budget=20, seed=3, version="3.14")
    parallel = explore(SAME, budget=20, seed=3, version="3.14", workers=2)
    assert _essence(parallel) == _essence(serial)


@pytest.mark.slow
def test_processes_give_the_results_of_a_serial_run_for_every_version():
    serial = explore(SAME, budget=40, seed=3)
    parallel = explore(SAME, budget=40, seed=3, workers=2)
    assert _essence(parallel) == _essence(serial)


def test_task_grouping_does_not_change_results(monkeypatch):
    base = explore("lock-order", budget=200, seed=5)
    from ftlab.explore import campaign

    monkeypatch.setattr(campaign, "TASK_SECONDS", 1e-9)  # one batch per task
    assert _essence(explore("lock-order", budget=200, seed=5)) == _essence(base)


def test_dask_cluster_gives_the_results_of_a_serial_run():
    distributed = pytest.importorskip("distributed")
    serial = explore(SAME, budget=15, seed=1, version="3.14")   # one policy (issue 13)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  protocol="tcp", host="127.0.0.1", dashboard_address=None,
                                  silence_logs=logging.WARNING) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        on_dask = explore(SAME, budget=15, seed=1, version="3.14",
                          cluster=cluster.scheduler_address)
    assert _essence(on_dask) == _essence(serial)


def test_cluster_that_does_not_answer_is_bad_input():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from ftlab.explore import backends

    with pytest.raises(ExploreError, match="does not answer"):
        backends.DaskBackend(f"tcp://127.0.0.1:{port}", timeout=1.0)
    with pytest.raises(ExploreError, match="bad cluster address"):
        backends.DaskBackend("http://example")


# ---------------------------------------------------------------------------------------------
# Interruption and resumption

class _Stop(Exception):
    pass


def _count_batches(monkeypatch) -> list:
    calls = []
    real = worker.run_batch

    def counting(spec, scenario, dfs=None):
        calls.append((spec.row, spec.seq))
        return real(spec, scenario, dfs)

    monkeypatch.setattr(worker, "run_batch", counting)
    return calls


def test_interrupted_campaign_resumes_without_losing_or_redoing_work(tmp_path, monkeypatch):
    db = str(tmp_path / "r.sqlite")
    fresh = explore(ENGINE, budget=300, db=str(tmp_path / "fresh.sqlite"))
    calls = _count_batches(monkeypatch)
    from ftlab.explore import campaign

    monkeypatch.setattr(campaign, "TASK_SECONDS", 1e-9)  # one batch per task and commit

    def interrupt(commits: int) -> None:
        if commits == 3:
            raise KeyboardInterrupt

    first = explore(ENGINE, budget=300, db=db, on_commit=interrupt)
    assert first.status == "interrupted" and first.exit_code == 130
    store = Store.open(db, create=False)
    committed = {(r["ord"], b["seq"]) for r in store.rows(first.id) for b in store.batches(r["id"])}
    store.close()
    assert committed

    calls.clear()
    second = explore(ENGINE, budget=300, db=db)  # same parameters: resumes automatically
    assert second.resumed and second.id == first.id and second.status == "done"
    assert _essence(second) == _essence(fresh)
    assert not committed & set(calls)            # nothing committed ran again


def test_resume_skips_exactly_the_committed_batches(tmp_path, monkeypatch):
    db = str(tmp_path / "r.sqlite")
    calls = _count_batches(monkeypatch)
    from ftlab.explore import campaign

    monkeypatch.setattr(campaign, "TASK_SECONDS", 1e-9)  # one batch per task, one per commit

    def interrupt(commits: int) -> None:
        if commits == 5:
            raise KeyboardInterrupt

    first = explore("lock-order", mutations=["none"], budget=200, db=db, on_commit=interrupt,
                    strategies=["random", "pct:1", "pct:2", "pct:3"])
    assert first.status == "interrupted"
    assert len(calls) == 5
    before = set(calls)
    calls.clear()
    second = explore("lock-order", mutations=["none"], budget=200, db=db,
                     strategies=["random", "pct:1", "pct:2", "pct:3"])
    assert second.resumed and second.status == "done"
    assert not before & set(calls)
    # one row per version (issue 12)
    assert len(before) + len(calls) == len(VERSIONS) * len(plan_batches(4, 200, 20))


def test_resume_by_id_uses_the_stored_parameters(tmp_path):
    db = str(tmp_path / "r.sqlite")

    def interrupt(commits: int) -> None:
        raise KeyboardInterrupt

    first = explore("lost-update", budget=120, seed=7, db=db, on_commit=interrupt)
    assert first.status == "interrupted"
    second = explore(resume=first.id, db=db)
    assert second.id == first.id and second.status == "done"
    assert second.params["seed"] == 7
    with pytest.raises(ExploreError, match="already complete"):
        explore(resume=first.id, db=db)
    with pytest.raises(ExploreError, match="no unfinished campaign"):
        explore(resume=True, db=db)


def test_fresh_starts_a_new_campaign(tmp_path):
    db = str(tmp_path / "r.sqlite")
    a = explore("lost-update", budget=40, db=db)
    b = explore("lost-update", budget=40, db=db)          # done: a new campaign
    c = explore("lost-update", budget=40, db=db, resume=False)
    assert len({a.id, b.id, c.id}) == 3
    assert _essence(a) == _essence(b) == _essence(c)


# ---------------------------------------------------------------------------------------------
# Versions (issue 12): every row runs under each version policy; --version narrows

def test_each_row_runs_under_its_own_version(tmp_path):
    db = str(tmp_path / "v.sqlite")
    both = explore("tryincref-zero", budget=20, db=db)
    assert both.params["versions"] == list(VERSIONS)
    assert [r.version for r in both.rows] == [v for v in VERSIONS for _ in range(len(both.rows) // len(VERSIONS))]
    for r in both.rows:
        if r.violation is not None:  # the stored violation replays under the row's version
            assert r.violation["version"] == r.version
    found = [r for r in both.rows if r.mutation]
    assert {r.version for r in found} == set(VERSIONS) and all(r.ok for r in found)
    one = explore("tryincref-zero", budget=20, db=db, version="3.13.0")
    assert {r.version for r in one.rows} == {"3.13.0"} and one.id != both.id
    assert one.row("tryincref-zero", version="3.13.0") is one.rows[0]
    with pytest.raises(KeyError):
        one.row("tryincref-zero", version="3.14")


def test_a_campaign_of_other_versions_never_resumes_it(tmp_path, monkeypatch):
    db = str(tmp_path / "r.sqlite")

    def interrupt(n):
        if n == 1:
            raise KeyboardInterrupt

    first = explore("lost-update", mutations=["none"], budget=60, db=db, on_commit=interrupt,
                    version="3.14")
    assert first.interrupted
    other = explore("lost-update", mutations=["none"], budget=60, db=db, version="3.13.0")
    assert other.id != first.id and not other.resumed and other.rows[0].version == "3.13.0"
    again = explore("lost-update", mutations=["none"], budget=60, db=db, version="3.14")
    assert again.id == first.id and again.resumed and again.rows[0].version == "3.14"


def test_unknown_version_is_refused():
    with pytest.raises(ExploreError, match="unknown version '2.7'"):
        explore("lost-update", version=["3.14", "2.7"], budget=5)
