"""Random damage to a copy of a real results database, then every command on it: never a
traceback, never exit 3, and a refusal (exit 2) leaves the file byte for byte as it was.

The damage: a value replaced (any SQLite type, malformed or misshapen JSON), a record deleted,
a table or column dropped, the schema version or application id changed, the file cut short,
bytes overwritten, a stray journal beside it."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ftlab import cli
from ftlab.explore.campaign import explore
from ftlab.explore.store import _expected_columns

FAST, MANY = 30, 300
_HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
COLUMNS = [(t, c[0]) for t, cs in _expected_columns().items() for c in cs]
TABLES = sorted(_expected_columns())


@pytest.fixture(scope="module")
def real_db(tmp_path_factory) -> Path:
    """Two campaigns: one done, with shrunk counterexamples (#1, #2); one interrupted, with
    pending rows, committed batches and a DFS frontier."""
    path = tmp_path_factory.mktemp("fuzz") / "r.sqlite"
    assert cli.main(["explore", "lost-update", "lock-order", "--budget", "40", "--workers", "1",
                     "--db", str(path)]) == 0

    def stop(commits: int) -> None:
        if commits == 3:
            raise KeyboardInterrupt

    r = explore("message-passing", budget=400, db=str(path), on_commit=stop,
                strategies=["random", "pct:1", "pct:2", "pct:3", "dfs"])   # DPOR ends it early
    assert r.status == "interrupted"
    return path


_json_junk = st.sampled_from(['{', '[1,', '{"a":', 'nul', '"', "[]", "{}", "null", "1", '"x"',
                              '[{"kind": 1}]', '{"rows": []}', '{"rows": [{}]}', "NaN", "1e999",
                              '[' * 50, '{"seed": -1}'])
_values = st.one_of(st.none(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True),
                    st.text(max_size=30), st.binary(max_size=30), _json_junk)

_damage = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(COLUMNS), st.integers(0, 40), _values),
    st.tuples(st.just("delete"), st.sampled_from(TABLES), st.integers(0, 40)),
    st.tuples(st.just("drop table"), st.sampled_from(TABLES)),
    st.tuples(st.just("drop column"), st.sampled_from(COLUMNS)),
    st.tuples(st.just("pragma"), st.sampled_from(["user_version", "application_id"]),
              st.integers(-2**31, 2**31 - 1)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("overwrite"), st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("journal"), st.binary(max_size=2048)),
)

_commands = st.sampled_from([
    ["explore", "lost-update", "lock-order", "--budget", "40", "--workers", "1"],
    ["explore", "--resume"],
    ["shrink", "1", "--max-runs", "30"],
    ["report"],
    ["report", "--html", "{out}"],
    ["report", "--campaign", "2"],
    ["replay", "1"],
    ["replay", "2", "--original"],
])


def _apply(path: Path, damage: tuple) -> str:
    """Damage the copy at `path`; a description of what was done."""
    kind = damage[0]
    if kind in ("truncate", "overwrite"):
        data = bytearray(path.read_bytes())
        at = int(damage[1] * len(data))
        if kind == "truncate":
            path.write_bytes(bytes(data[:at]))
            return f"cut to {at} bytes"
        data[at:at + len(damage[2])] = damage[2]
        path.write_bytes(bytes(data))
        return f"{len(damage[2])} bytes overwritten at {at}"
    if kind == "journal":
        path.with_name(path.name + "-journal").write_bytes(damage[1])
        return f"a journal of {len(damage[1])} random bytes"
    con = sqlite3.connect(path)
    try:
        if kind == "set":
            (table, column), n, value = damage[1], damage[2], damage[3]
            rowids = [r[0] for r in con.execute(f"SELECT rowid FROM {table} ORDER BY rowid")]
            if not rowids:
                return "nothing to change"
            con.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?",
                        (value, rowids[n % len(rowids)]))
            what = f"{table}.{column} = {value!r:.40}"
        elif kind == "delete":
            table, n = damage[1], damage[2]
            rowids = [r[0] for r in con.execute(f"SELECT rowid FROM {table} ORDER BY rowid")]
            if not rowids:
                return "nothing to delete"
            con.execute(f"DELETE FROM {table} WHERE rowid = ?", (rowids[n % len(rowids)],))
            what = f"a record of {table} deleted"
        elif kind == "drop table":
            con.execute(f"DROP TABLE {damage[1]}")
            what = f"table {damage[1]} dropped"
        elif kind == "drop column":
            table, column = damage[1]
            con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
            what = f"column {table}.{column} dropped"
        else:
            con.execute(f"PRAGMA {damage[1]} = {damage[2]}")
            what = f"{damage[1]} = {damage[2]}"
        con.commit()
        return what
    except sqlite3.Error as e:   # a constraint that SQLite itself enforces: no damage done
        return f"refused by SQLite ({e})"
    finally:
        con.close()


def _property(capsys, real_db, tmp_path_factory, damage, command):
    d = tmp_path_factory.mktemp("damaged")
    path = d / "r.sqlite"
    shutil.copy(real_db, path)
    what = _apply(path, damage)
    before = path.read_bytes()
    journal = path.with_name(path.name + "-journal")
    argv = [a.replace("{out}", str(d / "r.html")) for a in command]
    code = cli.main([*argv, "--db", str(path)])
    out, err = capsys.readouterr()
    event(f"{damage[0]}: exit {code}")
    assert code in (0, 1, 2), (what, argv, code, err)
    assert "Traceback" not in err and "internal error" not in err, (what, argv, err)
    if code == 2:
        lines = [x for x in err.strip().splitlines() if x.startswith("ftlab: ")]
        assert len(lines) == 1, (what, argv, err)
        # A refusal writes nothing; the one exception is SQLite's recovery of a journal, which
        # restores the last commit (and leaves no journal behind).
        assert path.read_bytes() == before or (damage[0] == "journal" and not journal.exists()), \
            (what, argv, err)


def _settings(n):
    return settings(max_examples=n, deadline=None, suppress_health_check=_HEALTH, database=None)


@_settings(FAST)
@given(damage=_damage, command=_commands)
def test_damaged_store_never_crashes_and_refusal_changes_nothing(capsys, real_db, tmp_path_factory,
                                                                  damage, command):
    _property(capsys, real_db, tmp_path_factory, damage, command)


@pytest.mark.slow
@_settings(MANY)
@given(damage=_damage, command=_commands)
def test_damaged_store_never_crashes_and_refusal_changes_nothing_many(capsys, real_db,
                                                                       tmp_path_factory, damage,
                                                                       command):
    _property(capsys, real_db, tmp_path_factory, damage, command)
