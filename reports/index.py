"""The report's ``index.md``: links to every figure and table, with provenance.

Steps (:func:`index_markdown`):

1. header: how many results from how many files; the verdict per task (:mod:`bench.results.verdict`:
   k@0.8 per basis, the paired dictionary / neurons ratio, neurons or SAE sparser); the
   consistency check, flagging every cell whose circuit of non-zero-score nodes has F < 0.9;
   when the results hold a ladder of dictionaries, the verdict against dictionary quality
   (:mod:`reports.ladder`: a reading per task, the figure and the table); a contents list
   linking every file;
2. provenance: models, per-task splits (n_train / n_test / seq_len), seeds, ablations, git
   commit(s), library versions (each version seen, with how many results carry it);
3. figures: per task (PNG shown inline, PDF linked), the summary, and the paper figures when
   asked for (with captions, or the note saying why a figure was not drawn);
4. tables: the scores and ratio tables inline (Markdown), with links to .md/.tex/.csv and the
   footnote on propagated ratio CIs;
5. notes (skipped files, conflicting duplicates, missing cells) and the list of input files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.results.result import SweepResult
from bench.results.verdict import verdict_frame
from reports.cells import PROPAGATED_FOOTNOTE, cell_label
from reports.load import Inputs
from reports.tables import CONSISTENCY_FLAG, WARN, to_markdown


@dataclass
class FigureEntry:
    title: str
    stem: str | None  # relative path without suffix; None: not drawn
    caption: str = ""


@dataclass
class TableEntry:
    title: str
    stem: str  # relative path without suffix
    markdown: str
    footnote: str = ""


@dataclass
class LadderSection:
    """The verdict against dictionary quality (:mod:`reports.ladder`)."""

    figure: FigureEntry
    table: TableEntry
    readings: list[str]  # one line per ladder and task


@dataclass
class Contents:
    inputs: Inputs
    task_figures: list[FigureEntry] = field(default_factory=list)
    summary: FigureEntry | None = None
    paper: list[FigureEntry] | None = None  # None: --paper not asked for
    tables: list[TableEntry] = field(default_factory=list)
    ladder: LadderSection | None = None  # None: no ladder of dictionaries in the results
    notes: list[str] = field(default_factory=list)


def _distinct(values: Sequence[object]) -> str:
    seen = sorted({str(v) for v in values if v is not None})
    return ", ".join(f"`{v}`" for v in seen) if seen else "—"


def _provenance(results: Sequence[SweepResult]) -> list[str]:
    lines = [
        "## Provenance",
        "",
        f"- **Model(s):** {_distinct([r.model for r in results])}",
        f"- **Seed(s):** {_distinct([r.seed for r in results])}",
        f"- **Protocol(s):** {_distinct([_protocol(r) for r in results])}",
        f"- **Git commit(s):** {_distinct([r.versions.get('git_commit') for r in results])}",
        "",
        "| model | task | task version | n_train | n_test | seq_len | results |",
        "|:---|:---|:---|---:|---:|---:|---:|",
    ]
    splits = Counter(
        (r.model, r.task, r.task_version, r.n_train, r.n_test, r.seq_len) for r in results
    )
    for (model, task, tv, n_train, n_test, seq_len), n in sorted(splits.items()):
        lines.append(f"| {model} | {task} | {tv} | {n_train} | {n_test} | {seq_len} | {n} |")
    versions: dict[str, Counter[str]] = {}
    for r in results:
        for lib, v in r.versions.items():
            if lib != "git_commit":
                versions.setdefault(lib, Counter())[str(v)] += 1
    if versions:
        lines += ["", "| library | version(s) (results) |", "|:---|:---|"]
        for lib in sorted(versions):
            seen = ", ".join(f"{v} ({n})" for v, n in sorted(versions[lib].items()))
            lines.append(f"| {lib} | {seen} |")
    return [*lines, ""]


def _protocol(r: SweepResult) -> str:
    p = r.protocol or {}
    if not p:
        return r.ablation
    how = "matched" if p.get("matched") else "UNMATCHED"
    return f"{r.ablation} (attribution {p.get('attribution_reference')}, ablation " + (
        f"{p.get('ablation_reference')}, {how})"
    )


TEXT_COLUMNS = ("model", "task", "method", "protocol")


def _verdict(results: Sequence[SweepResult]) -> list[str]:
    frame = verdict_frame(results)
    if frame.empty:
        return []
    lines = [
        "## Verdict: is the neuron basis as sparse as the dictionaries?",
        "",
        to_markdown(frame, n_text=sum(c in TEXT_COLUMNS for c in frame.columns)).rstrip("\n"),
        "",
        "k@0.8 [95% CI] per basis; ratio = k@0.8(dictionary) / k@0.8(neurons@mlp_acts) with a "
        "paired bootstrap 95% CI over test pairs (†: propagated from the two cells' CIs, "
        "wider); the verdict reads that CI against 1.",
        "",
    ]
    unmatched = sorted({r.ablation for r in results if (r.protocol or {}).get("matched") is False})
    if unmatched:
        lines += [
            f"**Unmatched protocol(s): {', '.join(unmatched)}** — attribution and ablation use "
            "different references; zero-scored nodes may carry the task (see the consistency "
            "check).",
            "",
        ]
    return lines


def _consistency(results: Sequence[SweepResult]) -> list[str]:
    checked = [r for r in results if (r.consistency or {}).get("f_nonzero") is not None]
    if not checked:
        return []
    low = [r for r in checked if r.consistency["f_nonzero"] < CONSISTENCY_FLAG]
    lines = [
        "## Consistency check",
        "",
        f"F of the circuit holding every node with a non-zero score (≈ 1 under a matched "
        f"protocol): {len(checked) - len(low)} of {len(checked)} cell(s) at or above "
        f"{CONSISTENCY_FLAG}.",
        "",
    ]
    for r in low:
        c = r.consistency
        lines.append(
            f"- {WARN} **{r.task} {cell_label(r)}**: F(non-zero) = {c['f_nonzero']:.3f}, "
            f"{c['zero_score_fraction']:.1%} of nodes score exactly 0"
        )
    return [*lines, ""] if low else lines


def _table(t: TableEntry) -> list[str]:
    lines = [t.markdown.rstrip("\n"), ""]
    if t.footnote:
        lines += [t.footnote, ""]
    return [*lines, f"[md]({t.stem}.md) · [tex]({t.stem}.tex) · [csv]({t.stem}.csv)", ""]


def _ladder(section: LadderSection | None) -> list[str]:
    if section is None:
        return []
    f = section.figure
    lines = ["## Verdict against dictionary quality", "", f.caption, ""]
    lines += [*(f"- {line}" for line in section.readings), ""]
    lines += [f"![{f.title}]({f.stem}.png)", "", f"[PNG]({f.stem}.png) · [PDF]({f.stem}.pdf)", ""]
    return [*lines, f"### {section.table.title}", "", *_table(section.table)]


def _figure(entry: FigureEntry, level: str = "###") -> list[str]:
    lines = [f"{level} {entry.title}", ""]
    if entry.stem is None:
        return [*lines, f"*Not drawn:* {entry.caption}", ""]
    if entry.caption:
        lines += [entry.caption, ""]
    lines += [
        f"![{entry.title}]({entry.stem}.png)",
        "",
        f"[PNG]({entry.stem}.png) · [PDF]({entry.stem}.pdf)",
        "",
    ]
    return lines


def index_markdown(c: Contents) -> str:
    results = c.inputs.sweep_results
    lines = [
        "# sparsebench report",
        "",
        f"{len(results)} sweep result(s) from {len(c.inputs.files)} file(s). "
        "Curves: faithfulness F(k) and completeness against circuit size k with bootstrap 95% "
        "CI bands; the dashed line marks F = 0.8.",
        "",
        *_verdict(results),
        *_consistency(results),
        *_ladder(c.ladder),
        "## Contents",
        "",
    ]
    for e in c.task_figures:
        lines.append(f"- {e.title}: [PNG]({e.stem}.png) · [PDF]({e.stem}.pdf)")
    if c.summary is not None and c.summary.stem is not None:
        s = c.summary.stem
        lines.append(f"- {c.summary.title}: [PNG]({s}.png) · [PDF]({s}.pdf)")
    if c.ladder is not None:
        s, t = c.ladder.figure.stem, c.ladder.table
        lines.append(f"- {c.ladder.figure.title}: [PNG]({s}.png) · [PDF]({s}.pdf)")
        lines.append(
            f"- table: {t.title}: [md]({t.stem}.md) · [tex]({t.stem}.tex) · [csv]({t.stem}.csv)"
        )
    for e in c.paper or []:
        if e.stem is not None:
            lines.append(f"- paper: {e.title}: [PNG]({e.stem}.png) · [PDF]({e.stem}.pdf)")
    for t in c.tables:
        lines.append(
            f"- table: {t.title}: [md]({t.stem}.md) · [tex]({t.stem}.tex) · [csv]({t.stem}.csv)"
        )
    lines += ["", *_provenance(results), "## Figures", ""]
    for e in c.task_figures:
        lines += _figure(e)
    if c.summary is not None:
        lines += _figure(c.summary)
    if c.paper is not None:
        lines += ["## Paper figures (Arora et al. 2026)", ""]
        for e in c.paper:
            lines += _figure(e)
    lines += ["## Tables", ""]
    for t in c.tables:
        lines += [f"### {t.title}", "", *_table(t)]
    notes = list(c.inputs.notes) + list(c.notes)
    notes += [f"skipped `{p}`: {why}" for p, why in c.inputs.skipped]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    lines += ["## Input files", "", *[f"- `{p}`" for p in c.inputs.files], ""]
    return "\n".join(lines)


RATIO_FOOTNOTE = f"† {PROPAGATED_FOOTNOTE}"
