"""The campaign store: one SQLite file (stdlib sqlite3) that keeps every result.

Tables (schema version `SCHEMA_VERSION`, in `PRAGMA user_version`; the file is marked as ours
by `PRAGMA application_id` = `APPLICATION_ID`, "FTLB"):

- `campaigns`: the parameters (JSON, and their hash `key`), ftlab version, status
  (`running`, `interrupted`, `done`), wall time, outcome.
- `rows`: one per (scenario, mutation) of a campaign: expected kinds, strategies, budget,
  status (`pending`, `shrinking`, `done`), verdict, schedules run, schedules to detection.
- `batches`: every batch result, committed as it arrives; a resumed campaign reruns nothing
  that is here. A DFS batch keeps the frontier it left, so the chain resumes from it.
- `strategy_counts`: per row and strategy: schedules, steps, violations, detection.
- `violations`: every violation counted in a row, with its schedule and, for the decisive
  one, the shrunk schedule. Its `id` is what `ftlab replay ID` and `ftlab shrink ID` take.
  Its `memory_model` (schema 2) is the model its row ran under; NULL in a violation stored
  before the column, whose row ran under the scenario's own model.

Schema 1 files (no `violations.memory_model`) are read as they are (the column reads as NULL)
and migrated when opened for writing: the column is added, NULL everywhere, in one transaction
with the new `user_version`; nothing stored changes (`_MIGRATIONS`).

Opening refuses, without writing a byte, anything it cannot use (`StoreError`, exit 2, one
line naming the file and what is wrong): a file that is not SQLite, a SQLite database with
another application id, one from a newer ftlab, a truncated or damaged file, a missing table or
column, a value of the wrong type, malformed JSON in any column, references that lead nowhere;
for writing also a read-only file, directory or file system, and a lock that another process
holds for more than `LOCK_TIMEOUT`. All of it is checked before the first write. A read-only
open (`ftlab report`, `ftlab replay ID`) never creates the file and works on read-only files.

The one write before the checks is SQLite's own recovery: a journal left by a process killed
in the middle of a commit is rolled back (restoring the last commit), as any connection that
can write would do on its first read. A campaign survives a kill anywhere: every commit is one
transaction, so a batch is stored whole or not at all, and counted once.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterable

from ftlab.explore.portfolio import ExploreError

APPLICATION_ID = 0x46544C42  # "FTLB"
SCHEMA_VERSION = 2
DEFAULT_DB = Path(".ftlab") / "results.sqlite"
LOCK_TIMEOUT = 10.0          # seconds to wait for another process's lock before refusing
_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE campaigns (
    id            INTEGER PRIMARY KEY,
    key           TEXT NOT NULL,
    params        TEXT NOT NULL,
    ftlab_version TEXT NOT NULL,
    started       TEXT NOT NULL,
    updated       TEXT NOT NULL,
    status        TEXT NOT NULL,
    wall_seconds  REAL NOT NULL DEFAULT 0,
    ok            INTEGER
);
CREATE INDEX campaigns_key ON campaigns(key);
CREATE TABLE rows (
    id              INTEGER PRIMARY KEY,
    campaign_id     INTEGER NOT NULL REFERENCES campaigns(id),
    ord             INTEGER NOT NULL,
    scenario        TEXT NOT NULL,
    mutation        TEXT NOT NULL,
    expected        TEXT NOT NULL,
    strategies      TEXT NOT NULL,
    budget          INTEGER NOT NULL,
    status          TEXT NOT NULL,
    verdict         TEXT,
    ok              INTEGER,
    schedules       INTEGER,
    first_detection INTEGER,
    detected_by     TEXT,
    exhausted       INTEGER,
    violation_id    INTEGER,
    seconds         REAL NOT NULL DEFAULT 0,
    UNIQUE (campaign_id, ord)
);
CREATE TABLE batches (
    row_id     INTEGER NOT NULL REFERENCES rows(id),
    seq        INTEGER NOT NULL,
    ran        INTEGER NOT NULL,
    steps      INTEGER NOT NULL,
    decisive   INTEGER,
    others     INTEGER NOT NULL,
    exhausted  INTEGER NOT NULL,
    dfs_state  BLOB,
    violations TEXT NOT NULL,
    seconds    REAL NOT NULL,
    PRIMARY KEY (row_id, seq)
);
CREATE TABLE strategy_counts (
    row_id          INTEGER NOT NULL REFERENCES rows(id),
    strategy        TEXT NOT NULL,
    seed            INTEGER,
    schedules       INTEGER NOT NULL,
    steps           INTEGER NOT NULL,
    violations      INTEGER NOT NULL,
    first_detection INTEGER,
    exhausted       INTEGER NOT NULL,
    PRIMARY KEY (row_id, strategy)
);
CREATE TABLE violations (
    id                 INTEGER PRIMARY KEY,
    campaign_id        INTEGER REFERENCES campaigns(id),
    row_id             INTEGER REFERENCES rows(id),
    scenario           TEXT NOT NULL,
    mutations          TEXT NOT NULL,
    version            TEXT NOT NULL,
    strategy           TEXT,
    execution          INTEGER,
    kind               TEXT NOT NULL,
    message            TEXT NOT NULL,
    thread             TEXT,
    step               INTEGER,
    details            TEXT NOT NULL,
    schedule           TEXT,
    steps              INTEGER,
    decisions          INTEGER,
    preemptions        INTEGER,
    decisive           INTEGER NOT NULL,
    shrunk_schedule    TEXT,
    shrunk_steps       INTEGER,
    shrunk_preemptions INTEGER,
    shrunk_decisions   INTEGER,
    shrink_runs        INTEGER,
    shrink_note        TEXT,
    memory_model       TEXT
);
CREATE INDEX violations_row ON violations(row_id);
"""


