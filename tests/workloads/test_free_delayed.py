"""The gh-132519 workload (ftlab.workloads.free_delayed): under 3.13.0 a full chunk of 24 MiB
arrays waits in the delayed-free queue; under 3.14 the size policy and `should_process` keep the
queue short; `ftlab simulate` prints both peaks and their ratios."""

from __future__ import annotations

import math

from ftlab.cli import main
from ftlab.config import Config
from ftlab.runtime.obmalloc import WORK_ITEMS_PER_CHUNK
from ftlab.workloads import catalog
from ftlab.workloads.free_delayed import ARRAY_SIZE, measure

MiB = 1024 * 1024


def test_the_workload_is_registered():
    w = catalog()["free-delayed-growth"]
    assert w.default_threads == 4


def test_3_13_0_holds_a_full_chunk_of_arrays_and_3_14_a_few():
    old = measure(Config(version="3.13.0"), 4)
    new = measure(Config(version="3.14"), 4)
    assert old["delayed_items_peak"] >= WORK_ITEMS_PER_CHUNK
    assert old["delayed_bytes_peak"] >= WORK_ITEMS_PER_CHUNK * ARRAY_SIZE
    assert new["delayed_bytes_peak"] * 5 < old["delayed_bytes_peak"]
    assert new["committed_peak"] < old["committed_peak"]
    # 3.14 advances on every free over 1 MiB; 3.13.0 on every 10th
    assert new["wr_seq"] > 5 * old["wr_seq"]
    assert measure(Config(version="3.14"), 4) == new        # deterministic


def test_without_delayed_frees_nothing_is_held():
    r = measure(Config(mutations=frozenset({"no-free-delayed"})), 4, arrays=50)
    assert r["delayed_bytes_peak"] == 0


def test_simulate_prints_both_peaks_and_their_ratios(capsys, tmp_path):
    plot = tmp_path / "fd.png"
    assert main(["simulate", "free-delayed-growth", "--threads", "3", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    lines = {line.rsplit(None, 1)[0].strip(): line.rsplit(None, 1)[1]
             for line in out.splitlines()[1:] if not line.startswith("wrote")}
    for key in ("peak held by delayed-free queues, 3.13.0 (MiB)",
                "peak held by delayed-free queues, 3.14 (MiB)",
                "peak committed memory, 3.13.0 (MiB)", "peak committed memory, 3.14 (MiB)"):
        assert float(lines[key].replace(",", "")) > 0
    ratio = float(lines["ratio 3.13.0 / 3.14, delayed-free queues"])
    assert ratio > 5 and not math.isnan(ratio)
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_3_13_queue_drains_only_when_a_chunk_fills():
    from dataclasses import replace as _replace

    from ftlab.config import Config
    from ftlab.workloads.free_delayed import ARRAY_SIZE, measure

    samples = measure(_replace(Config(), version="3.13.0"), 2, arrays=300)["samples"]
    held = [h // ARRAY_SIZE for _, h, _ in samples]
    assert len(samples) == 300
    top = max(held)
    drop = held.index(top)
    # it grows one array per replacement up to a full 254-item chunk, then falls
    assert 250 <= top <= 254
    assert held[drop + 1] < 10
    assert all(b >= a for a, b in zip(held[:drop], held[1:drop + 1]))
