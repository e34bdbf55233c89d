"""Reports: loading results, tables against golden files, the built directory, errors, CLI.

The fixture (tests/fixtures/reports/inputs) is written by make_fixture.py in that folder.
Regenerate the golden tables after an intended change with
``SPARSEBENCH_UPDATE_GOLDEN=1 pytest tests/test_reports.py`` and review the diff.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest

from reports import ReportError, build_report, load_inputs
from reports import tables as T
from reports.__main__ import main
from reports.cells import cell_label, k_ratios

FIXTURES = Path(__file__).parent / "fixtures" / "reports"
INPUTS = FIXTURES / "inputs"
UPDATE = os.environ.get("SPARSEBENCH_UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="module")
def inputs():
    return load_inputs([INPUTS])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "out"
    index = build_report([INPUTS], out, paper_preset=True)
    return out, index


def one_result_dict(name: str = "sva_simple/neurons_mlp_acts_relp.json") -> dict:
    return json.loads((INPUTS / name).read_text())


def write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def check_golden(text: str, name: str) -> None:
    path = FIXTURES / name
    if UPDATE:
        path.write_text(text, encoding="utf-8", newline="\n")
    assert path.exists(), f"{path} missing; run with SPARSEBENCH_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(encoding="utf-8"), (
        f"{name} differs from the golden file; if intended, rerun with "
        "SPARSEBENCH_UPDATE_GOLDEN=1 and review the diff"
    )


# -- loading


def test_reads_result_files_and_benchmark_record_once_each(inputs):
    labels = sorted(f"{r.task}: {cell_label(r)}" for r in inputs.sweep_results)
    assert len(labels) == 12 == len(set(labels))  # ioi relp neurons is in two files: read once
    assert (
        "ioi: sae@mlp_out(local, 4608 lat.) relp" in labels
    )  # only inside the pytest-benchmark record
    assert len(inputs.files) == 11
    assert not inputs.skipped and not inputs.notes
    sources = [lr.source for lr in inputs.results if "bench_run.json" in lr.source]
    assert sources and all("benchmarks[" in s for s in sources)


def test_skips_json_that_is_no_result_with_a_warning(tmp_path, caplog):
    write_json(tmp_path / "a.json", one_result_dict())
    write_json(tmp_path / "sub" / "config.json", {"lr": 0.1})
    (tmp_path / "broken.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="reports"):
        got = load_inputs([tmp_path])
    assert len(got.results) == 1
    assert {Path(p).name for p, _ in got.skipped} == {"config.json", "broken.json"}
    assert "config.json" in caplog.text and "broken.json" in caplog.text


def test_conflicting_results_for_one_cell_keep_the_first(tmp_path, caplog):
    a = one_result_dict()
    b = dict(a, auc=0.5)
    write_json(tmp_path / "a.json", a)
    write_json(tmp_path / "b.json", b)
    with caplog.at_level(logging.WARNING, logger="reports"):
        got = load_inputs([tmp_path / "a.json", tmp_path / "b.json"])
    assert [r.auc for r in got.sweep_results] == [a["auc"]]
    assert "b.json" in got.notes[0] and "kept the first" in caplog.text


# -- tables


@pytest.mark.parametrize("suffix", ["md", "tex", "csv"])
def test_scores_table_matches_golden(inputs, suffix):
    numeric = T.scores_frame(inputs.sweep_results)
    display, n_text = T.scores_display(numeric)
    text = {
        "md": T.to_markdown(display, n_text),
        "tex": T.to_latex(display, n_text),
        "csv": T.to_csv(numeric),
    }[suffix]
    check_golden(text, f"expected.{suffix}")


@pytest.mark.parametrize("suffix", ["md", "tex", "csv"])
def test_ratio_table_matches_golden(inputs, suffix):
    numeric = T.ratios_frame(k_ratios(inputs.sweep_results))
    display, n_text = T.ratios_display(numeric)
    text = {
        "md": T.to_markdown(display, n_text),
        "tex": T.to_latex(display, n_text),
        "csv": T.to_csv(numeric),
    }[suffix]
    check_golden(text, f"expected_ratios.{suffix}")


def test_table_order_does_not_depend_on_input_order(inputs):
    files = sorted(INPUTS.rglob("*.json"), reverse=True)
    again = load_inputs(files)
    md = [
        T.to_markdown(*T.scores_display(T.scores_frame(x.sweep_results))) for x in (inputs, again)
    ]
    assert md[0] == md[1]


def test_ratio_uses_the_harness_value_else_propagates_the_cis(inputs):
    by = {(k.task, k.method): k for k in k_ratios(inputs.sweep_results)}
    paired = by[("sva_simple", "relp")]
    given = one_result_dict("sva_simple/sae_mlp_out_relp.json")["extra"]["k_ratio_vs_neurons"]
    assert not paired.propagated
    assert (paired.ratio, [paired.lo, paired.hi]) == (given["ratio"], given["ci"])
    computed = by[("ioi", "relp")]
    res = {(r.task, r.basis, r.site, r.method): r for r in inputs.sweep_results}
    sae = res[("ioi", "sae", "mlp_out", "relp")]
    neu = res[("ioi", "neurons", "mlp_acts", "relp")]
    assert computed.propagated
    assert computed.ratio == pytest.approx(sae.k_at_0_8 / neu.k_at_0_8)
    assert computed.lo == pytest.approx(sae.k_at_0_8_ci[0] / neu.k_at_0_8_ci[1])
    assert computed.hi == pytest.approx(sae.k_at_0_8_ci[1] / neu.k_at_0_8_ci[0])


def test_number_formats_are_fixed():
    assert [T.fmt_k(x) for x in (1.234, 37.25, 1249.6, None)] == ["1.23", "37.2", "1250", "n/r"]
    assert T.fmt_score(-0.0001) == "0.000" and T.fmt_score(None) == "—"
    assert T.fmt_ratio(1.5) == "1.50"


def test_formatters_escape():
    import pandas as pd

    frame = pd.DataFrame({"task": ["a_b|c"], "x": ["50%"]})
    assert "a_b\\|c" in T.to_markdown(frame, 1)
    tex = T.to_latex(frame, 1)
    assert "a\\_b|c" in tex and "50\\%" in tex and "\\toprule" in tex and "\\bottomrule" in tex


# -- the built report


def test_report_directory_has_every_output_and_working_links(built):
    out, index = built
    assert index == out / "index.md"
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    for stem in ("curves_sva_simple", "curves_ioi", "summary_k08"):
        assert {f"figures/{stem}.png", f"figures/{stem}.pdf"} <= names
    for stem in ("sva_bases", "methods_neurons"):
        assert {f"paper/{stem}.png", f"paper/{stem}.pdf"} <= names
    for stem in ("scores", "k_ratios"):
        assert {f"tables/{stem}.{s}" for s in ("md", "tex", "csv")} <= names
    text = index.read_text()
    links = set(re.findall(r"\]\(([^)]+)\)", text))
    assert links and all((out / link).is_file() for link in links)
    assert len(links) == len(names) - 1  # everything but the index itself is linked
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_index_has_provenance(built):
    text = built[1].read_text()
    for needle in (
        "smollm2-135m",
        "dea1a7b0c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9",
        "5f3c2e1d",
        "| torch | 2.13.0 (12) |",
        "| smollm2-135m | sva_simple | 1 | 300 | 40 | 8 | 6 |",
        "**Seed(s):** `0`",
        "inputs/bench_run.json",
        "no neurons@mlp_acts ig result for ioi",  # a missing paper cell is noted
        "propagated conservatively",  # the footnote on computed ratios
    ):
        assert needle in text, needle


def test_existing_directory_keeps_other_files_and_gets_replaced_ones(tmp_path):
    out = tmp_path / "out"
    (out / "tables").mkdir(parents=True)
    (out / "mine.txt").write_text("keep me")
    (out / "tables" / "scores.md").write_text("old")
    build_report([INPUTS / "sva_simple"], out)
    assert (out / "mine.txt").read_text() == "keep me"
    assert (out / "tables" / "scores.md").read_text().startswith("| task |")
    assert not (out / "paper").exists()  # --paper not asked for


# -- errors: a clear message naming the file, and nothing written


def _assert_untouched(out: Path, before: dict[str, str]) -> None:
    now = {p.relative_to(out).as_posix(): p.read_text() for p in out.rglob("*") if p.is_file()}
    assert now == before
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def _error_case(tmp_path: Path, name: str) -> Path:
    d = one_result_dict()
    if name == "newer":
        d["schema_version"] = 99
        return write_json(tmp_path / "in" / "newer.json", d)
    if name == "missing":
        del d["faithfulness_ci"]
        return write_json(tmp_path / "in" / "missing.json", d)
    if name == "bench-newer":
        d["schema_version"] = 99
        record = {"machine_info": {}, "benchmarks": [{"name": "t", "extra_info": {"result": d}}]}
        return write_json(tmp_path / "in" / "bench.json", record)
    if name == "empty-dir":
        (tmp_path / "in").mkdir()
        return tmp_path / "in"
    if name == "no-results":
        return write_json(tmp_path / "in" / "other.json", {"hello": "world"})
    raise AssertionError(name)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("newer", r"newer\.json: schema_version 99 is newer"),
        ("missing", r"missing\.json: missing field\(s\) faithfulness_ci"),
        ("bench-newer", r"bench\.json :: benchmarks\[0\] \(t\): schema_version 99 is newer"),
        ("empty-dir", r"no sweep results found in: .*in"),
        ("no-results", r"no sweep results found in: .*other\.json"),
    ],
)
@pytest.mark.parametrize("out_exists", [False, True])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, case, message, out_exists):
    bad = _error_case(tmp_path, case)
    out = tmp_path / "report"
    before: dict[str, str] = {}
    if out_exists:
        out.mkdir()
        (out / "index.md").write_text("previous report")
        before = {"index.md": "previous report"}
    # a bad file is an error even beside good ones; an empty input is one on its own
    paths = [bad] if case in ("empty-dir", "no-results") else [INPUTS / "sva_simple", bad]
    with pytest.raises(ReportError, match=message):
        build_report(paths, out)
    if out_exists:
        _assert_untouched(out, before)
    else:
        assert not out.exists()


def test_missing_path_and_no_paths_are_errors(tmp_path):
    with pytest.raises(ReportError, match="nope.json: no such file"):
        load_inputs([tmp_path / "nope.json"])
    with pytest.raises(ReportError, match="no input paths"):
        load_inputs([])


def test_a_failure_while_rendering_leaves_no_partial_files(tmp_path, monkeypatch):
    import reports.build as build

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(build.tables, "write_tables", boom)
    out = tmp_path / "report"
    with pytest.raises(RuntimeError, match="disk full"):
        build_report([INPUTS / "sva_simple"], out)
    assert list(tmp_path.iterdir()) == []


# -- CLI


def test_cli_prints_the_index_path(tmp_path, capsys):
    out = tmp_path / "r"
    assert main([str(INPUTS / "ioi"), str(INPUTS / "bench_run.json"), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "index.md")


def test_cli_error_exits_2_with_the_message(tmp_path, capsys):
    bad = _error_case(tmp_path, "missing")
    assert main([str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.json" in err
    assert not (tmp_path / "r").exists()


def test_reports_code_imports_no_model_libraries():
    src = Path(__file__).parents[1] / "reports"
    pattern = re.compile(r"^\s*(import|from)\s+(torch|transformers|sae_lens)\b", re.M)
    offenders = [p.name for p in src.glob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_several_models_variants_and_unreached_k(tmp_path):
    for f in sorted((INPUTS / "sva_simple").glob("*.json")):
        d = json.loads(f.read_text())
        write_json(tmp_path / "in" / f.name, d)
        write_json(tmp_path / "in" / f"other_{f.name}", dict(d, model="gemma-3-270m"))
    zero = one_result_dict()
    zero.update(ablation="zero", k_at_0_8=None, k_at_0_8_ci=[None, None])
    write_json(tmp_path / "in" / "zero.json", zero)
    out = tmp_path / "out"
    build_report([tmp_path / "in"], out)
    md = (out / "tables" / "scores.md").read_text()
    assert md.startswith("| model | task | basis | site | dictionary | method | variant |")
    assert (
        "| smollm2-135m | sva_simple | neurons | mlp_acts | — | relp | zero ref. | n/r [n/r, n/r] |"
        in md
    )
    assert (out / "figures" / "curves_gemma-3-270m__sva_simple.png").is_file()
    assert (out / "figures" / "curves_smollm2-135m__sva_simple.png").is_file()
    assert (out / "figures" / "summary_k08.png").is_file()
    index = (out / "index.md").read_text()
    assert "`gemma-3-270m`, `smollm2-135m`" in index


def test_index_opens_with_the_verdict_and_flags_inconsistent_cells(tmp_path):
    out = tmp_path / "out"
    build_report([INPUTS], out)
    index = (out / "index.md").read_text()
    verdict, consistency = index.index("## Verdict"), index.index("## Consistency check")
    assert verdict < consistency < index.index("## Contents")
    section = index[verdict:consistency]
    row = next(line for line in section.splitlines() if line.startswith("| sva_simple | relp"))
    assert "neurons sparser" in row or "SAE sparser" in row or "no difference at 95%" in row
    assert "sae@mlp_out:local / neurons@mlp_acts" in section
    assert "| random" not in section  # the floor gets no verdict
    # the fixture's ioi atp cells have F(non-zero) = 0.412: flagged, and only they
    flagged = [line for line in index[consistency:].splitlines() if line.startswith("- ⚠")]
    assert len(flagged) == 2 and all("ioi" in f and " atp" in f for f in flagged)