# c11 memory model (issue 14): the columns each schema version added, as (table, column, SQL
# type). A file of an older version lacks them: reading gives NULL, writing adds them first.
_MIGRATIONS = {2: (("violations", "memory_model", "TEXT"),)}


def _added_since(version: int) -> set[tuple[str, str]]:
    return {(t, c) for v, cols in _MIGRATIONS.items() if v > version for t, c, _ in cols}


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class StoreError(ExploreError):
    """A results database that cannot be used as it is: bad input (exit 2), with a message that
    names the file and what is wrong with it."""


def _refuse(path: Path, why: str) -> StoreError:
    return StoreError(f"{path}: {why}; refusing to use it (nothing was written)")


def _sqlite_why(e: sqlite3.Error) -> str:
    text = str(e)
    if "locked" in text or "busy" in text:
        return f"locked by another process for more than {LOCK_TIMEOUT:g} s"
    if "readonly" in text or "read-only" in text:
        return "not writable (a read-only file, directory or file system)"
    if "malformed" in text or "not a database" in text or "disk I/O" in text:
        return f"damaged ({text})"
    return text


# ---------------------------------------------------------------------------------------------
# Checking a file before use
#
# Everything below reads only. It runs on every open of an existing file, before the first
# write, so that a damaged store is refused as it is instead of failing halfway through a
# campaign: the SQLite file itself (header, size, `PRAGMA quick_check`), our marks, the schema
# (every table and column, the type of every value), every JSON column parsed and its shape
# checked, and the references between tables that a campaign follows.

_JSON_COLUMNS = (("campaigns", "params"), ("rows", "expected"), ("rows", "strategies"),
                 ("batches", "violations"), ("violations", "mutations"),
                 ("violations", "details"))
_CAMPAIGN_STATUS = ("running", "interrupted", "done")
_ROW_STATUS = ("pending", "shrinking", "done")
_MAX_COUNT = 10**9          # the CLI's bound on budgets and batch sizes


def _expected_columns() -> dict[str, list[tuple[str, str, bool]]]:
    """{table: [(column, declared type, NOT NULL)]} of `_SCHEMA`."""
    con = sqlite3.connect(":memory:")
    try:
        con.executescript(_SCHEMA)
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: [(c[1], c[2], bool(c[3]) or bool(c[5] and c[2] == "INTEGER"))
                    for c in con.execute(f"PRAGMA table_info({t})")] for t in tables}
    finally:
        con.close()


