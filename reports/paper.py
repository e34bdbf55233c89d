"""The ``--paper`` preset: the core figures of Arora et al. (2026), "Language Model Circuits Are
Sparse in the Neuron Basis".

Steps:

1. :func:`sva_bases_figure`: faithfulness against number of units on the SVA tasks (task names
   starting with ``sva_``), one panel per task in a row, lines for neurons@mlp_acts,
   neurons@mlp_out and every SAE, all attributed with RelP;
2. :func:`methods_figure`: RelP vs AtP vs IG vs random on neurons@mlp_acts, one panel per task;
3. a missing cell is logged and noted (not an error); a task with none of the cells gets no
   panel; a figure with no panel is not drawn and its note says so (the index lists notes).

Where a cell exists in several variants (ablation, SAE error mode), the default one (patch
protocol, error nodes ablated) is drawn.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from matplotlib.figure import Figure

from bench.results.result import SweepResult
from reports import style
from reports.cells import basis_label, by_task, task_title
from reports.figures import (
    F_LABEL,
    add_legend,
    legend_columns,
    legend_height,
    plot_curve,
    setup_curve_axes,
)

log = logging.getLogger(__name__)

SVA_PREFIX = "sva_"
PAPER_METHOD = "relp"
COMPARED_METHODS = ("relp", "atp", "ig", "random")


@dataclass
class PaperFigure:
    name: str  # file stem under paper/
    caption: str
    figure: Figure | None  # None: nothing to draw (see notes)
    notes: list[str] = field(default_factory=list)


# A panel spec: (legend label, colour, line style, result) for each line.
Line = tuple[str, str, object, SweepResult]


def _first(rs: Sequence[SweepResult], pred: Callable[[SweepResult], bool]) -> SweepResult | None:
    """The first (default-variant, as sorted) result matching ``pred``."""
    return next((r for r in rs if pred(r)), None)


def _draw(
    name: str, caption: str, title: str, panels: dict[str, list[Line]], notes: list[str]
) -> PaperFigure:
    if not panels:
        note = f"paper figure '{name}' not drawn: none of its cells are in the results"
        log.info("%s", note)
        return PaperFigure(name, caption, None, [*notes, note])
    with style.figure_rc():
        w, h = style.figsize(len(panels))
        labels = sorted({line[0] for lines in panels.values() for line in lines})
        n_labels = len(labels)
        fig = Figure(figsize=(w, h), layout="constrained")
        ncol = legend_columns(fig, n_labels, labels)
        fig.set_figheight(h + legend_height(n_labels, ncol))
        axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
        for ax, (panel_title, lines) in zip(axes, panels.items(), strict=True):
            for label, colour, ls, r in lines:
                kw = {"colour": colour, "linestyle": ls, "label": label}
                plot_curve(ax, r.sizes, r.faithfulness, r.faithfulness_ci, **kw)
            setup_curve_axes(ax, F_LABEL, threshold=True)
            ax.set_title(panel_title)
        for ax in axes[1:]:
            ax.set_ylabel("")
        fig.suptitle(title)
        add_legend(fig, list(axes), ncol=ncol)
    return PaperFigure(name, caption, fig, notes)


def _missing(notes: list[str], name: str, task: str, what: str) -> None:
    note = f"paper figure '{name}': no {what} result for {task}; left out"
    log.info("%s", note)
    notes.append(note)


def sva_bases_figure(results: Sequence[SweepResult]) -> PaperFigure:
    """Neurons (mlp_acts, mlp_out) vs SAE latents on every SVA task, RelP."""
    name = "sva_bases"
    groups = by_task(results)
    several = len({m for m, _ in groups}) > 1
    panels: dict[str, list[Line]] = {}
    notes: list[str] = []
    for (model, task), rs in groups.items():
        if not task.startswith(SVA_PREFIX):
            continue
        rs = [r for r in rs if r.method == PAPER_METHOD]
        lines: list[Line] = []
        for site in ("mlp_acts", "mlp_out"):
            r = _first(rs, lambda r, s=site: r.basis == "neurons" and r.site == s)
            if r is None:
                _missing(notes, name, task, f"neurons@{site} {PAPER_METHOD}")
                continue
            lines.append((basis_label(r), style.basis_colour(r.basis, r.site), "-", r))
        saes = {basis_label(r): r for r in reversed(rs) if r.basis == "sae"}
        if not saes:
            _missing(notes, name, task, f"sae {PAPER_METHOD}")
        for label in sorted(saes):
            r = saes[label]
            lines.append((label, style.basis_colour(r.basis, r.site), "-", r))
        if lines:
            panels[task_title(model, task, several)] = lines
    caption = (
        "Faithfulness against number of units on the SVA tasks: MLP neurons (mlp_acts), "
        "MLP-output neurons (mlp_out) and SAE latents, all ranked by RelP."
    )
    title = f"SVA tasks: neurons vs SAE latents ({style.method_name(PAPER_METHOD)})"
    return _draw(name, caption, title, panels, notes)


def methods_figure(results: Sequence[SweepResult]) -> PaperFigure:
    """RelP vs AtP vs IG vs random on neurons@mlp_acts, one panel per task."""
    name = "methods_neurons"
    groups = by_task(results)
    several = len({m for m, _ in groups}) > 1
    panels: dict[str, list[Line]] = {}
    notes: list[str] = []
    for (model, task), rs in groups.items():
        rs = [r for r in rs if r.basis == "neurons" and r.site == "mlp_acts"]
        lines: list[Line] = []
        for method in COMPARED_METHODS:
            r = _first(rs, lambda r, m=method: r.method == m)
            if r is None:
                _missing(notes, name, task, f"neurons@mlp_acts {method}")
                continue
            colour, ls = style.method_colour(method), style.method_linestyle(method)
            lines.append((style.method_name(method), colour, ls, r))
        if lines:
            panels[task_title(model, task, several)] = lines
    caption = (
        "Attribution methods compared on MLP neurons (neurons@mlp_acts): faithfulness of the "
        "top-k circuit ranked by RelP, AtP, integrated gradients and a random ranking."
    )
    return _draw(name, caption, "Attribution methods on neurons@mlp_acts", panels, notes)


def paper_figures(results: Sequence[SweepResult]) -> list[PaperFigure]:
    return [sva_bases_figure(results), methods_figure(results)]
