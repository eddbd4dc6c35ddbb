"""Crash safety as a tested property: `ftlab explore` campaigns run as real processes, killed
(SIGKILL to the campaign's process alone; SIGINT to its process group, as Ctrl-C in a terminal
sends it) at pseudo-random moments — after a number of batch commits, while a counterexample is
being shrunk, or at a random time — and resumed by the same command, until done.

After every kill: `PRAGMA integrity_check` is ok (checked on a copy, so that the next `ftlab`
does the recovery itself), SIGINT gives exit status 130 and no traceback, and no process the
command started (workers, multiprocessing's resource tracker) is left. At the end of each
campaign: the table and the stored counterexamples are those of an uninterrupted run, and no
violation or batch is stored twice."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TAG = "FTLAB_KILL_TEST"
ORPHAN_GRACE = 1.0          # a worker notices its parent is gone within this (seconds)


# ---------------------------------------------------------------------------------------------
# Processes

def _tagged(tag: str) -> list[int]:
    """Live processes whose environment carries `tag` (everything the command started inherits
    it: spawned workers and the resource tracker alike)."""
    mark = f"{TAG}={tag}".encode()
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if mark in env.split(b"\0"):
            pids.append(int(d))
    return pids


def _orphans_gone(tag: str, grace: float) -> tuple[bool, float, list[str]]:
    start = time.monotonic()
    while True:
        left = _tagged(tag)
        waited = time.monotonic() - start
        if not left:
            return True, waited, []
        if waited > grace:
            names = []
            for pid in left:
                try:
                    names.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                                 .decode(errors="replace")[:120])
                except OSError:
                    pass
            for pid in left:  # leave nothing behind even when the assertion fails
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            return False, waited, names
        time.sleep(0.02)


def _has_open(pid: int, path: Path) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
        except OSError:
            pass
    return False


def _start(argv: list[str], db: Path, tag: str) -> subprocess.Popen:
    """The command, its stderr in a file (a pipe would stay open as long as any process left
    behind holds it)."""
    env = dict(os.environ, **{TAG: tag})
    err = open(db.with_name(db.name + ".stderr"), "w+")
    p = subprocess.Popen([sys.executable, "-m", "ftlab", "explore", *argv, "--db", str(db)],
                         cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err,
                         start_new_session=True)
    p.errfile = err
    return p


def _finish(p: subprocess.Popen) -> str:
    try:
        p.wait(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    p.errfile.seek(0)
    err = p.errfile.read()
    p.errfile.close()
    return err


# ---------------------------------------------------------------------------------------------
# The store, read from outside

def _state(db: Path) -> tuple[int, int] | None:
    """(batches committed, rows being shrunk), or None when it cannot be read just now."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.05)
        try:
            n = con.execute("SELECT count(*) FROM batches").fetchone()[0]
            s = con.execute("SELECT count(*) FROM rows WHERE status = 'shrinking'").fetchone()[0]
            return n, s
        finally:
            con.close()
    except sqlite3.Error:
        return None


def _done(db: Path) -> bool:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT status FROM campaigns").fetchall() == [("done",)]
    finally:
        con.close()