_TYPEOF = {"INTEGER": ("integer",), "REAL": ("real", "integer"), "TEXT": ("text",),
           "BLOB": ("blob",)}


def _check_header(path: Path, head: bytes, size: int) -> str | None:
    """The file's size against its header: a truncated file is refused before SQLite reads
    past its end (which it would take for zeroes)."""
    if len(head) < 100:
        return f"truncated ({size} bytes, shorter than an SQLite header)"
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    if page < 512 or page & (page - 1):
        return f"damaged (page size {page} in its header)"
    if size % page:
        return f"truncated or damaged ({size} bytes, not a whole number of {page}-byte pages)"
    pages = int.from_bytes(head[28:32], "big")
    valid = head[24:28] == head[92:96]      # the in-header size is valid (SQLite ≥ 3.7.0)
    if valid and pages and pages * page != size:
        return f"truncated ({size} bytes; its header says {pages * page})"
    return None


def _shape_params(p: Any) -> str | None:
    from ftlab.config import VERSIONS

    if not isinstance(p, dict):
        return "not an object"
    for k in ("seed", "batch", "shrink_runs"):
        if not _is_int(p.get(k), 0 if k == "seed" else 1, 2**32 - 1 if k == "seed" else _MAX_COUNT):
            return f"{k!r} is {p.get(k)!r}"
    # Campaigns store the list of versions they run (each row names its own); older ones a
    # single "version" that every row ran under.
    versions = p.get("versions", [p.get("version")])
    if not isinstance(versions, list) or not versions:
        return f"'versions' is {versions!r}"
    for v in versions:
        if v not in VERSIONS:
            return f"unknown version {v!r}"
    if not isinstance(p.get("shrink"), bool):
        return f"'shrink' is {p.get('shrink')!r}"
    rows = p.get("rows")
    if not isinstance(rows, list) or not rows:
        return "no list of rows"
    for i, r in enumerate(rows):
        why = _shape_row_params(r)
        if why:
            return f"row {i}: {why}"
    return None


def _shape_row_params(r: Any) -> str | None:
    from ftlab.config import VERSIONS
    from ftlab.explore.portfolio import parse_spec

    if not isinstance(r, dict):
        return "not an object"
    if not isinstance(r.get("scenario"), str) or not isinstance(r.get("mutation"), str):
        return "no scenario or mutation name"
    if "version" in r and r["version"] not in VERSIONS:
        return f"unknown version {r['version']!r}"
    if "memory_model" in r and r["memory_model"] not in ("sc", "c11"):
        return f"unknown memory model {r['memory_model']!r}"
    if not _is_str_list(r.get("expected")):
        return "'expected' is not a list of names"
    strategies = r.get("strategies")
    if not _is_str_list(strategies) or not strategies:
        return "'strategies' is not a list of strategies"
    for s in strategies:
        try:
            parse_spec(s)
        except ExploreError as e:
            return str(e)
    if not _is_int(r.get("budget"), 1, _MAX_COUNT) or not _is_int(r.get("pct_steps"), 0, _MAX_COUNT):
        return "bad budget or pct_steps"
    return None


_BATCH_VIOLATION = {"execution": int, "kind": str, "message": str, "thread": (str, type(None)),
                    "step": int, "details": list, "schedule": (str, type(None)), "steps": int,
                    "decisions": int, "preemptions": int, "decisive": bool}


def _shape_batch_violations(vs: Any) -> str | None:
    if not isinstance(vs, list):
        return "not a list"
    for v in vs:
        if not isinstance(v, dict):
            return "an entry that is not an object"
        for k, t in _BATCH_VIOLATION.items():
            if k not in v or not isinstance(v[k], t) or (t is int and isinstance(v[k], bool)):
                return f"an entry whose {k!r} is {v.get(k)!r}"
    return None


