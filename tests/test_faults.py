"""Faults a user meets on full or read-only disks and unusable caches: each is refused before
any work with the path, the cause and the fix, or costs only what it must (a cache entry)."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest
from _tiny_data import dataset, tiny_handle

import bench.core.checks
from bench import run_sweep
from bench.core.cache import check_cache_usable, write_json_atomic
from bench.core.checks import check_writable_parent
from bench.core.errors import BadInputError
from bench.suite.options import check_suite_options


class Usage:
    free = 1 << 20  # 1 MiB


def test_a_full_disk_is_refused_up_front_naming_the_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(bench.core.checks.shutil, "disk_usage", lambda path: Usage)
    with pytest.raises(BadInputError, match=r"--results-dir x: only 1.0 MiB free .* choose a dir"):
        check_writable_parent(tmp_path / "r" / "cell.json", "--results-dir x")
    with pytest.raises(BadInputError, match="only 1.0 MiB free"):
        check_suite_options(8, 4, str(tmp_path / "results"), None)


def test_a_results_write_that_fails_names_the_file_and_the_fix(tmp_path, monkeypatch):
    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    target = tmp_path / "res" / "cell.json"
    with pytest.raises(OSError, match=rf"could not write {target} \(No space left on device\)"):
        write_json_atomic(target, {"a": 1})
    assert not list((tmp_path / "res").iterdir())  # nothing half-written


def test_update_reference_into_a_read_only_directory_is_refused_up_front(tmp_path, monkeypatch):
    ref = tmp_path / "baselines"
    ref.mkdir()

    def probe(directory):
        return "Read-only file system" if Path(directory) == ref else None

    monkeypatch.setattr(bench.core.checks, "_probe_writable", probe)
    check_suite_options(8, 4, str(tmp_path / "results"), str(ref))  # reading it is fine
    with pytest.raises(BadInputError, match=r"--update-reference writes there.*Read-only"):
        check_suite_options(8, 4, str(tmp_path / "results"), str(ref), update_reference=True)


def test_an_unusable_cache_names_the_variable(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(blocker / "cache"))
    with pytest.raises(BadInputError, match=r"SPARSEBENCH_CACHE=.*file/cache .*is a file"):
        check_cache_usable()
    from bench.__main__ import main

    argv = ["sweep", "--model", "tiny-llama", "--task", "sva_simple", "--out",
            str(tmp_path / "r.json")]  # fmt: skip
    assert main(argv) == 2  # before the model loads, no traceback


def test_a_full_cache_costs_the_attribution_entry_not_the_cell(tmp_path, monkeypatch, caplog):
    import bench.attribution.joint as joint

    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path / "cache"))

    def full(payload, path):
        raise OSError(errno.ENOSPC, f"No space left on device: {path}")

    monkeypatch.setattr(joint, "save_checked", full)
    h, ds = tiny_handle("llama"), dataset()
    with caplog.at_level(logging.WARNING, logger="bench.attribution.joint"):
        res = run_sweep(h, ds, method="atp", cache=True, n_bootstrap=50, bare_torch_timings=False)
    assert res.faithfulness[-1] == pytest.approx(1.0)
    assert "not written" in caplog.text and "goes on without it" in caplog.text


def test_damaged_result_files_and_dictionary_weights_name_the_file(tmp_path):
    """Issue: result JSON with wrong types or mismatched lengths, and truncated SAE weights,
    gave tracebacks that named no file."""
    import json

    from test_bases import write_dictionary

    from bench.bases import make_basis
    from bench.results.result import ResultSchemaError, SweepResult

    h, ds = tiny_handle("llama"), dataset()
    good = run_sweep(h, ds, method="atp", n_bootstrap=50, bare_torch_timings=False).to_dict()
    for field, value, message in [
        ("faithfulness", good["faithfulness"][:-1], "has 12 values for 13 sizes"),
        ("auc", "high", "must be a number, not 'high'"),
        ("sizes", "1,2,3", "must be a non-empty list of integers"),
        ("completeness_ci", [[0, 1]], "one [lo, hi] per size"),
    ]:
        path = tmp_path / f"{field}.json"
        path.write_text(json.dumps({**good, field: value}))
        with pytest.raises(ResultSchemaError) as err:
            SweepResult.from_json(path)
        assert f"{path}: field {field} " in str(err.value) and message in str(err.value)
    directory = write_dictionary(tmp_path / "sae", h)
    weights = next(directory.rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(ValueError, match=r"weights cannot be read .*copy or download them again"):
        make_basis(h, "sae", "mlp_out", f"path:{directory}")
