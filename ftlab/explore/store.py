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

Opening refuses, without writing a byte, anything that is not ours: a file that is not SQLite,
a SQLite database with another application id, or one from a newer ftlab. A read-only open
(`ftlab report`, `ftlab replay ID`) never creates the file.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterable

from ftlab.explore.portfolio import ExploreError

APPLICATION_ID = 0x46544C42  # "FTLB"
SCHEMA_VERSION = 1
DEFAULT_DB = Path(".ftlab") / "results.sqlite"
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
    shrink_note        TEXT
);
CREATE INDEX violations_row ON violations(row_id);
"""


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _refuse(path: Path, why: str) -> ExploreError:
    return ExploreError(f"{path}: {why}; refusing to use it (nothing was written)")


def _check_existing(path: Path) -> None:
    """Refuse a file that is not an ftlab store, reading it only."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except IsADirectoryError:
        raise ExploreError(f"{path}: is a directory, not a results database") from None
    except OSError as e:
        raise ExploreError(f"{path}: cannot read: {e.strerror or e}") from None
    if head != _SQLITE_MAGIC:
        raise _refuse(path, "not an SQLite database" if head else "empty file, not an ftlab results database")
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            app = con.execute("PRAGMA application_id").fetchone()[0]
            ver = con.execute("PRAGMA user_version").fetchone()[0]
            if app == APPLICATION_ID:
                con.execute("SELECT count(*) FROM campaigns").fetchone()
        finally:
            con.close()
    except sqlite3.Error as e:
        raise _refuse(path, f"corrupt SQLite database ({e})") from None
    if app != APPLICATION_ID:
        raise _refuse(path, "an SQLite database of another application (not an ftlab results database)")
    if ver > SCHEMA_VERSION:
        raise _refuse(path, f"written by a newer ftlab (schema {ver}; this one reads up to {SCHEMA_VERSION})")
    if ver < 1:
        raise _refuse(path, f"unknown ftlab schema version {ver}")


class Store:
    """An open campaign store. `Store.open(path)` for the CLI; `Store.memory()` for the API."""

    def __init__(self, con: sqlite3.Connection, path: str) -> None:
        self.con = con
        self.path = path
        con.row_factory = sqlite3.Row

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike, *, create: bool = True) -> "Store":
        p = Path(path)
        if p.is_dir():
            raise ExploreError(f"{p}: is a directory, not a results database")
        if p.exists():
            _check_existing(p)
            try:
                con = sqlite3.connect(str(p), timeout=30)
            except sqlite3.Error as e:
                raise ExploreError(f"{p}: cannot open: {e}") from None
            return cls(con, str(p))
        if not create:
            raise ExploreError(f"no results database at {p} (run `ftlab explore` first, or pass --db)")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ExploreError(f"cannot create {p.parent}: {e.strerror or e}") from None
        try:
            con = sqlite3.connect(str(p), timeout=30)
            cls._create(con)
        except sqlite3.Error as e:
            raise ExploreError(f"{p}: cannot create a database there: {e}") from None
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

    # -- campaigns ----------------------------------------------------------------------------

    def new_campaign(self, key: str, params: dict, version: str,
                     rows: Iterable[dict]) -> int:
        now = _now()
        with self.con:
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
        row = self.con.execute(
            "SELECT id FROM campaigns WHERE key = ? AND status != 'done' ORDER BY id DESC LIMIT 1",
            (key,)).fetchone()
        return row["id"] if row else None

    def latest_unfinished(self) -> int | None:
        row = self.con.execute(
            "SELECT id FROM campaigns WHERE status != 'done' ORDER BY id DESC LIMIT 1").fetchone()
        return row["id"] if row else None

    def campaign(self, cid: int) -> sqlite3.Row | None:
        return self.con.execute("SELECT * FROM campaigns WHERE id = ?", (cid,)).fetchone()

    def campaigns(self) -> list[sqlite3.Row]:
        return self.con.execute("SELECT * FROM campaigns ORDER BY id").fetchall()

    def latest_campaign(self) -> int | None:
        row = self.con.execute("SELECT max(id) AS id FROM campaigns").fetchone()
        return row["id"]

    def set_campaign(self, cid: int, *, status: str, wall_seconds: float,
                     ok: bool | None = None) -> None:
        with self.con:
            self.con.execute(
                "UPDATE campaigns SET status = ?, wall_seconds = wall_seconds + ?, ok = ?,"
                " updated = ? WHERE id = ?",
                (status, wall_seconds, None if ok is None else int(ok), _now(), cid))

    # -- rows and batches ---------------------------------------------------------------------

    def rows(self, cid: int) -> list[sqlite3.Row]:
        return self.con.execute("SELECT * FROM rows WHERE campaign_id = ? ORDER BY ord",
                                (cid,)).fetchall()

    def batches(self, row_id: int) -> list[sqlite3.Row]:
        return self.con.execute("SELECT * FROM batches WHERE row_id = ? ORDER BY seq",
                                (row_id,)).fetchall()

    def add_batches(self, items: Iterable[tuple[int, Any]]) -> None:
        """Commit batch results (row id, BatchResult) in one transaction. A DFS batch's
        frontier replaces the one the previous batch of its chain kept."""
        with self.con:
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
                         version: str) -> int | None:
        """Record a row whose exploration is over; returns the decisive violation's id."""
        decisive_id = None
        with self.con:
            for v in violations:
                cur = self.con.execute(
                    "INSERT INTO violations (campaign_id, row_id, scenario, mutations, version,"
                    " strategy, execution, kind, message, thread, step, details, schedule, steps,"
                    " decisions, preemptions, decisive) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (cid, row_id, scenario, json.dumps(mutations), version, v["strategy"],
                     v["execution"], v["kind"], v["message"], v["thread"], v["step"],
                     json.dumps(v["details"]), v["schedule"], v["steps"], v["decisions"],
                     v["preemptions"], int(v["decisive"])))
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
        with self.con:
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
            with self.con:
                self.con.execute(sql, args)
        else:
            self.con.execute(sql, args)

    def strategy_counts(self, row_id: int) -> list[sqlite3.Row]:
        return self.con.execute("SELECT * FROM strategy_counts WHERE row_id = ? ORDER BY rowid",
                                (row_id,)).fetchall()

    # -- violations ---------------------------------------------------------------------------

    def violation(self, vid: int) -> sqlite3.Row | None:
        return self.con.execute("SELECT * FROM violations WHERE id = ?", (vid,)).fetchone()

    def violations(self, cid: int | None = None) -> list[sqlite3.Row]:
        if cid is None:
            return self.con.execute("SELECT * FROM violations ORDER BY id").fetchall()
        return self.con.execute("SELECT * FROM violations WHERE campaign_id = ? ORDER BY id",
                                (cid,)).fetchall()
