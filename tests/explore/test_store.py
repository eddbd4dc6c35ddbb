"""The campaign store: our schema and marks, and refusal (byte for byte untouched) of anything
that is not ours."""

from __future__ import annotations

import sqlite3

import pytest

from ftlab.explore.portfolio import ExploreError
from ftlab.explore.store import APPLICATION_ID, SCHEMA_VERSION, Store


def test_new_store_is_marked_as_ours(tmp_path):
    path = tmp_path / "sub" / "r.sqlite"
    Store.open(path).close()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"campaigns", "rows", "batches", "strategy_counts", "violations"} <= tables
    con.close()
    Store.open(path).close()  # and opens again


def test_read_only_open_does_not_create_a_file(tmp_path):
    path = tmp_path / "missing.sqlite"
    with pytest.raises(ExploreError, match="no results database"):
        Store.open(path, create=False)
    assert not path.exists()


def _foreign_sqlite(path, app_id=0, user_version=0, our_tables=False):
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES (1)")
    if our_tables:
        con.execute("CREATE TABLE campaigns (id)")
    con.execute(f"PRAGMA application_id = {app_id}")
    con.execute(f"PRAGMA user_version = {user_version}")
    con.commit()
    con.close()


def _corrupt(path):
    _foreign_sqlite(path, APPLICATION_ID, 1)
    data = bytearray(path.read_bytes())
    data[100:len(data)] = b"\xff" * (len(data) - 100)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("name,value\na,1\n"), "not an SQLite database"),
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: _foreign_sqlite(p), "another application"),
    (lambda p: _foreign_sqlite(p, app_id=1234), "another application"),
    (lambda p: _foreign_sqlite(p, APPLICATION_ID, SCHEMA_VERSION + 1, our_tables=True), "newer ftlab"),
    (lambda p: _foreign_sqlite(p, APPLICATION_ID, 0, our_tables=True), "unknown ftlab schema"),
    (_corrupt, "damaged"),
])
def test_foreign_or_corrupt_file_is_refused_and_left_untouched(tmp_path, make, message):
    path = tmp_path / "results.sqlite"
    make(path)
    before = path.read_bytes()
    listing = sorted(p.name for p in tmp_path.iterdir())
    for create in (True, False):
        with pytest.raises(ExploreError, match=message):
            Store.open(path, create=create)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing


def test_directory_is_refused(tmp_path):
    with pytest.raises(ExploreError, match="is a directory"):
        Store.open(tmp_path)


def test_path_under_a_file_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ExploreError, match="cannot create"):
        Store.open(blocker / "r.sqlite")
