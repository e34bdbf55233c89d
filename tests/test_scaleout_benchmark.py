"""The scale-out benchmark (``pytest bench --benchmark-only --scaleout N``, bench/scaleout.py):
its comparison catches a moved curve and ignores timings, its runs select the same cells, read
no attributions of another run, and the whole benchmark runs end to end on tiny cells."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_scaleout import REPO, _env

from bench.suite import scaleout

# the Ray runs need the optional extra (pip install 'sparsebench[ray]'); without it they skip
NEEDS_RAY = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="needs the [ray] extra (pip install 'sparsebench[ray]')",
)

TINY = ["--model", "tiny-llama", "--tasks", "sva_simple", "--methods", "relp,random", "--bases",
        "neurons@mlp_acts,neurons@mlp_out", "--n-train", "8", "--n-test", "4"]  # fmt: skip


def _write(directory: Path, name: str, auc: float, seconds: float) -> None:
    path = directory / "m" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auc": auc, "curve": [0.0, auc], "timings": {"sweep_s": seconds}}))


def test_compare_ignores_timings_and_names_what_moved(tmp_path):
    serial, other = tmp_path / "serial", tmp_path / "other"
    for d, seconds in ((serial, 1.0), (other, 9.0)):
        _write(d, "a.json", 0.5, seconds)
        _write(d, "b.json", 0.25, seconds)
    same = scaleout.compare(serial, other)
    assert same.identical and same.files == 2 and same.max_abs_delta_auc == 0.0
    assert "identical but timings" in same.describe()

    _write(other, "b.json", 0.2505, 9.0)  # one curve moved
    _write(other, "c.json", 0.1, 9.0)  # and a cell the serial run does not have
    (serial / "m" / "d.json").write_text((serial / "m" / "a.json").read_text())
    moved = scaleout.compare(serial, other)
    assert not moved.identical
    assert moved.differing == ["m/b.json"] and moved.extra == ["m/c.json"]
    assert moved.missing == ["m/d.json"]
    assert moved.max_abs_delta_auc == pytest.approx(5e-4)
    assert "differing: m/b.json" in moved.describe() and "ΔAUC| = 0.0005)" in moved.describe()


def test_the_runs_select_the_same_cells_and_have_caches_of_their_own(tmp_path):
    from test_bad_inputs import FakeConfig

    config = FakeConfig(**{"--quick": True, "--model": "tiny-llama", "--results-dir": "x",
                           "--reference": "baselines", "--n-test": 6})  # fmt: skip
    options = scaleout.passthrough(config)
    assert options == ["--model", "tiny-llama", "--n-test", "6", "--quick"]
    out = tmp_path / "run"
    serial = scaleout.command("serial", 1, options, out)
    assert serial[1:5] == ["-m", "pytest", "bench", "--benchmark-only"] and "-n" not in serial
    assert serial[-2:] == ["--benchmark-json", str(out / "benchmark.json")]
    xdist = scaleout.command("xdist", 3, options, out)
    assert xdist[-2:] == ["-n", "3"] and options == xdist[7:12]
    ray = scaleout.command("ray", 3, options, out)
    assert ray[1:4] == ["-m", "bench", "ray"] and ray[-4:] == ["--num-cpus", "3",
                                                               "--cpus-per-task", "1"]  # fmt: skip
    for cmd in (serial, xdist, ray):
        assert cmd[cmd.index("--results-dir") + 1] == str(out / "results")
    with pytest.raises(ValueError, match="unknown run 'dask'; valid: serial, xdist, ray"):
        scaleout.command("dask", 2, options, out)

    user = tmp_path / "user-cache"
    for entry in ("models", "saes", "attributions"):
        (user / entry).mkdir(parents=True)
    (user / "attributions" / "x.pt").write_bytes(b"scores")
    cache = scaleout.seed_cache(user, tmp_path / "run-cache")
    assert sorted(p.name for p in cache.iterdir()) == ["models", "saes"]
    assert (cache / "models").resolve() == (user / "models").resolve()
    with pytest.raises(FileExistsError):  # never a cache another run already used
        scaleout.seed_cache(user, cache)


def _bench(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "-p", "no:cacheprovider",
           *args]  # fmt: skip
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)


@pytest.mark.parametrize(
    "args,message",
    [
        (("--scaleout", "1"), "--scaleout 1: the number of workers (and Ray CPUs) to compare"),
        (("--scaleout", "2", "-n", "2"), "--scaleout runs pytest-xdist itself"),
        (("--scaleout", "2", "--reference", "baselines"), "--scaleout and --reference: the"),
    ],
)
def test_bad_scaleout_options_are_refused_before_anything_runs(args, message):
    proc = _bench("--co", "-q", *TINY, *args, env=_env())
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr


@NEEDS_RAY
def test_the_scaleout_benchmark_runs_the_three_ways_and_finds_them_identical(tmp_path):
    env = _env(tmp_path / "cache")
    history = f"file://{tmp_path / 'history'}"
    proc = _bench(*TINY, "--scaleout", "2", "--results-dir", str(tmp_path / "results"),
                  f"--benchmark-storage={history}", env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    # the three runs, not the suite's 4 cells nor their 8 sweep-path cases
    assert "3 passed, 12 deselected" in proc.stdout
    (root,) = (tmp_path / "results").glob("scaleout-*")
    summary = json.loads((root / "summary.json").read_text())
    runs = {r["mode"]: r for r in summary["runs"]}
    assert list(runs) == ["serial", "xdist", "ray"]
    for mode in ("xdist", "ray"):
        assert runs[mode]["identical"] is True and runs[mode]["max_abs_delta_auc"] == 0.0
        ratio = runs[mode]["wall_s"] / runs["serial"]["wall_s"]
        assert runs[mode]["ratio_to_serial"] == pytest.approx(ratio)
        assert len(list((root / mode / "results").rglob("*.json"))) == 4
    assert "ratios to serial" in proc.stdout and proc.stdout.count("  identical") == 2
    (record,) = (tmp_path / "history").rglob("*.json")  # the benchmark record, autosaved
    extra = {b["param"]: b["extra_info"] for b in json.loads(record.read_text())["benchmarks"]}
    assert extra["ray"]["identical_to_serial"] is True and extra["serial"]["cells"] == 4
    assert not (tmp_path / "cache" / "attributions").exists()  # runs never touch the user's
