"""Every way a results file can be unusable, through the `ftlab` command: one line naming the
file and what is wrong, exit 2, and the file byte for byte as it was. Reading commands keep
working on files they cannot write."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ftlab import cli
from ftlab.explore import store as store_mod
from ftlab.explore.store import _SCHEMA, Store, StoreError, _expected_columns

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGN = ["lost-update", "--budget", "60", "--workers", "1"]


def _writers(out: Path) -> list[list[str]]:
    return [["explore", *CAMPAIGN], ["shrink", "1"]]


def _readers(out: Path) -> list[list[str]]:
    return [["report"], ["report", "--html", str(out / "r.html")], ["replay", "1"]]


def _main(capsys, argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _refused(capsys, path: Path, argv, match: str = "") -> str:
    before = path.read_bytes()
    listing = sorted(p.name for p in path.parent.iterdir())
    code, out, err = _main(capsys, [*argv, "--db", path])
    assert code == 2, (argv, code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ftlab: {path}"), err
    assert match in err, err
    assert path.read_bytes() == before, f"{argv} changed the file"
    assert sorted(p.name for p in path.parent.iterdir()) == listing
    return err


@pytest.fixture(scope="module")
def real_db(tmp_path_factory) -> Path:
    """A store with one finished campaign and a shrunk counterexample (#1)."""
    path = tmp_path_factory.mktemp("real") / "r.sqlite"
    assert cli.main(["explore", *CAMPAIGN, "--db", str(path)]) == 0
    con = sqlite3.connect(path)
    assert con.execute("SELECT shrunk_schedule FROM violations WHERE id = 1").fetchone()[0]
    con.close()
    return path


@pytest.fixture
def copy(real_db, tmp_path) -> Path:
    p = tmp_path / "r.sqlite"
    shutil.copy(real_db, p)
    return p


def _damage(path: Path, *sql: str) -> None:
    con = sqlite3.connect(path)
    for s in sql:
        con.execute(s)
    con.commit()
    con.close()


# ---------------------------------------------------------------------------------------------
# Damaged contents

_COLUMNS = [(t, c[0]) for t, cs in _expected_columns().items() for c in cs]


@pytest.mark.parametrize("table", sorted(_expected_columns()))
def test_missing_table_is_refused_by_every_command(capsys, copy, table):
    _damage(copy, f"DROP TABLE {table}")
    for argv in _writers(copy.parent) + _readers(copy.parent):
        _refused(capsys, copy, argv, f"table {table!r} is missing")


def test_every_missing_column_is_refused_before_anything_is_written(copy):
    for table, column in _COLUMNS:
        p = copy.with_name(f"{table}.{column}.sqlite")
        shutil.copy(copy, p)
        try:
            _damage(p, f"ALTER TABLE {table} DROP COLUMN {column}")
        except sqlite3.OperationalError:   # a key or indexed column cannot be dropped:
            _damage(p, f"ALTER TABLE {table} RENAME COLUMN {column} TO x_{column}")
        before = p.read_bytes()
        for write in (True, False):
            with pytest.raises(StoreError, match=f"column {table}.{column} is missing"):
                Store.open(p, write=write)
        assert p.read_bytes() == before


@pytest.mark.parametrize("table, column", [
    ("campaigns", "params"), ("rows", "expected"), ("rows", "strategies"),
    ("batches", "violations"), ("violations", "mutations"), ("violations", "details"),
])
def test_malformed_json_in_any_column_is_refused(capsys, copy, table, column):
    _damage(copy, f"UPDATE {table} SET {column} = '{{\"unclosed\": [' WHERE rowid = 1")
    for argv in _writers(copy.parent) + _readers(copy.parent):
        _refused(capsys, copy, argv, f"malformed JSON in {table}.{column}")


@pytest.mark.parametrize("sql, match", [
    ("UPDATE campaigns SET params = '[]'", "campaigns.params"),
    ("UPDATE campaigns SET params = json_set(params, '$.rows[0].budget', -3)", "budget"),
    ("UPDATE campaigns SET params = json_set(params, '$.rows[0].strategies', json('[\"zzz\"]'))",
     "unknown strategy"),
    ("UPDATE campaigns SET params = json_set(params, '$.versions', json('[\"2.7\"]'))",
     "unknown version '2.7'"),
    ("UPDATE campaigns SET params = json_set(params, '$.rows[0].version', '3.12')",
     "unknown version '3.12'"),
    ("UPDATE rows SET budget = 'many'", "rows.budget holds a text value"),
    ("UPDATE rows SET ord = 7 WHERE ord = 1", "not those of its parameters"),
    ("UPDATE rows SET status = 'exploding'", "unknown status"),
    ("UPDATE rows SET violation_id = 99", "counterexample is missing"),
    ("DELETE FROM campaigns", "a row of no campaign"),
    ("UPDATE batches SET violations = '[{\"kind\": 3}]'", "batches.violations"),
    ("UPDATE batches SET decisive = ran + 1 WHERE rowid = 1", "negative counts"),
    ("UPDATE violations SET details = '{}'", "violations.details"),
    ("UPDATE batches SET dfs_state = x'00ff'", "dfs_state"),
    ("PRAGMA user_version = 3", "newer ftlab"),  # schema 2: violations.memory_model (c11)
    ("PRAGMA user_version = 0", "unknown ftlab schema"),
    ("PRAGMA application_id = 7", "another application"),
])
def test_damaged_values_are_refused(capsys, copy, sql, match):
    _damage(copy, sql)
    for argv in _writers(copy.parent) + _readers(copy.parent):
        _refused(capsys, copy, argv, match)


def test_truncated_file_is_refused_wherever_it_is_cut(capsys, copy):
    data = copy.read_bytes()
    page = int.from_bytes(data[16:18], "big")
    for cut in (5, 99, 100, 1000, page, page + 7, len(data) - page, len(data) - 1):
        copy.write_bytes(data[:cut])
        for argv in _writers(copy.parent) + _readers(copy.parent):
            _refused(capsys, copy, argv, "truncated")


# ---------------------------------------------------------------------------------------------
# Read-only files, directories and file systems

CAP_DAC_OVERRIDE = 1


def _caps(new_effective: int | None = None) -> int:
    """The calling thread's effective capabilities (capget/capset, version 3); with
    `new_effective`, set them (within the permitted set) and return the old ones."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    header = Header(0x20080522, 0)
    data = (Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    old = data[0].effective | (data[1].effective << 32)
    if new_effective is not None:
        data[0].effective = new_effective & 0xFFFFFFFF
        data[1].effective = new_effective >> 32
        if libc.capset(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capset")
    return old


@contextlib.contextmanager
def _unprivileged():
    """Mode bits bind root only without CAP_DAC_OVERRIDE: drop it from this thread's effective
    set (it stays permitted, and is given back after). Root still owns the files, so the owner's
    bits are what apply, as for any user on their own read-only file."""
    if os.geteuid() != 0:
        yield
        return
    old = _caps()
    _caps(old & ~(1 << CAP_DAC_OVERRIDE))
    try:
        yield
    finally:
        _caps(old)


@pytest.fixture
def world(real_db, tmp_path):
    """A copy of the store in a directory of its own, and one for output."""
    d = tmp_path / "store"
    out = tmp_path / "out"
    d.mkdir()
    out.mkdir()
    shutil.copy(real_db, d / "r.sqlite")
    try:
        yield d / "r.sqlite", out
    finally:
        os.chmod(d, 0o755)


@pytest.mark.parametrize("file_mode, dir_mode, match", [
    (0o444, 0o755, "a read-only file"),
    (0o444, 0o555, "a read-only file"),
    (0o644, 0o555, "directory that is not writable"),
])
def test_read_only_file_or_directory_refuses_writers_and_serves_readers(capsys, world, file_mode,
                                                                          dir_mode, match):
    path, out = world
    with _unprivileged():
        os.chmod(path, file_mode)
        os.chmod(path.parent, dir_mode)
        for argv in _writers(out):
            _refused(capsys, path, argv, match)
        for argv in _readers(out):
            before = path.read_bytes()
            code, stdout, err = _main(capsys, [*argv, "--db", path])
            assert code in (0, 1), (argv, err)
            assert path.read_bytes() == before
        assert (out / "r.html").read_text().startswith("<!DOCTYPE html>")


def _unshare_works() -> bool:
    if not shutil.which("unshare") or os.geteuid() != 0:
        return False
    p = subprocess.run(["unshare", "--mount", "sh", "-c", "mount --bind /tmp /tmp && "
                        "mount -o remount,ro,bind /tmp && ! touch /tmp/.ftlab-ro-probe"],
                       capture_output=True, timeout=30)
    return p.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs root and a private mount namespace "
                    "(unshare --mount) to mount a read-only file system")
def test_read_only_file_system_refuses_writers_and_serves_readers(world):
    """A real read-only file system: the store's directory bind-mounted read-only in a private
    mount namespace (nothing outside this command sees the mount)."""
    path, out = world
    before = path.read_bytes()
    d = path.parent
    for argv in _writers(out) + _readers(out):
        cmd = " ".join(f"'{a}'" for a in [sys.executable, "-m", "ftlab", *argv, "--db", str(path)])
        p = subprocess.run(["unshare", "--mount", "sh", "-c",
                            f"mount --bind {d} {d} && mount -o remount,ro,bind {d} && {cmd}"],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
        if argv in _writers(out):
            assert p.returncode == 2, (argv, p.stderr)
            assert p.stderr.strip() == (f"ftlab: {path}: on a read-only file system; `ftlab "
                                        "report` and `ftlab replay` can still read it; refusing "
                                        "to use it (nothing was written)"), p.stderr
        else:
            assert p.returncode in (0, 1), (argv, p.stderr)
        assert path.read_bytes() == before


# ---------------------------------------------------------------------------------------------
# Another writer's lock

def test_lock_held_past_the_timeout_is_refused(capsys, copy, monkeypatch):
    monkeypatch.setattr(store_mod, "LOCK_TIMEOUT", 0.2)
    other = sqlite3.connect(copy, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")    # another process in the middle of a long commit
    try:
        for argv in _writers(copy.parent) + _readers(copy.parent):
            _refused(capsys, copy, argv, "locked by another process for more than 0.2 s")
        other.execute("ROLLBACK")
        other.execute("BEGIN IMMEDIATE")  # another writer: readers go on, writers are refused
        for argv in _writers(copy.parent):
            _refused(capsys, copy, argv, "locked by another process")
        for argv in _readers(copy.parent):
            assert _main(capsys, [*argv, "--db", copy])[0] in (0, 1)
    finally:
        other.close()


# ---------------------------------------------------------------------------------------------
# A writer killed in the middle of a commit

def _kill_mid_commit(path: Path) -> None:
    """A process that dies (SIGKILL) halfway through a big transaction, leaving a hot journal."""
    code = ("import os, signal, sqlite3\n"
            f"c = sqlite3.connect({str(path)!r}); c.execute('PRAGMA cache_size = 1')\n"
            "c.execute('BEGIN')\n"
            "c.execute('UPDATE violations SET message = hex(randomblob(300))')\n"
            "c.execute('CREATE TABLE spill (x)')\n"
            "for i in range(20000): c.execute('INSERT INTO spill VALUES (hex(randomblob(60)))')\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", code], timeout=120)
    # Hot: the cache spilled (the file itself half-written), which a read-only connection
    # cannot undo.
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        con.execute("SELECT count(*) FROM violations").fetchone()
    con.close()


def test_killed_writer_journal_is_rolled_back_and_the_store_reads_as_committed(capsys, copy):
    con = sqlite3.connect(copy)
    committed = con.execute("SELECT * FROM violations ORDER BY id").fetchall()
    con.close()
    _kill_mid_commit(copy)
    code, out, err = _main(capsys, ["report", "--db", copy])
    assert code == 0, err
    con = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT * FROM violations ORDER BY id").fetchall() == committed
    con.close()


def test_killed_writer_journal_on_a_read_only_file_is_refused(capsys, world):
    path, out = world
    _kill_mid_commit(path)
    with _unprivileged():
        os.chmod(path, 0o444)
        for argv in _writers(out) + _readers(out):
            _refused(capsys, path, argv, "unfinished transaction")


# ---------------------------------------------------------------------------------------------
# The checks themselves

def test_schema_check_knows_every_table_of_the_schema():
    assert set(_expected_columns()) == {"campaigns", "rows", "batches", "strategy_counts",
                                        "violations"}
    assert _SCHEMA.count("CREATE TABLE") == 5


def test_a_store_we_wrote_passes_every_check(real_db):
    before = real_db.read_bytes()
    for write in (True, False):
        Store.open(real_db, write=write).close()
    assert real_db.read_bytes() == before


def test_lock_taken_in_the_middle_of_a_campaign_is_bad_input_naming_the_file(tmp_path, monkeypatch):
    from ftlab.explore.campaign import explore

    monkeypatch.setattr(store_mod, "LOCK_TIMEOUT", 0.2)
    db = tmp_path / "r.sqlite"
    other = []

    def lock_it(commits: int) -> None:
        if commits == 1:
            con = sqlite3.connect(db, isolation_level=None)
            con.execute("BEGIN EXCLUSIVE")
            other.append(con)

    try:
        with pytest.raises(StoreError, match=f"{db}: cannot write it: locked by another process"):
            explore("lost-update", budget=200, db=str(db), on_commit=lock_it)
    finally:
        for con in other:
            con.close()
    # What was committed before is kept, and the campaign resumes.
    assert explore("lost-update", budget=200, db=str(db)).resumed
