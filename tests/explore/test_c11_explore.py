"""`ftlab explore --memory-model` (issue 14): rows under SC and C11 side by side, the memory
model in the row parameters and in the stored violations (schema 2, migrated from schema 1)."""

from __future__ import annotations

import io
import json
import sqlite3

import pytest
from rich.console import Console

from ftlab.explore.campaign import explore, plan_rows, violation_target
from ftlab.explore.portfolio import StrategySpec
from ftlab.explore.store import SCHEMA_VERSION, Store
from ftlab.report.table import campaign_table
from ftlab.scenarios import catalog, own_memory_model

MUT = "seqlock-end-read-no-fence"
SMALL = dict(budget=20, batch=5, shrink=False)   # the c11 row finds MUT at schedule 15


def _side_by_side(workers: int = 1, mutations=("none", MUT), **kw):
    return explore("type-cache-c11", mutations=list(mutations), memory_model="c11",
                   workers=workers, **SMALL, **kw)


def _rendered(result) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(campaign_table(result))
    return [line for line in out.getvalue().splitlines() if "type-cache-c11" in line]


@pytest.fixture(scope="module")
def serial():
    return _side_by_side(workers=1)


def test_side_by_side_rows_sc_then_c11(serial):
    r = serial
    assert r.ok and r.exit_code == 0, r.summary()
    got = [(x.mutation, x.memory_model, x.verdict, x.ok) for x in r.rows]
    assert got == [("", "sc", "clean", True), ("", "c11", "clean", True),
                   (MUT, "sc", "not found (needs c11)", True), (MUT, "c11", "found type-cache", True)]
    assert r.row("type-cache-c11", MUT, memory_model="sc").first_detection is None
    assert r.row("type-cache-c11", MUT, memory_model="c11").first_detection == 15
    lines = [" ".join(line.replace("│", " ").split()) for line in _rendered(r)]
    assert [line.split(" 20 ")[0].split(" 15 ")[0] for line in lines] == [
        "type-cache-c11 - 3.14 sc clean", "type-cache-c11 - 3.14 c11 clean",
        f"type-cache-c11 {MUT} 3.14 sc not found (needs c11)",
        f"type-cache-c11 {MUT} 3.14 c11 found type-cache"]
    assert "found type-cache 15 15 (pct:2) #" in lines[3], lines[3]
    assert r.summary() == "4 rows, 3 clean, 1 found"


def test_side_by_side_same_with_two_workers():
    def key(res):
        return [(x.mutation, x.memory_model, x.verdict, x.schedules, x.first_detection,
                 x.detected_by, (x.violation or {}).get("schedule")) for x in res.rows]

    one = _side_by_side(workers=1, mutations=[MUT])
    assert key(one) == key(_side_by_side(workers=2, mutations=[MUT]))
    assert [x.verdict for x in one.rows] == ["not found (needs c11)", "found type-cache"]


