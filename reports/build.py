"""Build a report directory from saved results: ``build_report(paths, out_dir, paper=...)``.

Steps:

1. read every input (:func:`reports.load.load_inputs`); a bad file or no result at all raises
   :class:`ReportError` before anything is written;
2. render into a fresh temporary directory beside ``out_dir``:
   ``figures/curves_<task>.{png,pdf}`` (per task), ``figures/summary_k08.{png,pdf}``,
   ``tables/scores.{md,tex,csv}``, ``tables/k_ratios.{md,tex,csv}``; when the results hold a
   ladder of dictionaries (:mod:`reports.ladder`) ``figures/ladder.{png,pdf}`` and
   ``tables/ladder.{md,tex,csv}``; with ``--paper`` also ``paper/sva_bases.*`` and
   ``paper/methods_neurons.*``; and last ``index.md``;
3. move each rendered file into ``out_dir`` (replacing files of the same name, leaving other
   files alone); on any error the temporary directory is removed and ``out_dir`` is untouched.

The temporary directory is named ``.<out>.partial-<pid>-<random>``; one left behind by a
killed run (its process is gone) is removed by the next run that writes to the same ``out_dir``.
An ``out_dir`` that is a file, or cannot be created, is refused before any input is read.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.core.cache import pid_alive
from reports import composition, figures, ladder, paper, tables
from reports.cells import by_task, file_stem, k_ratios, task_title
from reports.index import (
    RATIO_FOOTNOTE,
    Contents,
    FigureEntry,
    LadderSection,
    TableEntry,
    index_markdown,
)
from reports.load import Inputs, ReportError, load_inputs

log = logging.getLogger(__name__)

SUMMARY_METHOD = "relp"


def render(inputs: Inputs, root: Path, *, paper_preset: bool = False) -> list[Path]:
    """Write the whole report under ``root``; returns the files written (relative to it)."""
    results = inputs.sweep_results
    contents = Contents(inputs=inputs)
    written: list[Path] = []
    groups = by_task(results)
    several_models = len({m for m, _ in groups}) > 1

    for (model, task), rs in groups.items():
        title = task_title(model, task, several_models)
        stem = "figures/curves_" + (file_stem(model, task) if several_models else file_stem(task))
        written += figures.save_figure(figures.plot_task_curves(rs, title), root / stem)
        contents.task_figures.append(FigureEntry(title, stem))

    ratios = k_ratios(results)
    fig = figures.plot_summary(results, ratios, method=SUMMARY_METHOD)
    summary_title = "Summary: k@0.8 per basis and dictionary/neurons ratio"
    if fig is None:
        note = f"summary figure not drawn: no {SUMMARY_METHOD} result reaches F = 0.8"
        log.info("%s", note)
        contents.summary = FigureEntry(summary_title, None, note)
    else:
        stem = "figures/summary_k08"
        written += figures.save_figure(fig, root / stem)
        caption = (
            f"Left: k@0.8 per basis and task ({SUMMARY_METHOD}), bootstrap 95% CI, log scale. "
            "Right: k@0.8(dictionary) / k@0.8(neurons@mlp_acts) with its 95% CI; open "
            "diamonds mark ratios whose CI the report propagated from separate CIs (†)."
        )
        contents.summary = FigureEntry(summary_title, stem, caption)

    numeric = tables.scores_frame(results)
    display, n_text = tables.scores_display(numeric)
    written += tables.write_tables(numeric, display, n_text, root / "tables/scores")
    contents.tables.append(
        TableEntry("Scores per cell", "tables/scores", tables.to_markdown(display, n_text))
    )
    if ratios:
        numeric_r = tables.ratios_frame(ratios)
        display_r, n_text_r = tables.ratios_display(numeric_r)
        written += tables.write_tables(numeric_r, display_r, n_text_r, root / "tables/k_ratios")
        footnote = RATIO_FOOTNOTE if any(k.propagated for k in ratios) else ""
        contents.tables.append(
            TableEntry(
                "k@0.8 ratio, dictionary / neurons",
                "tables/k_ratios",
                tables.to_markdown(display_r, n_text_r),
                footnote,
            )
        )

    numeric_c = composition.composition_frame(results)
    if len(numeric_c):
        display_c, n_text_c = composition.composition_display(numeric_c)
        written += tables.write_tables(numeric_c, display_c, n_text_c, root / "tables/composition")
        contents.tables.append(
            TableEntry(
                "What each circuit is made of, and how many nodes steer",
                "tables/composition",
                tables.to_markdown(display_c, n_text_c),
                "k@flip0.8: nodes that flip 80% of the test pairs to the counterfactual answer "
                "when only they are patched from x′; error nodes: of the k@0.8 circuit.",
            )
        )

    if ladders := ladder.find_ladders(results):
        written += _render_ladder(ladders, root, contents)

    if paper_preset:
        contents.paper = []
        for pf in paper.paper_figures(results):
            contents.notes += pf.notes
            if pf.figure is None:
                contents.paper.append(FigureEntry(pf.name, None, pf.notes[-1]))
                continue
            stem = f"paper/{pf.name}"
            written += figures.save_figure(pf.figure, root / stem)
            contents.paper.append(FigureEntry(pf.name, stem, pf.caption))

    index = root / "index.md"
    index.write_text(index_markdown(contents), encoding="utf-8", newline="\n")
    written.append(index)
    return [p.relative_to(root) for p in written]


def _render_ladder(ladders: list[ladder.Ladder], root: Path, contents: Contents) -> list[Path]:
    """The verdict against dictionary quality: figure, table and readings (a ladder exists)."""
    figure_stem, table_stem = "figures/ladder", "tables/ladder"
    written = figures.save_figure(ladder.plot_ladders(ladders), root / figure_stem)
    numeric = ladder.ladder_frame(ladders)
    display, n_text = ladder.ladder_display(numeric)
    written += tables.write_tables(numeric, display, n_text, root / table_stem)
    caption = (
        "The k@0.8 ratio dictionary / neurons@mlp_acts [95% CI] of each dictionary of a ladder "
        "against its CE-loss recovered (mean over layers); log scale; one colour per task, one "
        "marker shape per width, the marker's fill by training tokens (open: fewest)."
    )
    footnote = RATIO_FOOTNOTE if (numeric["ratio_source"] == "propagated").any() else ""
    markdown = tables.to_markdown(display, n_text)
    contents.ladder = LadderSection(
        FigureEntry("k@0.8 ratio against dictionary quality", figure_stem, caption),
        TableEntry(
            "Ladder: quality and k@0.8 ratio per dictionary", table_stem, markdown, footnote
        ),
        ladder.readings(ladders),
    )
    log.info("ladder: %d group(s), %d result(s)", len(ladders), len(numeric))
    return written


def install(staging: Path, out_dir: Path, files: Sequence[Path]) -> None:
    """Move rendered files into ``out_dir``, replacing same-named files only."""
    for rel in files:
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, target)


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove staging directories of ``out`` left by killed runs (their process is gone;
    names without a pid come from versions that did not record one). Returns those removed."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.partial-(?:(\d+)-)?[A-Za-z0-9_]+$")
    removed = []
    if not out.parent.is_dir():
        return removed
    for d in out.parent.iterdir():
        m = pattern.match(d.name)
        if not m or not d.is_dir() or d.is_symlink():
            continue
        pid = int(m.group(1)) if m.group(1) else None
        if pid is not None and (pid == os.getpid() or pid_alive(pid)):
            continue  # a run in progress
        shutil.rmtree(d, ignore_errors=True)
        log.warning("removed %s, left behind by an interrupted report run", d)
        removed.append(d)
    return removed


def build_report(
    paths: Sequence[str | Path], out_dir: str | Path, *, paper_preset: bool = False
) -> Path:
    """Read ``paths``, render the report into ``out_dir``; returns the path of index.md."""
    from bench.core.checks import check_writable_parent
    from bench.core.errors import BadInputError

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out}: exists and is not a directory")
    try:
        check_writable_parent(out / "index.md", f"--out {out}")
    except BadInputError as err:
        raise ReportError(str(err)) from None
    inputs = load_inputs(paths)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    try:
        files = render(inputs, staging, paper_preset=paper_preset)
        install(staging, out, files)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("report: %d file(s) in %s", len(files), out)
    return out / "index.md"
