"""The c11 rows (ftlab/sim/c11.py): weakened seqlock fences are found under C11 atomics and
not under sequential consistency, where the unmutated program stays clean."""

from __future__ import annotations

import pytest

from ftlab.config import Config, ConfigError
from ftlab.explore.execute import execute
from ftlab.scenarios import get
from ftlab.sim.strategies import Random


def _first_violation(scenario: str, mutation: str | None, runs: int) -> int | None:
    s = get(scenario)
    config = Config(mutations=frozenset([mutation] if mutation else []))
    strategy = Random(2)
    for i in range(runs):
        r = execute(s, config, strategy.execution(i))
        if r.violations:
            return i + 1
    return None


@pytest.mark.parametrize("mutation", ["seqlock-end-read-no-fence", "seqlock-lock-write-no-fence"])
def test_weakened_fence_found_in_c11_not_in_sc(mutation):
    # found at random execution 22 (seed 2) since PyMutex_Lock's retries read the newest store
    assert _first_violation("type-cache-c11", mutation, 60) is not None
    assert _first_violation("type-cache-consistency", mutation, 60) is None


def test_c11_row_is_clean_unmutated():
    assert _first_violation("type-cache-c11", None, 20) is None


# list-attach-c11: QSBR's store-buffering pair (_Py_qsbr_attach's seq_cst store against the
# seq_cst fence that opens qsbr_poll_scan), weakened on either side.

def _run_until(s, mutation: str | None, seed: int, runs: int) -> tuple[int, str] | None:
    config = Config(mutations=frozenset([mutation] if mutation else []))
    strategy = Random(seed)
    for i in range(runs):
        r = execute(s, config, strategy.execution(i))
        if r.violations:
            return i + 1, r.violation.kind
    return None


def _sc_twin(name: str):
    # the row `ftlab explore --memory-model c11` puts beside the c11 one
    from ftlab.scenarios import in_memory_model

    return in_memory_model(get(name), "sc")


@pytest.mark.parametrize("mutation, seed, runs", [
    ("qsbr-attach-release", 1, 10),     # found at random execution 3
    ("qsbr-scan-no-fence", 2, 40),      # found at random execution 31
])
def test_weakened_qsbr_order_found_in_c11_not_in_sc(mutation, seed, runs):
    found = _run_until(get("list-attach-c11"), mutation, seed, runs)
    assert found is not None and found[1] in get("list-attach-c11").mutations[mutation], found
    # the same program, the same schedules, sequentially consistent: the scan that reads
    # OFFLINE ran before the attach, so the reader's loads see the cleared list
    assert _run_until(_sc_twin("list-attach-c11"), mutation, seed, 40) is None


def test_list_attach_c11_is_clean_unmutated():
    assert _run_until(get("list-attach-c11"), None, 1, 20) is None


def test_bad_memory_model_is_a_config_error():
    with pytest.raises(ConfigError, match="memory model"):
        Config(memory_model="tso")


# A stored c11 counterexample replays and shrinks in the c11 memory model (issue 14).

def _cli(capsys, *argv):
    from ftlab import cli

    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_stored_c11_counterexample_replays_in_c11(capsys, tmp_path):
    from ftlab import cli
    from ftlab.explore.store import Store

    db = tmp_path / "r.sqlite"
    code, _, _ = _cli(capsys, "explore", "type-cache-c11", "--mutate", "seqlock-end-read-no-fence",
                      "--budget", "60", "--workers", "1", "--no-shrink", "--db", db)
    assert code == 0
    store = Store.open(str(db), create=False)
    v = store.violations()[0]
    store.close()
    assert cli._stored_target(v)[1].memory_model == "c11"
    code, out, _ = _cli(capsys, "replay", v["id"], "--db", db)
    assert code == 1 and "memory model c11" in out and "type-cache" in out
    code, _, err = _cli(capsys, "replay", v["id"], "--db", db, "--memory-model", "sc")
    assert code == 2 and "stored violation has its own" in err
    # a schedule string of a c11 row does not fit the same program under SC (its store
    # choices are decisions SC never makes): one line, exit 2
    code, _, err = _cli(capsys, "replay", "type-cache-c11", v["schedule"], "--memory-model", "sc")
    assert code == 2 and "schedule has" in err and len(err.splitlines()) == 1


def test_run_in_c11_prints_a_replay_in_c11(capsys):
    code, out, _ = _cli(capsys, "run", "message-passing", "--mutate", "relaxed-message",
                        "--memory-model", "c11", "--runs", "50")
    assert code == 1 and "memory model c11" in out
    line = next(s for s in out.splitlines() if s.startswith("replay:"))
    assert line.endswith("--memory-model c11")
    code, out, err = _cli(capsys, *line.split()[2:])
    assert code == 1 and "memory model c11" in out, err