def test_default_keeps_each_scenario_in_its_own_model():
    # the default explore: one row per (version, scenario, mutation), none doubled
    cat = catalog()
    specs = [StrategySpec("random")]
    rows = plan_rows(cat, None, None, specs, 10, ["3.14"], None)
    keys = [(p["scenario"], p["mutation"]) for p in rows]
    assert len(keys) == len(set(keys))
    for p in rows:
        assert p["memory_model"] == own_memory_model(cat[p["scenario"]])
    assert {p["scenario"] for p in rows if p["memory_model"] == "c11"} == {
        n for n, s in cat.items() if own_memory_model(s) == "c11"} >= {"type-cache-c11",
                                                                      "list-attach-c11"}
    # --memory-model c11: only the scenarios that need it, each row under sc then c11
    c11 = plan_rows(cat, None, None, specs, 10, ["3.14"], "c11")
    assert {p["scenario"] for p in c11} == {"type-cache-c11", "list-attach-c11"}
    assert [p["memory_model"] for p in c11] == ["sc", "c11"] * (len(c11) // 2)
    for a, b in zip(c11[::2], c11[1::2]):
        assert (a["scenario"], a["mutation"]) == (b["scenario"], b["mutation"])
        assert a.get("needs_c11") == bool(a["mutation"]) and a["expected"] == [] or not a["mutation"]
    # --memory-model sc on an SC scenario: its rows as before
    sc = plan_rows(cat, ["lost-update"], None, specs, 10, ["3.14"], "sc")
    assert sc == [p for p in rows if p["scenario"] == "lost-update"]


def test_dpor_is_dropped_from_c11_rows_and_refused_when_asked():
    from ftlab.explore.portfolio import ExploreError

    cat = catalog()
    dpor = next(n for n, s in cat.items() if s.dpor)
    rows = plan_rows(cat, [dpor], ["none"], None, 10, ["3.14"], "c11")
    assert ["dpor" in p["strategies"] for p in rows] == [True, False]
    with pytest.raises(ExploreError, match="dpor runs under the sc memory model"):
        plan_rows(cat, [dpor], ["none"], [StrategySpec("dpor")], 10, ["3.14"], "c11")


def test_stored_sc_row_of_a_c11_scenario_replays_under_sc():
    v = {"scenario": "type-cache-c11", "version": "3.14", "mutations": [MUT],
         "memory_model": "sc"}
    scenario, config = violation_target(v)
    assert config.memory_model == "sc" and scenario.config["memory_model"] == "sc"
    # a violation stored before the column: the scenario's own model
    scenario, config = violation_target(dict(v, memory_model=None))
    assert config.memory_model == "c11" and scenario is catalog()["type-cache-c11"]


def _cli(capsys, *argv):
    from ftlab import cli

    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_bad_combinations_exit_2(capsys, tmp_path):
    db = tmp_path / "r.sqlite"
    code, _, err = _cli(capsys, "explore", "type-cache-c11", "--memory-model", "c11",
                        "--strategy", "dpor", "--db", db)
    assert code == 2 and len(err.splitlines()) == 1 and "dpor" in err
    code, _, err = _cli(capsys, "explore", "--resume", "--memory-model", "c11", "--db", db)
    assert code == 2 and len(err.splitlines()) == 1 and "memory models" in err
    code, _, err = _cli(capsys, "explore", "--memory-model", "tso", "--db", db)
    assert code == 2 and "tso" in err
    assert not db.exists()


def _dump(path, table: str, skip: str = "") -> list[tuple]:
    con = sqlite3.connect(str(path))
    try:
        cols = [c[1] for c in con.execute(f"PRAGMA table_info({table})") if c[1] != skip]
        return con.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY rowid").fetchall()
    finally:
        con.close()


def test_schema_1_store_is_read_and_migrated(capsys, tmp_path):
    db = tmp_path / "old.sqlite"
    explore("type-cache-c11", mutations=[MUT], db=str(db), workers=1, **SMALL)
    # make it a schema 1 file, as an ftlab before the column wrote it
    con = sqlite3.connect(str(db))
    con.execute("ALTER TABLE violations DROP COLUMN memory_model")
    con.execute("PRAGMA user_version = 1")
    con.commit()
    con.close()
    before = {t: _dump(db, t) for t in ("campaigns", "rows", "batches", "strategy_counts",
                                         "violations")}
    # read-only: nothing written, the column reads as NULL, the scenario's own model is used
    store = Store.open(str(db), create=False)
    v = store.violations()[0]
    store.close()
    assert v["memory_model"] is None and violation_target(v)[1].memory_model == "c11"
    assert sqlite3.connect(str(db)).execute("PRAGMA user_version").fetchone()[0] == 1
    code, out, _ = _cli(capsys, "report", "--db", db)
    assert code in (0, 1) and "c11" in out
    # opened for writing: migrated, nothing stored lost or changed
    Store.open(str(db), create=False, write=True).close()
    con = sqlite3.connect(str(db))
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert con.execute("SELECT memory_model FROM violations").fetchall() == [(None,)]
    con.close()
    after = {t: _dump(db, t, skip="memory_model") for t in before}
    assert after == before
    code, out, _ = _cli(capsys, "replay", v["id"], "--db", db)
    assert code == 1 and "memory model c11" in out
    # a new campaign in the migrated file stores its rows' models
    explore("type-cache-c11", mutations=[MUT], memory_model="c11", db=str(db), workers=1,
            **SMALL)
    con = sqlite3.connect(str(db))
    models = con.execute("SELECT memory_model FROM violations ORDER BY id").fetchall()
    con.close()
    assert models == [(None,), ("c11",)]
    rows = json.loads(Store.open(str(db), create=False).campaigns()[-1]["params"])["rows"]
    assert [r["memory_model"] for r in rows] == ["sc", "c11"]


def test_run_a_c11_scenario_under_sc(capsys):
    # the SC twin of a c11 row runs from the command line too, and names its model
    code, out, _ = _cli(capsys, "run", "type-cache-c11", "--memory-model", "sc",
                        "--mutate", MUT, "--runs", "3")
    assert code == 0 and "no violation" in out


def test_flag_model_is_stored_replayed_and_shrunk(capsys, tmp_path):
    # an SC scenario explored under c11 by the flag: each row's violation keeps its own model,
    # the campaign shrinks it in that model, and `replay ID` runs it there
    db = tmp_path / "r.sqlite"
    code, out, _ = _cli(capsys, "explore", "message-passing", "--memory-model", "c11",
                        "--mutate", "relaxed-message", "--budget", "40", "--workers", "1",
                        "--db", db)
    assert code == 0, out
    store = Store.open(str(db), create=False)
    vs = {v["memory_model"]: v for v in store.violations() if v["decisive"]}
    store.close()
    assert set(vs) == {"sc", "c11"}
    for model, v in vs.items():
        assert v["shrunk_schedule"], f"the {model} row's counterexample was not shrunk"
        code, out, _ = _cli(capsys, "replay", v["id"], "--db", db)
        assert code == 1 and (("memory model c11" in out) == (model == "c11")), out