def _integrity(db: Path, scratch: Path) -> str:
    """`PRAGMA integrity_check` of the store as SQLite recovers it (journal rolled back), on a
    copy: the original is left for the next `ftlab` to recover."""
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir()
    for suffix in ("", "-journal"):
        src = db.with_name(db.name + suffix)
        if src.exists():
            shutil.copy(src, scratch / (db.name + suffix))
    con = sqlite3.connect(scratch / db.name)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def _essence(db: Path) -> dict:
    """The campaign table and its counterexamples, without times and ids."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        campaigns = con.execute("SELECT status, ok FROM campaigns").fetchall()
        rows = con.execute(
            "SELECT ord, scenario, mutation, status, verdict, ok, schedules, first_detection,"
            " detected_by, exhausted FROM rows ORDER BY ord").fetchall()
        counts = con.execute(
            "SELECT r.ord, s.strategy, s.seed, s.schedules, s.steps, s.violations,"
            " s.first_detection, s.exhausted FROM strategy_counts s JOIN rows r ON r.id = s.row_id"
            " ORDER BY r.ord, s.rowid").fetchall()
        violations = con.execute(
            "SELECT r.ord, v.scenario, v.mutations, v.strategy, v.execution, v.kind, v.message,"
            " v.schedule, v.steps, v.preemptions, v.decisive, v.shrunk_schedule, v.shrunk_steps,"
            " v.shrunk_preemptions, r.violation_id = v.id FROM violations v"
            " JOIN rows r ON r.id = v.row_id ORDER BY r.ord, v.execution, v.id").fetchall()
        twice = con.execute("SELECT count(*) FROM (SELECT 1 FROM batches GROUP BY row_id, seq"
                            " HAVING count(*) > 1)").fetchone()[0]
    finally:
        con.close()
    return {"campaigns": campaigns, "rows": rows, "counts": counts, "violations": violations,
            "batches stored twice": twice}


# ---------------------------------------------------------------------------------------------
# The kill loop

def _kill_at_random(p: subprocess.Popen, db: Path, rng: random.Random, sig: int) -> str | None:
    """Wait for a pseudo-random moment, then send `sig`; the moment's class, or None when the
    campaign ended first."""
    mode = rng.choice(["commit", "commit", "shrinking", "time"])
    if sig == signal.SIGINT:
        # Not while the interpreter itself starts (a Ctrl-C there is Python's "Fatal Python
        # error: init_import_site", before any of ftlab runs): from when ftlab has its store open.
        while p.poll() is None and not _has_open(p.pid, db):
            time.sleep(0.005)
    base = (_state(db) or (0, 0))[0]
    target = base + rng.randint(1, 3)
    deadline = time.monotonic() + (rng.uniform(0.3, 1.5) if mode == "time" else 60)
    while p.poll() is None and time.monotonic() < deadline:
        st = _state(db)
        if st is not None and ((mode == "commit" and st[0] >= target)
                               or (mode == "shrinking" and st[1] > 0)):
            time.sleep(rng.uniform(0, 0.05))
            break
        time.sleep(0.005)
    if p.poll() is not None:
        return None
    st = _state(db)
    if sig == signal.SIGKILL:
        p.kill()
    else:
        os.killpg(p.pid, sig)      # Ctrl-C: the whole foreground process group
    if st is None:
        return "while a commit held the file"
    if st[1]:
        return "while shrinking"
    return "before the first commit" if st[0] == 0 else "between batch commits"


def _campaigns_killed_and_resumed(tmp_path: Path, argv: list[str], kills: int, seed: int,
                                  signals: tuple[int, ...]) -> Counter:
    reference = tmp_path / "reference.sqlite"
    tag = uuid.uuid4().hex
    p = _start(argv, reference, tag)
    err = _finish(p)
    assert p.returncode == 0, err
    want = _essence(reference)
    assert want["batches stored twice"] == 0

    rng = random.Random(seed)
    outcomes: Counter = Counter()
    slowest = 0.0
    done = 0
    round_ = 0
    while done < kills:
        round_ += 1
        db = tmp_path / f"round{round_}.sqlite"
        while True:
            sig = rng.choice(signals) if done < kills else None
            p = _start(argv, db, tag)
            moment = _kill_at_random(p, db, rng, sig) if sig is not None else None
            err = _finish(p)
            ok, waited, left = _orphans_gone(tag, ORPHAN_GRACE)
            assert ok, f"processes outlived the killed ftlab by {waited:.2f} s: {left}"
            slowest = max(slowest, waited)
            if moment is not None and _done(db):
                # The signal came after the campaign was stored whole, as the command printed
                # its table or exited: 0, or 130 for a Ctrl-C that stopped the printing. Running
                # the command again would start a new campaign: this round is over.
                assert p.returncode in (0, 130 if sig == signal.SIGINT else -signal.SIGKILL), err
                outcomes[f"{signal.Signals(sig).name} after the campaign was done"] += 1
                p.returncode, moment = 0, None
            if moment is None:      # it finished before the kill
                assert p.returncode == 0, err
                break
            done += 1
            name = signal.Signals(sig).name
            outcomes[f"{name} {moment}"] += 1
            if sig == signal.SIGKILL:
                assert p.returncode == -signal.SIGKILL, (p.returncode, err)
            else:
                assert p.returncode == 130, (p.returncode, err)
                assert "Traceback" not in err and "interrupted" in err, err
            if db.exists():
                assert _integrity(db, tmp_path / "scratch") == "ok", f"after {name} {moment}"
        assert _essence(db) == want, f"round {round_} differs from an uninterrupted run"
    outcomes["slowest exit of a process left behind (ms)"] = round(slowest * 1000)
    return outcomes


def test_campaign_killed_a_few_times_resumes_to_the_uninterrupted_result(tmp_path):
    outcomes = _campaigns_killed_and_resumed(
        tmp_path, ["list-resize", "--budget", "160", "--workers", "2"], kills=4, seed=1,
        signals=(signal.SIGKILL, signal.SIGINT))
    print(dict(outcomes))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_campaign_killed_anywhere_resumes_to_the_uninterrupted_result(tmp_path, sig):
    outcomes = _campaigns_killed_and_resumed(
        tmp_path, ["hand-off", "list-resize", "--budget", "300", "--workers", "2"], kills=24,
        seed=7 if sig == signal.SIGKILL else 8, signals=(sig,))
    print(dict(outcomes))
    assert outcomes[f"{signal.Signals(sig).name} while shrinking"] >= 2
    assert outcomes[f"{signal.Signals(sig).name} between batch commits"] >= 5
