"""The sweep-path benchmark (``pytest bench --benchmark-only --sweep-paths``,
bench/suite/sweep_paths.py): both paths of every selected cell, in one process, identical
curves, the speed-up and ratios recorded; refused with -n and with --scaleout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_scaleout import _env
from test_scaleout_benchmark import TINY, _bench

from bench.suite import sweep_paths


def test_max_abs_delta_covers_every_curve():
    a = {k: np.array([0.0, 0.5, 1.0]) for k in ("faithfulness", "completeness", "flip_rate")}
    assert sweep_paths.max_abs_delta(a, {k: v.copy() for k, v in a.items()}) == 0.0
    b = {k: v.copy() for k, v in a.items()}
    b["flip_rate"][1] += 0.25
    assert sweep_paths.max_abs_delta(a, b) == 0.25


def test_both_paths_of_each_cell_run_with_identical_curves(tmp_path):
    store = tmp_path / "history"
    proc = _bench(*TINY, "--sweep-paths", f"--benchmark-storage=file://{store}",
                  env=_env(tmp_path / "cache"))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    # 4 cells x 2 paths; the cells themselves (and the scale-out runs) deselected
    assert "8 passed, 7 deselected" in proc.stdout
    assert "sparsebench sweep paths: whole prompt vs shared prefix" in proc.stdout
    (saved,) = store.rglob("*.json")
    records = {b["name"]: b["extra_info"] for b in json.loads(saved.read_text())["benchmarks"]}
    assert len(records) == 8
    for name, info in records.items():
        assert info["sweep_s"] > 0 and info["sweep_ratio"] > 0, name
        if name.endswith("-prefix]"):
            assert info["max_abs_delta_f"] == 0.0 and info["speedup"] > 0, name
            assert info["prefix_positions"] >= 1 and info["seq_len"] == 3, name
        else:
            assert info["prefix_positions"] == 0 and info["speedup"] is None, name


@pytest.mark.parametrize(
    "args,message",
    [
        (("-n", "2"), "--sweep-paths times both paths of a cell in one process"),
        (("--scaleout", "2"), "--sweep-paths and --scaleout: choose one benchmark"),
    ],
)
def test_bad_sweep_path_options_are_refused(args, message):
    proc = _bench("--co", "-q", *TINY, "--sweep-paths", *args, env=_env())
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr
