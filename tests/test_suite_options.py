"""The benchmark suite's options: cells expand as documented, bad values fail fast."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _collect(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "--co", "-q", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)


def test_quick_cells():
    proc = _collect("--quick")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = [line for line in proc.stdout.splitlines() if "test_cell[" in line]
    assert len(cells) == 4
    assert any("sva_simple-neurons@mlp_acts-relp" in c for c in cells)


def test_default_cells_cover_every_task_basis_and_method():
    proc = _collect()
    cells = [line for line in proc.stdout.splitlines() if "test_cell[" in line]
    assert len(cells) == 8 * 3 * 3
    assert any("ioi-sae@mlp_out:local-atp" in c for c in cells)


def test_ladder_cells_are_the_sva_tasks_and_ioi_against_six_local_saes():
    from bench.training.config import LADDER

    proc = _collect("--ladder")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = [line for line in proc.stdout.splitlines() if "test_cell[" in line]
    assert len(LADDER) == 6 and len(cells) == 5 * (1 + 6)
    assert all(c.endswith("-relp]") for c in cells)
    assert {c.split("[")[1].split("-")[0] for c in cells} == {
        "sva_simple", "sva_within_rc", "sva_across_pp", "sva_across_rc", "ioi"}  # fmt: skip
    for name in LADDER:
        assert any(f"ioi-sae@mlp_out:local:{name}-relp" in c for c in cells)


@pytest.mark.parametrize(
    "args,message",
    [
        (("--tasks", "sva_simpel"), "unknown task(s) sva_simpel; valid: addition"),
        (("--methods", "relp,gradient"), "unknown method(s) gradient; valid: atp, ig, relp"),
        (("--bases", "neurons@mlp"), "bad basis spec 'neurons@mlp'"),
        (("--bases", "sae@mlp_out"), "needs a dictionary"),
        (("--ablation", "resample"), "unknown ablation resample; valid: patch, mean, zero, marks"),
        (("--update-reference",), "--update-reference needs --reference"),
        (("--dtype", "fp8"), "unknown dtype fp8; valid: auto, float32, bfloat16"),
        (("--bases", "sae@mlp_out:local:w1024-t16"), "did you mean w1024-t16k"),
        (("--bases", "sae@mlp_out:local:width=x"), "bad local dictionary option 'width=x'"),
        (("--quick", "--ladder"), "--quick and --ladder select different cells"),
        (("--ladder", "--bases", "neurons@mlp_out"), "--ladder sets its own bases"),
        (("--bases", "transcoder@mlp_acts:local"), "write transcoder@mlp_out:local"),
        (("--bases", "sae@mlp_out:local:width=64,k=x"), "bad local dictionary option 'k=x'"),
    ],
)
def test_bad_options_fail_fast_with_valid_choices(args, message):
    proc = _collect(*args)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr


@pytest.mark.slow
def test_runs_accumulate_and_pytest_benchmark_compare_reads_them(tmp_path):
    """Two runs of one real cell autosave two benchmark records holding the SweepResult;
    ``pytest-benchmark compare`` reads both."""
    import json

    storage = tmp_path / "history"
    cmd = [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "-q", "-p",
           "no:cacheprovider", "--tasks", "sva_simple", "--bases", "neurons@mlp_out",
           "--methods", "random", "--n-train", "4", "--n-test", "4",
           f"--benchmark-storage=file://{storage}",
           "--results-dir", str(tmp_path / "res")]  # fmt: skip
    for _ in range(2):
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = sorted(storage.rglob("*.json"))
    assert len(runs) == 2
    record = json.loads(runs[-1].read_text())["benchmarks"][0]
    assert record["extra_info"]["result"]["task"] == "sva_simple"
    assert len(record["extra_info"]["result"]["faithfulness"]) == len(
        record["extra_info"]["result"]["sizes"]
    )
    cli = "import sys; from pytest_benchmark.cli import main; sys.argv[0] = 'compare'; main()"
    compare = [sys.executable, "-c", cli, "--storage", f"file://{storage}", "compare",
               *map(str, runs)]  # fmt: skip
    proc = subprocess.run(compare, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("test_cell[sva_simple-neurons@mlp_out-random]") == 2


def test_the_baseline_cell_runs_first_in_every_group_whatever_the_bases_order():
    """neurons@mlp_acts is the denominator of the paired k ratios: it must run before the
    dictionary cells of its group, so listing it last gives the same ratios."""
    args = ("--tasks", "sva_simple", "--methods", "relp,atp")
    proc = _collect(*args, "--bases", "sae@mlp_out:local,neurons@mlp_out,neurons@mlp_acts")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = [line.split("[", 1)[1] for line in proc.stdout.splitlines() if "test_cell[" in line]
    assert cells == [
        "sva_simple-neurons@mlp_acts-relp]",
        "sva_simple-neurons@mlp_acts-atp]",
        "sva_simple-sae@mlp_out:local-relp]",
        "sva_simple-sae@mlp_out:local-atp]",
        "sva_simple-neurons@mlp_out-relp]",
        "sva_simple-neurons@mlp_out-atp]",
    ]


def test_bases_keep_a_local_dictionarys_comma_separated_options():
    """Issue: the README's local:width=W,k=K,... form was split at its commas ('bad basis spec
    'k=8''); a comma starts a new spec only before '<basis>@'."""
    from bench.suite.options import split_bases

    specs = "sae@mlp_out:local:width=64,k=8,tokens=2048, neurons@mlp_acts,neurons@mlp_out"
    local = "sae@mlp_out:local:width=64,k=8,tokens=2048"
    assert split_bases(specs) == [local, "neurons@mlp_acts", "neurons@mlp_out"]
    proc = _collect("--tasks", "sva_simple", "--methods", "relp", "--bases", specs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "sva_simple-sae@mlp_out:local:width=64,k=8,tokens=2048-relp" in proc.stdout