def _is_int(x: Any, lo: int, hi: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi


def _is_str_list(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(s, str) for s in x)


_SHAPES = {("campaigns", "params"): _shape_params,
           ("rows", "expected"): lambda x: None if _is_str_list(x) else "not a list of names",
           ("rows", "strategies"): lambda x: None if _is_str_list(x) else "not a list of names",
           ("batches", "violations"): _shape_batch_violations,
           ("violations", "mutations"): lambda x: None if _is_str_list(x) else "not a list of names",
           ("violations", "details"): lambda x: None if isinstance(x, list) else "not a list"}

# Rows a campaign cannot use, as (what is wrong, query returning the offending rowid).
_RELATIONS = (
    ("a row of no campaign",
     "SELECT r.id FROM rows r LEFT JOIN campaigns c ON c.id = r.campaign_id WHERE c.id IS NULL"),
    ("a batch of no row",
     "SELECT b.rowid FROM batches b LEFT JOIN rows r ON r.id = b.row_id WHERE r.id IS NULL"),
    ("a strategy count of no row", "SELECT s.rowid FROM strategy_counts s"
     " LEFT JOIN rows r ON r.id = s.row_id WHERE r.id IS NULL"),
    ("a violation of no row", "SELECT v.id FROM violations v LEFT JOIN rows r ON r.id = v.row_id"
     " WHERE v.row_id IS NOT NULL AND r.id IS NULL"),
    ("a violation of no campaign", "SELECT v.id FROM violations v LEFT JOIN campaigns c"
     " ON c.id = v.campaign_id WHERE v.campaign_id IS NOT NULL AND c.id IS NULL"),
    ("a row whose counterexample is missing", "SELECT r.id FROM rows r LEFT JOIN violations v"
     " ON v.id = r.violation_id WHERE r.violation_id IS NOT NULL AND v.id IS NULL"),
    ("a row being shrunk without a counterexample", "SELECT r.id FROM rows r LEFT JOIN violations v"
     " ON v.id = r.violation_id WHERE r.status = 'shrinking' AND v.schedule IS NULL"),
    ("an explored row without its verdict", "SELECT id FROM rows WHERE status != 'pending' AND"
     " (verdict IS NULL OR ok IS NULL OR schedules IS NULL OR exhausted IS NULL)"),
    ("a campaign of unknown status", "SELECT id FROM campaigns WHERE status NOT IN"
     f" {_CAMPAIGN_STATUS}"),
    ("a row of unknown status", f"SELECT id FROM rows WHERE status NOT IN {_ROW_STATUS}"),
    ("a batch with negative counts", "SELECT rowid FROM batches WHERE seq < 0 OR ran < 0"
     " OR steps < 0 OR others < 0 OR (decisive IS NOT NULL AND (decisive < 0 OR decisive >= ran))"),
)


def _check_contents(con: sqlite3.Connection, version: int = SCHEMA_VERSION) -> str | None:
    """What makes the store unusable, or None. Reads only. A file of schema `version` may lack
    the columns later versions added."""
    expected = _expected_columns()
    later = _added_since(version)
    have = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table, columns in expected.items():
        if table not in have:
            return f"damaged: table {table!r} is missing"
        present = {c[1] for c in con.execute(f"PRAGMA table_info({table})")}
        for name, decl, notnull in columns:
            if name not in present and (table, name) in later:
                continue
            if name not in present:
                return f"damaged: column {table}.{name} is missing"
            allowed = _TYPEOF[decl] + (() if notnull else ("null",))
            bad = con.execute(f"SELECT rowid, typeof({name}) FROM {table} WHERE typeof({name})"
                              f" NOT IN ({', '.join(repr(a) for a in allowed)}) LIMIT 1").fetchone()
            if bad:
                return f"damaged: {table}.{name} holds a {bad[1]} value (rowid {bad[0]})"
            if decl == "TEXT":
                why = _check_utf8(con, table, name)
                if why:
                    return why
    for table, column in _JSON_COLUMNS:
        for rowid, text in con.execute(f"SELECT rowid, {column} FROM {table}"):
            try:
                value = json.loads(text)
            except ValueError as e:
                return f"damaged: malformed JSON in {table}.{column} (rowid {rowid}: {e})"
            why = _SHAPES[table, column](value)
            if why:
                return f"damaged: {table}.{column} of rowid {rowid}: {why}"
    for what, sql in _RELATIONS:
        bad = con.execute(sql + " LIMIT 1").fetchone()
        if bad:
            return f"damaged: {what} (rowid {bad[0]})"
    return _check_campaign_rows(con)


def _check_utf8(con: sqlite3.Connection, table: str, column: str) -> str | None:
    """Text that Python could not decode (sqlite3 would raise on fetching it)."""
    previous = con.text_factory
    con.text_factory = bytes
    try:
        for rowid, raw in con.execute(f"SELECT rowid, {column} FROM {table}"
                                      f" WHERE typeof({column}) = 'text'"):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return f"damaged: {table}.{column} holds text that is not UTF-8 (rowid {rowid})"
    finally:
        con.text_factory = previous
    return None


def _check_campaign_rows(con: sqlite3.Connection) -> str | None:
    """Each campaign's rows are exactly the rows of its parameters, in order; each DFS
    frontier can be read back."""
    from ftlab.explore.portfolio import dfs_restore

    for cid, params in con.execute("SELECT id, params FROM campaigns"):
        prows = json.loads(params)["rows"]
        got = con.execute("SELECT ord, scenario, mutation FROM rows WHERE campaign_id = ?"
                          " ORDER BY ord", (cid,)).fetchall()
        want = [(i, r["scenario"], r["mutation"]) for i, r in enumerate(prows)]
        if got != want:
            return f"damaged: the rows of campaign {cid} are not those of its parameters"
    for rowid, blob in con.execute("SELECT rowid, dfs_state FROM batches"
                                   " WHERE dfs_state IS NOT NULL"):
        try:
            dfs_restore(None, blob)
        except Exception as e:  # anything a damaged blob can raise: zlib, JSON, missing keys
            return f"damaged: batches.dfs_state of rowid {rowid} ({type(e).__name__})"
    return None


def _journal(path: Path) -> Path:
    return path.with_name(path.name + "-journal")


def _unwritable(path: Path) -> str | None:
    """Why SQLite could not write `path` (an existing file), or None. Root passes `os.access`
    whatever the mode bits say, as SQLite's own writes would."""
    try:
        st = os.statvfs(path)
    except OSError as e:
        return f"cannot stat ({e.strerror or e})"
    if st.f_flag & os.ST_RDONLY:
        return "on a read-only file system"
    if not _access(path, os.W_OK):
        return "a read-only file"
    parent = path.parent
    if not _access(parent, os.W_OK | os.X_OK):
        return f"in a directory that is not writable ({parent}; SQLite keeps its journal beside the file)"
    return None


def _access(path: Path, mode: int) -> bool:
    """`os.access` for the effective user, the one SQLite opens files as."""
    if os.access in os.supports_effective_ids:
        return os.access(path, mode, effective_ids=True)
    return os.access(path, mode)


def _recover(path: Path) -> None:
    """A journal left by a process killed in the middle of a commit: SQLite's recovery rolls
    it back on the next read by a connection that can write, restoring the last commit. Done
    first, so that the checks below see that commit and not a half-written file."""
    journal = _journal(path)
    try:
        if not journal.is_file() or journal.stat().st_size == 0:
            return
    except OSError:
        return
    why = _unwritable(path)
    if why is not None:
        raise _refuse(path, f"a killed process left an unfinished transaction ({journal.name}) "
                            f"that cannot be rolled back: the file is {why}")
    try:
        con = sqlite3.connect(str(path), timeout=LOCK_TIMEOUT)
        try:
            con.execute("PRAGMA schema_version").fetchone()
        finally:
            con.close()
    except sqlite3.Error as e:
        raise _refuse(path, _sqlite_why(e)) from None


def _check_existing(path: Path) -> None:
    """Refuse a file that is not a usable ftlab store, reading it only (but for `_recover`)."""
    try:
        with open(path, "rb") as f:
            head = f.read(100)
            size = os.fstat(f.fileno()).st_size
    except IsADirectoryError:
        raise StoreError(f"{path}: is a directory, not a results database") from None
    except OSError as e:
        raise StoreError(f"{path}: cannot read: {e.strerror or e}") from None
    if not head.startswith(_SQLITE_MAGIC):
        if _SQLITE_MAGIC.startswith(head) and head:
            raise _refuse(path, f"truncated ({size} bytes, shorter than an SQLite header)")
        raise _refuse(path, "not an SQLite database" if head else "empty file, not an ftlab results database")
    _recover(path)
    with open(path, "rb") as f:
        head = f.read(100)
        size = os.fstat(f.fileno()).st_size
    why = _check_header(path, head, size)
    if why:
        raise _refuse(path, why)
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=LOCK_TIMEOUT)
        # SQLite's own messages about a damaged file may quote bytes that are not UTF-8.
        con.text_factory = lambda b: b.decode("utf-8", "replace")
        try:
            app = con.execute("PRAGMA application_id").fetchone()[0]
            ver = con.execute("PRAGMA user_version").fetchone()[0]
            if app != APPLICATION_ID:
                raise _refuse(path, "an SQLite database of another application (not an ftlab results database)")
            if ver > SCHEMA_VERSION:
                raise _refuse(path, f"written by a newer ftlab (schema {ver}; this one reads up to {SCHEMA_VERSION})")
            if ver < 1:
                raise _refuse(path, f"unknown ftlab schema version {ver}")
            problems = [r[0] for r in con.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                raise _refuse(path, f"damaged (SQLite's check: {'; '.join(problems)})")
            why = _check_contents(con, ver)
        finally:
            con.close()
    except sqlite3.Error as e:
        why = _sqlite_why(e)
        if why == str(e):
            why = f"damaged ({e})"
    except UnicodeDecodeError:
        why = "damaged (its schema holds text that is not UTF-8)"
    if why:
        raise _refuse(path, why)


class Store:
    """An open campaign store. `Store.open(path)` for the CLI; `Store.memory()` for the API.
    Every SQLite error after opening (a lock held too long by another process, a file that
    became unwritable or damaged) is a `StoreError` naming the file."""

    def __init__(self, con: sqlite3.Connection, path: str) -> None:
        self.con = con
        self.path = path
        con.row_factory = sqlite3.Row
        # a schema 1 file opened read-only: its violations read with a NULL memory_model
        present = {r[1] for r in con.execute("PRAGMA table_info(violations)")}
        self._violations = ("SELECT * FROM violations" if "memory_model" in present
                            else "SELECT *, NULL AS memory_model FROM violations")

    @staticmethod
    def _migrate(con: sqlite3.Connection) -> None:
        """Bring a checked file of an older schema to `SCHEMA_VERSION`: add the columns it
        lacks (NULL in every stored row) and set the version, in one transaction."""
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version >= SCHEMA_VERSION:
            return
        con.execute("BEGIN IMMEDIATE")
        try:
            for v in sorted(_MIGRATIONS):
                if v <= version:
                    continue
                for table, column, decl in _MIGRATIONS[v]:
                    present = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
                    if column not in present:
                        con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike, *, create: bool = True,
             write: bool | None = None) -> "Store":
        """Open (or with `create`, make) the store at `path`. `write` (default: `create`) opens
        it for writing; without it the connection is read-only, and a read-only file or file
        system is fine. An existing file is checked whole before anything is written."""
        p = Path(path)
        write = create if write is None else write
        if p.is_dir():
            raise StoreError(f"{p}: is a directory, not a results database")
        if p.exists():
            _check_existing(p)
            if not write:
                try:
                    con = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True,
                                          timeout=LOCK_TIMEOUT)
                except sqlite3.Error as e:
                    raise _refuse(p, _sqlite_why(e)) from None
                return cls(con, str(p))
            why = _unwritable(p)
            if why is not None:
                raise _refuse(p, f"{why}; `ftlab report` and `ftlab replay` can still read it")
            try:
                con = sqlite3.connect(str(p), timeout=LOCK_TIMEOUT)
                # Take the write lock once and give it back: another writer holding it past the
                # timeout is refused here, before anything is written.
                con.execute("BEGIN IMMEDIATE")
                con.rollback()
                cls._migrate(con)
            except sqlite3.Error as e:
                raise _refuse(p, _sqlite_why(e)) from None
            return cls(con, str(p))
        if not create:
            raise StoreError(f"no results database at {p} (run `ftlab explore` first, or pass --db)")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create {p.parent}: {e.strerror or e}") from None
        try:
            if os.statvfs(p.parent).f_flag & os.ST_RDONLY:
                raise StoreError(f"{p}: cannot create a database there: a read-only file system")
        except OSError:
            pass
        try:
            con = sqlite3.connect(str(p), timeout=LOCK_TIMEOUT)
            cls._create(con)
        except sqlite3.Error as e:
            raise StoreError(f"{p}: cannot create a database there: {e}") from None
        return cls(con, str(p))

    @classmethod
    def memory(cls) -> "Store":
        con = sqlite3.connect(":memory:")
        cls._create(con)
        return cls(con, ":memory:")

    @staticmethod
    def _create(con: sqlite3.Connection) -> None:
        with con:
            con.executescript(_SCHEMA)
            con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self.con.close()

    # -- every statement goes through these two -------------------------------------------------

    def _read(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        try:
            return self.con.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot read it: {_sqlite_why(e)}") from None
        except UnicodeDecodeError:
            raise StoreError(f"{self.path}: damaged: text that is not UTF-8") from None

    @contextlib.contextmanager
    def _write(self):
        """One transaction: committed whole, or (an error, a KeyboardInterrupt) not at all."""
        try:
            with self.con:
                yield self.con
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot write it: {_sqlite_why(e)}") from None


    # -- campaigns ----------------------------------------------------------------------------

    def new_campaign(self, key: str, params: dict, version: str,
                     rows: Iterable[dict]) -> int:
        now = _now()
        with self._write():
            cur = self.con.execute(
                "INSERT INTO campaigns (key, params, ftlab_version, started, updated, status)"
                " VALUES (?, ?, ?, ?, ?, 'running')",
                (key, json.dumps(params, sort_keys=True), version, now, now))
            cid = cur.lastrowid
            for r in rows:
                self.con.execute(
                    "INSERT INTO rows (campaign_id, ord, scenario, mutation, expected, strategies,"
                    " budget, status) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending')",
                    (cid, r["ord"], r["scenario"], r["mutation"], json.dumps(r["expected"]),
                     json.dumps(r["strategies"]), r["budget"]))
        return cid

    def unfinished(self, key: str) -> int | None:
        row = _first(self._read(
            "SELECT id FROM campaigns WHERE key = ? AND status != 'done' ORDER BY id DESC LIMIT 1",
            (key,)))
        return row["id"] if row else None

    def latest_unfinished(self) -> int | None:
        row = _first(self._read(
            "SELECT id FROM campaigns WHERE status != 'done' ORDER BY id DESC LIMIT 1"))
        return row["id"] if row else None

    def campaign(self, cid: int) -> sqlite3.Row | None:
        return _first(self._read("SELECT * FROM campaigns WHERE id = ?", (cid,)))

    def campaigns(self) -> list[sqlite3.Row]:
        return self._read("SELECT * FROM campaigns ORDER BY id")

    def latest_campaign(self) -> int | None:
        row = _first(self._read("SELECT max(id) AS id FROM campaigns"))
        return row["id"]

    def set_campaign(self, cid: int, *, status: str, wall_seconds: float,
                     ok: bool | None = None) -> None:
        with self._write():
            self.con.execute(
                "UPDATE campaigns SET status = ?, wall_seconds = wall_seconds + ?, ok = ?,"
                " updated = ? WHERE id = ?",
                (status, wall_seconds, None if ok is None else int(ok), _now(), cid))

    # -- rows and batches ---------------------------------------------------------------------

    def rows(self, cid: int) -> list[sqlite3.Row]:
        return self._read("SELECT * FROM rows WHERE campaign_id = ? ORDER BY ord", (cid,))

    def batches(self, row_id: int) -> list[sqlite3.Row]:
        return self._read("SELECT * FROM batches WHERE row_id = ? ORDER BY seq", (row_id,))

    def add_batches(self, items: Iterable[tuple[int, Any]]) -> None:
        """Commit batch results (row id, BatchResult) in one transaction. A DFS batch's
        frontier replaces the one the previous batch of its chain kept."""
        with self._write():
            for row_id, b in items:
                if b.dfs_state is not None:
                    self.con.execute("UPDATE batches SET dfs_state = NULL WHERE row_id = ? AND"
                                     " dfs_state IS NOT NULL", (row_id,))
                self.con.execute(
                    "INSERT OR REPLACE INTO batches (row_id, seq, ran, steps, decisive, others,"
                    " exhausted, dfs_state, violations, seconds) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (row_id, b.seq, b.ran, b.steps, b.decisive, b.others, int(b.exhausted),
                     b.dfs_state, json.dumps(b.violations), b.seconds))

    def finish_exploring(self, row_id: int, cid: int, *, status: str, verdict: str, ok: bool,
                         schedules: int, first_detection: int | None, detected_by: str | None,
                         exhausted: bool, seconds: float, counts: list[dict],
                         violations: list[dict], scenario: str, mutations: list[str],
                         version: str, memory_model: str | None = None) -> int | None:
        """Record a row whose exploration is over; returns the decisive violation's id."""
        decisive_id = None
        with self._write():
            for v in violations:
                cur = self.con.execute(
                    "INSERT INTO violations (campaign_id, row_id, scenario, mutations, version,"
                    " strategy, execution, kind, message, thread, step, details, schedule, steps,"
                    " decisions, preemptions, decisive, memory_model)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (cid, row_id, scenario, json.dumps(mutations), version, v["strategy"],
                     v["execution"], v["kind"], v["message"], v["thread"], v["step"],
                     json.dumps(v["details"]), v["schedule"], v["steps"], v["decisions"],
                     v["preemptions"], int(v["decisive"]), memory_model))
                if v["decisive"]:
                    decisive_id = cur.lastrowid
            for c in counts:
                self.con.execute(
                    "INSERT OR REPLACE INTO strategy_counts (row_id, strategy, seed, schedules,"
                    " steps, violations, first_detection, exhausted) VALUES (?,?,?,?,?,?,?,?)",
                    (row_id, c["strategy"], c["seed"], c["schedules"], c["steps"],
                     c["violations"], c["first_detection"], int(c["exhausted"])))
            self.con.execute(
                "UPDATE rows SET status = ?, verdict = ?, ok = ?, schedules = ?, first_detection = ?,"
                " detected_by = ?, exhausted = ?, violation_id = ?, seconds = ? WHERE id = ?",
                (status, verdict, int(ok), schedules, first_detection, detected_by,
                 int(exhausted), decisive_id, seconds, row_id))
        return decisive_id

    def finish_shrinking(self, row_id: int, violation_id: int, shrunk: dict | None,
                         note: str, seconds: float) -> None:
        with self._write():
            if shrunk is not None:
                self.set_shrunk(violation_id, shrunk, commit=False)
            else:
                self.con.execute("UPDATE violations SET shrink_note = ? WHERE id = ?",
                                 (note, violation_id))
            self.con.execute("UPDATE rows SET status = 'done', seconds = seconds + ? WHERE id = ?",
                             (seconds, row_id))

    def set_shrunk(self, violation_id: int, s: dict, commit: bool = True) -> None:
        sql = ("UPDATE violations SET shrunk_schedule = ?, shrunk_steps = ?, shrunk_preemptions = ?,"
               " shrunk_decisions = ?, shrink_runs = ?, shrink_note = ? WHERE id = ?")
        args = (s["schedule"], s["steps"], s["preemptions"], s["decisions"], s["runs"],
                s.get("note", ""), violation_id)
        if commit:
            with self._write():
                self.con.execute(sql, args)
        else:
            self.con.execute(sql, args)

    def strategy_counts(self, row_id: int) -> list[sqlite3.Row]:
        return self._read("SELECT * FROM strategy_counts WHERE row_id = ? ORDER BY rowid",
                          (row_id,))

    # -- violations ---------------------------------------------------------------------------

    def violation(self, vid: int) -> sqlite3.Row | None:
        return _first(self._read(self._violations + " WHERE id = ?", (vid,)))

    def violations(self, cid: int | None = None) -> list[sqlite3.Row]:
        if cid is None:
            return self._read(self._violations + " ORDER BY id")
        return self._read(self._violations + " WHERE campaign_id = ? ORDER BY id", (cid,))


def _first(rows: list) -> Any:
    return rows[0] if rows else None
