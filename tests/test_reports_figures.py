"""Reports figures: the Figure objects have the expected lines, labels and scales (no pixels)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from reports import load_inputs, style
from reports.cells import by_task, cell_label, k_ratios
from reports.figures import (
    C_LABEL,
    F_LABEL,
    K_LABEL,
    RATIO_LABEL,
    X_LABEL,
    data_lines,
    plot_summary,
    plot_task_curves,
)
from reports.paper import methods_figure, sva_bases_figure

INPUTS = Path(__file__).parent / "fixtures" / "reports" / "inputs"


@pytest.fixture(scope="module")
def results():
    return load_inputs([INPUTS]).sweep_results


def legend_texts(fig) -> list[str]:
    assert len(fig.legends) == 1
    return [t.get_text() for t in fig.legends[0].get_texts()]


def test_task_figure_has_one_line_per_cell_in_both_panels(results):
    rs = by_task(results)[("smollm2-135m", "sva_simple")]
    fig = plot_task_curves(rs, "sva_simple")
    ax_f, ax_c = fig.axes
    expected = [
        "neurons@mlp_acts relp",
        "neurons@mlp_acts atp",
        "neurons@mlp_acts random",
        "neurons@mlp_out relp",
        "sae@mlp_out(local, 4608 lat.) relp",
        "sae@mlp_out(local, 4608 lat.) atp",
    ]
    assert [cell_label(r) for r in rs] == expected
    assert legend_texts(fig) == expected
    for ax, ylabel in ((ax_f, F_LABEL), (ax_c, C_LABEL)):
        assert [ln.get_label() for ln in data_lines(ax)] == expected
        assert len(ax.collections) == len(expected)  # one CI band per line
        assert ax.get_xscale() == "log"
        assert ax.get_xlabel() == X_LABEL == "circuit size k (units)"
        assert ax.get_ylabel() == ylabel
    assert F_LABEL == "faithfulness F(k)"
    refs = [ln for ln in ax_f.get_lines() if ln not in data_lines(ax_f)]
    assert len(refs) == 1 and list(refs[0].get_ydata()) == [0.8, 0.8]
    assert refs[0].get_linestyle() == "--"
    assert not [ln for ln in ax_c.get_lines() if ln not in data_lines(ax_c)]
    assert fig._suptitle.get_text() == "sva_simple"


def test_colours_follow_basis_and_line_styles_follow_method(results):
    rs = by_task(results)[("smollm2-135m", "ioi")]
    fig = plot_task_curves(rs, "ioi")
    lines = {ln.get_label(): ln for ln in data_lines(fig.axes[0])}
    acts = style.basis_colour("neurons", "mlp_acts")
    assert lines["neurons@mlp_acts relp"].get_color() == acts
    assert lines["neurons@mlp_acts random"].get_color() == acts
    assert lines["sae@mlp_out(local, 4608 lat.) relp"].get_color() == style.basis_colour(
        "sae", "mlp_out"
    )
    assert lines["neurons@mlp_acts relp"].get_linestyle() == "-"
    assert lines["neurons@mlp_acts atp"].get_linestyle() == "--"
    assert lines["neurons@mlp_acts random"].get_linestyle() == ":"


def test_style_is_fixed_distinct_and_paper_sized():
    keys = [
        ("neurons", "mlp_acts"),
        ("neurons", "mlp_out"),
        ("sae", "mlp_out"),
        ("transcoder", "mlp_out"),
    ]
    colours = [style.basis_colour(b, s) for b, s in keys]
    assert len(set(colours)) == 4
    assert style.basis_colour("sae", "resid") == style.basis_colour("sae", "mlp_out")
    assert style.basis_colour("odd", "x") == style.basis_colour("odd", "x")  # stable fallback
    methods = ("relp", "atp", "ig", "exact", "random")
    assert len({str(style.method_linestyle(m)) for m in methods}) == len(methods)
    assert style.figsize(1)[0] == pytest.approx(3.4) and style.figsize(3)[0] == pytest.approx(10.2)
    assert 8 <= style.RC["font.size"] <= 9


def test_summary_figure_has_k_panel_and_ratio_panel(results):
    fig = plot_summary(results, k_ratios(results), method="relp")
    ax_k, ax_r = fig.axes
    assert fig.subfigs == []  # one model: one row, as ever
    assert ax_k.get_yscale() == "log" and ax_r.get_yscale() == "log"
    assert ax_k.get_ylabel() == K_LABEL and ax_r.get_ylabel() == RATIO_LABEL
    assert [t.get_text() for t in ax_k.get_xticklabels()] == ["ioi", "sva_simple"]
    assert legend_texts(fig) == [
        "neurons@mlp_acts",
        "neurons@mlp_out",
        "sae@mlp_out(local, 4608 lat.)",
    ]
    assert len(ax_k.containers) == 3  # one errorbar series per basis
    assert len(ax_r.containers) == 2  # one ratio per task


def inside(box, outer) -> bool:
    return outer.x0 <= box.x0 and box.x1 <= outer.x1 and outer.y0 <= box.y0 and box.y1 <= outer.y1


def test_summary_draws_one_row_of_panels_per_model(results):
    other = [dataclasses.replace(r, model="gemma-3-270m") for r in results if r.task == "ioi"]
    both = [*results, *other]
    fig = plot_summary(both, k_ratios(both), method="relp")
    rows = fig.subfigs
    assert [row._suptitle.get_text() for row in rows] == ["gemma-3-270m", "smollm2-135m"]
    assert [len(row.axes) for row in rows] == [2, 2] and len(fig.axes) == 4
    tasks = {"gemma-3-270m": ["ioi"], "smollm2-135m": ["ioi", "sva_simple"]}
    fig.draw_without_rendering()
    for row in rows:
        ax_k, ax_r = row.axes
        for ax, ylabel in ((ax_k, K_LABEL), (ax_r, RATIO_LABEL)):
            assert [t.get_text() for t in ax.get_xticklabels()] == tasks[row._suptitle.get_text()]
            assert ax.get_yscale() == "log" and ax.get_ylabel() == ylabel
            labels = [ax.yaxis.label, ax.title, *ax.get_xticklabels()]
            assert all(inside(t.get_window_extent(), row.bbox) for t in labels)
        parity = [ln for ln in ax_r.get_lines() if ln.get_label() == "_parity"]
        assert len(parity) == 1 and list(parity[0].get_ydata()) == [1.0, 1.0]
        assert all(len(c.lines[1]) for c in ax_k.containers)  # CI caps drawn
    assert [len(row.axes[0].containers) for row in rows] == [3, 3]  # one series per basis
    assert [len(row.axes[1].containers) for row in rows] == [1, 2]  # one ratio per task
    assert rows[0].axes[0].get_shared_y_axes().joined(rows[0].axes[0], rows[1].axes[0])
    assert legend_texts(fig) == [
        "neurons@mlp_acts",
        "neurons@mlp_out",
        "sae@mlp_out(local, 4608 lat.)",
    ]
    assert inside(fig.legends[0].get_window_extent(), fig.bbox)


def test_summary_is_none_without_the_method(results):
    assert plot_summary(results, [], method="ig") is None


def test_paper_sva_figure_one_panel_per_sva_task(results):
    pf = sva_bases_figure(results)
    assert pf.figure is not None and pf.notes == []
    (ax,) = pf.figure.axes  # ioi is not an SVA task
    assert ax.get_title() == "sva_simple"
    labels = ["neurons@mlp_acts", "neurons@mlp_out", "sae@mlp_out(local, 4608 lat.)"]
    assert [ln.get_label() for ln in data_lines(ax)] == labels
    assert ax.get_xscale() == "log" and ax.get_xlabel() == X_LABEL
    assert legend_texts(pf.figure) == labels


def test_paper_methods_figure_skips_missing_cells_with_a_note(results):
    pf = methods_figure(results)
    assert [ax.get_title() for ax in pf.figure.axes] == ["ioi", "sva_simple"]
    for ax in pf.figure.axes:
        assert [ln.get_label() for ln in data_lines(ax)] == ["RelP", "AtP", "random"]
    assert len(pf.notes) == 2 and all("neurons@mlp_acts ig" in n for n in pf.notes)
    assert legend_texts(pf.figure) == ["RelP", "AtP", "random"]


def test_empty_paper_figure_is_skipped_and_noted(results, tmp_path):
    ioi_only = [r for r in results if r.task == "ioi"]
    pf = sva_bases_figure(ioi_only)
    assert pf.figure is None and "not drawn" in pf.notes[-1]

    from reports import build_report

    index = build_report([INPUTS / "ioi"], tmp_path / "out", paper_preset=True)
    text = index.read_text()
    assert "*Not drawn:* paper figure 'sva_bases' not drawn" in text
    assert not (tmp_path / "out" / "paper" / "sva_bases.png").exists()
    assert (tmp_path / "out" / "paper" / "methods_neurons.png").exists()
