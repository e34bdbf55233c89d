"""Figures: per-task curves and the cross-task summary, as matplotlib Figure objects.

Steps:

1. :func:`plot_task_curves`: for one task, faithfulness F(k) (left) and completeness (right)
   against circuit size k on a log axis, one line per basis/site/method with its bootstrap CI
   band, a dashed line at F = 0.8, and one legend under both panels;
2. :func:`plot_summary`: k@0.8 per basis per task with CI error bars (log y), and beside it the
   dictionary/neurons k@0.8 ratio with its CI (open markers: CI propagated by the report);
   with several models, one row of these two panels per model, titled with its name;
3. :func:`save_figure` writes PNG and PDF.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot, no global figure
registry, no GUI backend), so tests can inspect them and nothing leaks between calls.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from bench.results.result import SweepResult
from reports import style
from reports.cells import (
    KRatio,
    basis_label,
    cell_label,
    ci_pair,
    sort_results,
    variant_suffix,
)

log = logging.getLogger(__name__)

X_LABEL = "circuit size k (units)"
F_LABEL = "faithfulness F(k)"
C_LABEL = "completeness C(k)"
K_LABEL = "k@0.8 (units)"
RATIO_LABEL = "k@0.8 ratio (dictionary / neurons)"
ROW_TITLE_IN = 0.3  # summary: inches added per row for the model name over it


def _band(values: Sequence[Sequence[float | None]], n: int) -> tuple[np.ndarray, np.ndarray]:
    arr = np.full((n, 2), np.nan)
    for i, pair in enumerate(values[:n]):
        if isinstance(pair, (list, tuple)) and len(pair) == 2:
            arr[i] = [np.nan if v is None else float(v) for v in pair]
    return arr[:, 0], arr[:, 1]


def plot_curve(
    ax: Axes,
    sizes: Sequence[float],
    values: Sequence[float],
    ci: Sequence[Sequence[float | None]] | None,
    *,
    colour: str,
    linestyle: Any,
    label: str,
) -> None:
    """One line with its CI band (the band is left out of the legend)."""
    x = np.asarray(sizes, dtype=float)
    y = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    if ci:
        lo, hi = _band(ci, len(x))
        ax.fill_between(x, lo, hi, color=colour, alpha=style.BAND_ALPHA, linewidth=0)
    ax.plot(x, y, color=colour, linestyle=linestyle, label=label)


def setup_curve_axes(ax: Axes, ylabel: str, threshold: bool) -> None:
    ax.set_xscale("log")
    ax.set_xlabel(X_LABEL)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", axis="both")
    if threshold:
        ax.axhline(style.THRESHOLD, **style.THRESHOLD_STYLE)


def data_lines(ax: Axes) -> list[Any]:
    """The curves of an axes (reference lines have labels starting with '_')."""
    return [ln for ln in ax.get_lines() if not str(ln.get_label()).startswith("_")]


def add_legend(fig: Figure, axes: Sequence[Axes], ncol: int | None = None) -> None:
    """One legend for the whole figure, under the panels; each label once."""
    handles, labels, seen = [], [], set()
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in seen:
                seen.add(lab)
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=ncol or legend_columns(fig))


def legend_columns(fig: Figure, n_entries: int | None = None, labels: Sequence[str] = ()) -> int:
    """Legend columns that fit the figure's width: at least 1.7 in per column (a ~22-character
    label at 7.5 pt plus its handle), about 0.055 in more per character of the longest label."""
    column = max(1.7, 0.055 * max(map(len, labels), default=0) + 0.5)
    fit = max(1, int(fig.get_figwidth() / column))
    return fit if n_entries is None else max(1, min(fit, n_entries))


def legend_height(n_entries: int, ncol: int) -> float:
    """Inches to add under the panels for a legend of ``n_entries`` in ``ncol`` columns."""
    return 0.18 * -(-n_entries // max(1, ncol)) + 0.1


def series_colours(keys: Sequence[tuple[str, str, str]]) -> dict[str, str]:
    """``{label: colour}`` for (basis, site, label) series: the basis's colour, in shades when
    one basis@site appears with several dictionaries (labels) in a figure."""
    groups: dict[tuple[str, str], list[str]] = {}
    for basis, site, label in keys:
        labels = groups.setdefault((basis, site), [])
        if label not in labels:
            labels.append(label)
    out = {}
    for (basis, site), labels in groups.items():
        for i, label in enumerate(sorted(labels)):
            out[label] = style.shade(style.basis_colour(basis, site), i, len(labels))
    return out


def plot_task_curves(results: Sequence[SweepResult], title: str) -> Figure:
    """Faithfulness and completeness against k for one task, one line per cell."""
    cells = sort_results(results)
    with style.figure_rc():
        w, h = style.figsize(2)
        fig = Figure(figsize=(w, h), layout="constrained")
        ncol = min(3, legend_columns(fig, len(cells), [cell_label(r) for r in cells]))
        fig.set_figheight(h + legend_height(len(cells), ncol))
        ax_f, ax_c = fig.subplots(1, 2, sharex=True)
        colours = series_colours([(r.basis, r.site, basis_label(r)) for r in cells])
        for r in cells:
            kw = {
                "colour": colours[basis_label(r)],
                "linestyle": style.method_linestyle(r.method),
                "label": cell_label(r),
            }
            plot_curve(ax_f, r.sizes, r.faithfulness, r.faithfulness_ci, **kw)
            plot_curve(ax_c, r.sizes, r.completeness, r.completeness_ci, **kw)
        setup_curve_axes(ax_f, F_LABEL, threshold=True)
        setup_curve_axes(ax_c, C_LABEL, threshold=False)
        ax_f.set_title("faithfulness")
        ax_c.set_title("completeness")
        fig.suptitle(title)
        add_legend(fig, [ax_f], ncol=ncol)
    return fig


def _yerr(point: float, lo: float | None, hi: float | None, top: float) -> tuple[float, float]:
    lo_v = point if lo is None else min(lo, point)
    hi_v = top if hi is None else max(hi, point)
    return point - lo_v, hi_v - point


def summary_panel_width(n_tasks: int) -> float:
    """Inches per summary panel: a paper column, wider with many tasks (0.4 in per task), so
    the rotated task names do not run into each other."""
    return max(style.PANEL_WIDTH_IN, 0.4 * n_tasks)


def summary_tasks(model: str, cells: Sequence[SweepResult], ratios: Sequence[KRatio]) -> list[str]:
    """The tasks of ``model`` in the summary (with a k@0.8 or a ratio), sorted."""
    tasks = {r.task for r in cells if r.model == model}
    return sorted(tasks | {k.task for k in ratios if k.model == model})


def summary_series(cells: Sequence[SweepResult]) -> dict[str, list[SweepResult]]:
    """``{legend label: cells}``: one errorbar series per basis label (and variant)."""
    series: dict[str, list[SweepResult]] = {}
    for r in cells:
        series.setdefault(basis_label(r) + variant_suffix(r), []).append(r)
    return series


def plot_summary(
    results: Sequence[SweepResult], ratios: Sequence[KRatio], method: str = "relp"
) -> Figure | None:
    """k@0.8 per basis per task (left) and the dictionary/neurons ratio (right); None if empty.

    Only ``method`` cells are drawn. A CI end that is None (F did not reach 0.8 in some
    bootstrap samples) is drawn up to the cell's number of nodes. With several models: one
    row of panels per model (a subfigure titled with the model's name), x ticks the task
    names, each column's y axis shared so the rows compare at a glance; one legend under all.
    """
    cells = [r for r in sort_results(results) if r.method == method and r.k_at_0_8 is not None]
    ratios = [k for k in ratios if k.method == method and k.ratio is not None]
    if not cells:
        return None
    models = sorted({r.model for r in cells} | {k.model for k in ratios})
    tasks = {m: summary_tasks(m, cells, ratios) for m in models}
    series = summary_series(cells)
    colours = series_colours([(r.basis, r.site, basis_label(r)) for r in cells])
    several = len(models) > 1
    with style.figure_rc():
        n_panels = 2 if ratios else 1
        _, h = style.figsize(n_panels)
        w = n_panels * summary_panel_width(max(map(len, tasks.values())))
        fig = Figure(figsize=(w, h), layout="constrained")
        ncol = min(2 * n_panels, legend_columns(fig, len(series), list(series)))
        row_h = h + (ROW_TITLE_IN if several else 0.0)
        fig.set_figheight(row_h * len(models) + legend_height(len(series), ncol))
        rows = list(fig.subfigures(len(models), 1)) if several else [fig]
        grid = [row.subplots(1, n_panels, squeeze=False)[0] for row in rows]
        _share_columns(grid)
        for row, axes, model in zip(rows, grid, models, strict=True):
            if several:
                row.suptitle(model, fontweight="bold")
            xpos = {(model, t): i for i, t in enumerate(tasks[model])}
            _plot_k(axes[0], series, colours, xpos, method)
            for ax in axes:
                setup_task_axis(ax, tasks[model])
            if ratios:
                _plot_ratios(axes[1], ratios, xpos)
        add_legend(fig, [ax for axes in grid for ax in axes], ncol=ncol)
    return fig


def _share_columns(grid: Sequence[Sequence[Axes]]) -> None:
    """Share each column's y axis with the top row's (before anything is drawn)."""
    for axes in grid[1:]:
        for ax, top in zip(axes, grid[0], strict=True):
            ax.sharey(top)


def setup_task_axis(ax: Axes, tasks: Sequence[str]) -> None:
    """Task names as x ticks (rotated when more than three), a horizontal grid."""
    rotated = {"rotation": 35, "ha": "right", "rotation_mode": "anchor"}
    ax.set_xticks(range(len(tasks)), tasks, **(rotated if len(tasks) > 3 else {}))
    ax.set_xlim(-0.6, len(tasks) - 0.4)
    ax.grid(True, axis="y", which="major")


def _plot_k(
    ax: Axes,
    series: dict[str, list[SweepResult]],
    colours: dict[str, str],
    xpos: dict[tuple[str, str], int],
    method: str,
) -> None:
    """k@0.8 with CI error bars of the cells placed by ``xpos``, series side by side."""
    width = 0.7 / max(1, len(series))
    for j, (label, rs) in enumerate(series.items()):
        off = (j - (len(series) - 1) / 2) * width
        xs, ys, errs = [], [], []
        for r in (r for r in rs if (r.model, r.task) in xpos):
            k = float(r.k_at_0_8)  # type: ignore[arg-type]
            lo, hi = ci_pair(r.k_at_0_8_ci)
            xs.append(xpos[(r.model, r.task)] + off)
            ys.append(k)
            errs.append(_yerr(k, lo, hi, float(r.n_nodes)))
        if xs:
            ax.errorbar(
                xs,
                ys,
                yerr=np.array(errs).T,
                fmt="o",
                ms=4,
                capsize=2,
                elinewidth=0.9,
                color=colours[basis_label(rs[0])],
                label=label,
            )
    ax.set_yscale("log")
    ax.set_ylabel(K_LABEL)
    ax.set_title(f"units for F = 0.8 ({style.method_name(method)})")


def setup_ratio_axis(ax: Axes) -> None:
    """A log y axis for k@0.8 ratios, ticks at 1-2-5 written plainly ("0.5", "1", "2")."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel(RATIO_LABEL)


def _plot_ratios(ax: Axes, ratios: Sequence[KRatio], xpos: dict[tuple[str, str], int]) -> None:
    """The ratios placed by ``xpos`` (offsets and colours fixed by all ``ratios``), a line at 1."""
    labels = sorted({k.cell + (f" [{k.variant}]" if k.variant else "") for k in ratios})
    width = 0.7 / max(1, len(labels))
    colours = series_colours([(k.basis, k.site, k.cell) for k in ratios])
    shown = [k for k in ratios if (k.model, k.task) in xpos]
    for k in shown:
        label = k.cell + (f" [{k.variant}]" if k.variant else "")
        j = labels.index(label)
        x = xpos[(k.model, k.task)] + (j - (len(labels) - 1) / 2) * width
        colour = colours[k.cell]
        point = float(k.ratio)  # type: ignore[arg-type]
        err = _yerr(point, k.lo, k.hi, point)
        ax.errorbar(
            [x],
            [point],
            yerr=np.array([err]).T,
            fmt="D" if k.propagated else "o",
            ms=4,
            capsize=2,
            elinewidth=0.9,
            color=colour,
            mfc="white" if k.propagated else colour,
            label=f"_ratio {label}",
        )
    ax.axhline(1.0, color="0.3", linewidth=0.7, zorder=1, label="_parity")
    setup_ratio_axis(ax)
    ax.set_title("dictionary / neurons@mlp_acts")
    if not shown:
        _corner_note(ax, "no dictionary/neurons ratio for this model")
    elif any(k.propagated for k in shown):
        _corner_note(ax, "open ◇: CI propagated (not paired)")


def _corner_note(ax: Axes, text: str) -> None:
    ax.text(0.02, 0.02, text, transform=ax.transAxes, fontsize=6.5, color="0.3")


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """``stem``.png and ``stem``.pdf (PDF without a creation date, so reruns are identical)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    with style.figure_rc():
        fig.savefig(png, dpi=style.RC["savefig.dpi"], metadata={"Software": None})
        fig.savefig(pdf, metadata={"CreationDate": None, "Creator": None, "Producer": None})
    return [png, pdf]
