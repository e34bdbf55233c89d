"""Reports: the verdict against dictionary quality (reports.ladder) and the dictionary's size
in legend labels.

The inputs are synthetic SweepResults made from the report fixture's cells: two tasks, three
local SAEs of different quality (given out of quality order), the neurons@mlp_acts baselines,
and the paired ratios the harness stores in ``extra["k_ratio_vs_neurons"]``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from bench.results.result import SweepResult
from reports import build_report
from reports.cells import basis_label, cell_label, dictionary_size_text, fmt_tokens
from reports.figures import data_lines, legend_columns, plot_task_curves
from reports.ladder import find_ladders, ladder_display, ladder_frame, plot_ladders, readings

INPUTS = Path(__file__).parent / "fixtures" / "reports" / "inputs"

# dictionary: (width, training tokens, CE-loss recovered, FVU, L0); listed out of quality order
DICTIONARIES = {
    "local:w2048-t262k": (2048, 262_144, 0.72, 0.30, 32.0),
    "local:w4096-t262k": (4096, 262_144, 0.86, 0.22, 48.0),
    "local:w2048-t65k": (2048, 65_536, 0.55, 0.40, 32.0),
}
NEURONS_K = {"sva_simple": 30.0, "ioi": 100.0}  # k@0.8 of neurons@mlp_acts
# task -> dictionary -> (paired ratio, CI): above, across and below 1
RATIOS = {
    "sva_simple": {
        "local:w2048-t65k": (2.0, [1.5, 2.6]),
        "local:w2048-t262k": (1.1, [0.8, 1.5]),
        "local:w4096-t262k": (0.5, [0.3, 0.8]),
    },
    "ioi": {
        "local:w2048-t65k": (1.4, [1.1, 1.9]),
        "local:w2048-t262k": (1.2, [0.9, 1.6]),
        "local:w4096-t262k": (0.9, [0.7, 1.1]),
    },
}


def _fixture(name: str) -> dict:
    return json.loads((INPUTS / "sva_simple" / name).read_text())


def quality(width: int, tokens: int | None, ce: float | None, fvu: float, l0: float) -> dict:
    q: dict = {"width": width, "fvu": fvu, "l0": l0, "dead_fraction": 0.01}
    if ce is not None:
        q["ce_loss_recovered"] = ce
    if tokens is not None:
        q["training"] = {"tokens": tokens, "seconds": 100.0}
    return q


def neurons(task: str, method: str = "relp") -> SweepResult:
    k = NEURONS_K[task]
    d = _fixture("neurons_mlp_acts_relp.json")
    d.update(task=task, method=method, k_at_0_8=k, k_at_0_8_ci=[k * 0.7, k * 1.5])
    return SweepResult.from_dict(d)


def sae(task: str, dictionary: str, method: str = "relp", ratio=None, q=None) -> SweepResult:
    width, tokens, ce, fvu, l0 = DICTIONARIES[dictionary]
    point, ci = RATIOS[task][dictionary] if ratio is None else ratio
    k = NEURONS_K[task] * point
    d = _fixture("sae_mlp_out_relp.json")
    d.update(task=task, method=method, dictionary=dictionary, k_at_0_8=k)
    d.update(k_at_0_8_ci=[k * 0.7, k * 1.5])
    d["dictionary_quality"] = q or quality(width, tokens, ce, fvu, l0)
    d["extra"] = {"k_ratio_vs_neurons": {"ratio": point, "ci": ci, "reference": "neurons@mlp_acts"}}
    return SweepResult.from_dict(d)


def ladder_results() -> list[SweepResult]:
    out = [neurons(t) for t in RATIOS]
    return out + [sae(t, name) for t in RATIOS for name in DICTIONARIES]


# -- labels


def test_basis_label_names_width_and_training_tokens():
    r = sae("sva_simple", "local:w2048-t262k")
    assert basis_label(r) == "sae@mlp_out(local:w2048-t262k, 2048 lat., 262k tok)"
    assert cell_label(r) == "sae@mlp_out(local:w2048-t262k, 2048 lat., 262k tok) relp"
    release = sae("ioi", "local:w4096-t262k", q=quality(16384, None, 0.9, 0.1, 60.0))
    release.dictionary = "release:gemma-scope"
    assert basis_label(release) == "sae@mlp_out(release:gemma-scope, 16384 lat.)"  # no tokens
    release.dictionary_quality = None
    assert basis_label(release) == "sae@mlp_out(release:gemma-scope)"
    assert basis_label(neurons("ioi")) == "neurons@mlp_acts"
    assert [fmt_tokens(n) for n in (512, 65_536, 131_072, 999_999, 1_048_576)] == [
        "512",
        "65.5k",
        "131k",
        "1M",
        "1.05M",
    ]
    assert dictionary_size_text({"width": True, "training": {"tokens": 2.5}}) == ""  # not counts


def test_task_figure_legend_names_each_dictionary_size():
    fig = plot_task_curves([neurons("ioi"), *(sae("ioi", n) for n in DICTIONARIES)], "ioi")
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == [
        "neurons@mlp_acts relp",
        "sae@mlp_out(local:w2048-t262k, 2048 lat., 262k tok) relp",
        "sae@mlp_out(local:w2048-t65k, 2048 lat., 65.5k tok) relp",
        "sae@mlp_out(local:w4096-t262k, 4096 lat., 262k tok) relp",
    ]
    assert len(data_lines(fig.axes[0])) == 4
    # long labels get fewer legend columns, so the legend fits the figure's width
    assert legend_columns(fig, 4, labels) == 1
    assert legend_columns(fig, 4, ["neurons@mlp_acts relp"] * 4) == 4


def test_several_dictionaries_of_one_basis_get_distinct_shades_of_its_colour():
    from matplotlib.colors import to_hex

    from reports import style
    from reports.figures import plot_summary

    sae_colour = to_hex(style.basis_colour("sae", "mlp_out"))
    fig = plot_task_curves([neurons("ioi"), *(sae("ioi", n) for n in DICTIONARIES)], "ioi")
    colours = [to_hex(line.get_color()) for line in data_lines(fig.axes[0])]
    assert colours[0] == to_hex(style.basis_colour("neurons", "mlp_acts"))
    assert len(set(colours[1:])) == len(DICTIONARIES)  # told apart
    assert sae_colour in colours[1:]  # the middle shade is the basis's own colour
    one = plot_task_curves([neurons("ioi"), sae("ioi", next(iter(DICTIONARIES)))], "ioi")
    assert to_hex(data_lines(one.axes[0])[1].get_color()) == sae_colour  # one: unchanged
    from reports.cells import k_ratios

    results = ladder_results()
    summary = plot_summary(results, k_ratios(results), method="relp")
    handles = summary.legends[0].legend_handles
    assert len({to_hex(h.get_color()) for h in handles}) == 1 + len(DICTIONARIES)


# -- the ladder


def test_ladder_table_rows_are_what_the_inputs_imply():
    ladders = find_ladders(ladder_results())
    assert len(ladders) == 1
    frame = ladder_frame(ladders)
    assert list(frame["task"]) == ["ioi"] * 3 + ["sva_simple"] * 3
    order = ["local:w2048-t65k", "local:w2048-t262k", "local:w4096-t262k"]  # by CE-loss recovered
    assert list(frame["dictionary"]) == order * 2
    assert list(frame["ce_loss_recovered"]) == [0.55, 0.72, 0.86] * 2
    assert list(frame["width"]) == [2048, 2048, 4096] * 2
    assert list(frame["tokens"]) == [65_536, 262_144, 262_144] * 2
    assert list(frame["fvu"]) == [0.40, 0.30, 0.22] * 2 and list(frame["l0"]) == [32, 32, 48] * 2
    for row in frame.itertuples():
        ratio, ci = RATIOS[row.task][row.dictionary]
        assert (row.ratio, [row.ratio_lo, row.ratio_hi]) == (ratio, ci)
        assert row.k_at_0_8 == pytest.approx(NEURONS_K[row.task] * ratio)
        assert row.ratio_source == "paired"
    assert list(frame["verdict"]) == [
        "neurons sparser",
        "no difference at 95%",
        "no difference at 95%",
        "neurons sparser",
        "no difference at 95%",
        "dictionary sparser",
    ]
    display, n_text = ladder_display(frame)
    assert n_text == 2 and list(display.columns) == [
        "task",
        "dictionary",
        "width",
        "tokens",
        "CE rec.",
        "FVU",
        "L0",
        "k@0.8 [95% CI]",
        "ratio [95% CI]",
        "verdict",
    ]
    assert list(display.iloc[3]) == [
        "sva_simple",
        "local:w2048-t65k",
        "2,048",
        "65,536",
        "0.550",
        "0.400",
        "32.0",
        "60.0 [42.0, 90.0]",
        "2.00 [1.50, 2.60]",
        "neurons sparser",
    ]


def test_ladder_readings_follow_the_data():
    assert readings(find_ladders(ladder_results())) == [
        "ioi: ratio 1.40 at CE rec. 0.550 → 1.20 at 0.720 → 0.90 at 0.860; at the highest "
        "CE-loss recovered (local:w4096-t262k): no difference at 95%",
        "sva_simple: ratio 2.00 at CE rec. 0.550 → 1.10 at 0.720 → 0.50 at 0.860; at the highest "
        "CE-loss recovered (local:w4096-t262k): dictionary sparser",
    ]


def test_a_missing_paired_ratio_is_propagated_from_the_cis():
    results = ladder_results()
    unpaired = sae("ioi", "local:w2048-t65k")
    unpaired.extra = {}
    results = [r for r in results if (r.task, r.dictionary) != ("ioi", "local:w2048-t65k")]
    frame = ladder_frame(find_ladders([*results, unpaired]))
    row = frame[(frame["task"] == "ioi") & (frame["dictionary"] == "local:w2048-t65k")].iloc[0]
    assert row["ratio_source"] == "propagated"
    assert row["ratio"] == pytest.approx(1.4)
    assert row["ratio_lo"] == pytest.approx(1.4 * 0.7 / 1.5)  # lo_dict / hi_neurons
    assert row["ratio_hi"] == pytest.approx(1.4 * 1.5 / 0.7)
    assert row["verdict"] == "no difference at 95%"
    assert ladder_display(frame)[0]["ratio [95% CI]"].iloc[0] == "1.40 [0.65, 3.00]†"


def test_no_ladder_without_two_dictionaries_with_ce_loss_recovered():
    base = [neurons(t) for t in RATIOS]
    one = [*base, *(sae(t, "local:w2048-t65k") for t in RATIOS)]
    assert find_ladders(one) == []
    no_ce = [*base, *(sae(t, n) for t in RATIOS for n in DICTIONARIES)]
    for r in no_ce[2:3]:
        r.dictionary_quality.pop("ce_loss_recovered")
    assert [len(ld.rungs) for ld in find_ladders(no_ce)] == [5]  # that rung left out
    for r in no_ce[3:]:
        r.dictionary_quality.pop("ce_loss_recovered")
    assert find_ladders(no_ce) == []
    random = [sae(t, n, method="random") for t in RATIOS for n in DICTIONARIES]
    assert find_ladders(random) == []  # the floor gets no verdict


def test_one_ladder_per_method_in_canonical_order():
    atp = [sae(t, n, method="atp") for t in RATIOS for n in DICTIONARIES]
    ladders = find_ladders([*atp, *ladder_results(), *(neurons(t, "atp") for t in RATIOS)])
    assert [ld.method for ld in ladders] == ["relp", "atp"]
    assert ladders[0].title == "smollm2-135m: sae@mlp_out, RelP, patch"
    display, n_text = ladder_display(ladder_frame(ladders))
    assert n_text == 3 and display["cell"].iloc[0] == "sae@mlp_out relp"
    fig = plot_ladders(ladders)
    assert [ax.get_title() for ax in fig.axes] == [ld.title for ld in ladders]


def test_ladder_figure_points_lines_and_legend():
    fig = plot_ladders(find_ladders(ladder_results()))
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "CE-loss recovered (mean over layers)"
    assert len(ax.containers) == 6  # one point with its CI per rung
    joins = {
        ln.get_label(): ln for ln in ax.get_lines() if ln.get_label() in ("_ioi", "_sva_simple")
    }
    sva = joins["_sva_simple"]
    assert list(sva.get_xdata()) == [0.55, 0.72, 0.86]
    assert list(sva.get_ydata()) == [2.0, 1.1, 0.5]
    assert sva.get_color() != joins["_ioi"].get_color()
    parity = [ln for ln in ax.get_lines() if ln.get_label() == "_parity"]
    assert len(parity) == 1 and list(parity[0].get_ydata()) == [1.0, 1.0]
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [
        "ioi",
        "sva_simple",
        "2048 lat., 65.5k tok",
        "2048 lat., 262k tok",
        "4096 lat., 262k tok",
        "ratio 1: equally sparse",
    ]
    handles = legend.legend_handles
    assert [h.get_marker() for h in handles[2:5]] == ["o", "o", "s"]  # shape: width
    assert [h.get_fillstyle() for h in handles[2:5]] == ["none", "bottom", "bottom"]  # tokens
    sva_point = ax.containers[3]  # sva_simple, lowest CE: y 2.0, CI [1.5, 2.6]
    (bar,) = sva_point.lines[2]
    ys = bar.get_segments()[0][:, 1]
    assert (min(ys), max(ys)) == pytest.approx((1.5, 2.6))
    assert not math.isclose(ax.get_ylim()[0], ax.get_ylim()[1])


# -- the built report


def _write(results: list[SweepResult], where: Path) -> Path:
    for i, r in enumerate(results):
        r.to_json(where / f"{i:02d}_{r.task}_{r.basis}.json")
    return where


def test_report_draws_the_ladder_and_its_section(tmp_path):
    out = tmp_path / "out"
    index = build_report([_write(ladder_results(), tmp_path / "in")], out).read_text()
    for name in ("figures/ladder.png", "figures/ladder.pdf"):
        assert (out / name).stat().st_size > 0
    for suffix in ("md", "tex", "csv"):
        assert (out / "tables" / f"ladder.{suffix}").is_file()
    assert (out / "tables" / "ladder.csv").read_text().count("\n") == 7  # header + 6 rungs
    section = index[
        index.index("## Verdict against dictionary quality") : index.index("## Contents")
    ]
    assert "![k@0.8 ratio against dictionary quality](figures/ladder.png)" in section
    assert "- sva_simple: ratio 2.00 at CE rec. 0.550 → 1.10 at 0.720 → 0.50 at 0.860" in section
    assert "| sva_simple | local:w2048-t65k | 2,048 | 65,536 | 0.550 |" in section
    assert "[csv](tables/ladder.csv)" in index[index.index("## Contents") :]
    links = set(re.findall(r"\]\(([^)]+)\)", index))
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert links == names - {"index.md"}  # every file linked, every link a file


def test_report_without_a_ladder_has_no_ladder_files_or_section(tmp_path):
    out = tmp_path / "out"
    one = [neurons(t) for t in RATIOS] + [sae(t, "local:w2048-t65k") for t in RATIOS]
    index = build_report([_write(one, tmp_path / "in")], out).read_text()
    assert (out / "tables" / "scores.md").is_file()
    assert not (out / "figures" / "ladder.png").exists()
    assert not (out / "tables" / "ladder.md").exists()
    assert "dictionary quality" not in index
