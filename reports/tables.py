"""Score tables: pandas frames written as Markdown, LaTeX (booktabs) and CSV.

Steps:

1. :func:`scores_frame` gives one numeric row per cell (task x basis(site, dictionary) x method,
   canonical order) with k@0.8, AUC, CPR, CMD and their CIs, the consistency check (F of the
   circuit of every non-zero-score node; flagged below :data:`CONSISTENCY_FLAG`) and
   dictionary quality;
   :func:`ratios_frame` does the same for the dictionary/neurons k@0.8 ratios;
2. :func:`scores_display` / :func:`ratios_display` turn them into fixed-format strings
   ("37.2 [25.1, 52.0]", "—" when absent, "n/r" when F never reached 0.8);
3. :func:`to_markdown` and :func:`to_latex` are small formatters of our own (no tabulate;
   pandas' ``to_latex`` does not escape "_" by default), :func:`to_csv` writes the numeric frame;
4. :func:`write_tables` writes ``<stem>.md``, ``<stem>.tex`` and ``<stem>.csv``.

Every number has a fixed format and rows a fixed order, so the output is byte-stable (the
tests compare it against golden files).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench.results.result import SweepResult
from reports.cells import KRatio, cell_label, ci_pair, sort_results, variant_text

DASH = "—"
NOT_REACHED = "n/r"
QUALITY_COLUMNS = (
    ("l0", "L0", "{:.1f}"),
    ("fvu", "FVU", "{:.3f}"),
    ("ce_loss_recovered", "CE rec.", "{:.3f}"),
)
DAGGER = "†"
CONSISTENCY_FLAG = 0.9  # F(non-zero) below this: zero-scored nodes carry the task
WARN = "⚠"


def _num(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _fixed(fmt: str, x: float) -> str:
    s = fmt.format(x)
    # "-0.000" and "0.000" are the same number: keep one spelling
    return s[1:] if s.startswith("-") and float(s) == 0 else s


def fmt_k(x: Any) -> str:
    """A circuit size: 3 significant figures, no exponent ("1.25", "37.2", "1250")."""
    v = _num(x)
    if v is None:
        return NOT_REACHED
    if abs(v) >= 100:
        return _fixed("{:.0f}", v)
    return _fixed("{:.1f}", v) if abs(v) >= 10 else _fixed("{:.2f}", v)


def fmt_score(x: Any) -> str:
    v = _num(x)
    return DASH if v is None else _fixed("{:.3f}", v)


def fmt_ratio(x: Any) -> str:
    v = _num(x)
    if v is None:
        return DASH
    return _fixed("{:.2f}", v) if abs(v) < 100 else _fixed("{:.0f}", v)


def with_ci(point: str, lo: str, hi: str) -> str:
    return f"{point} [{lo}, {hi}]"


def scores_frame(results: Sequence[SweepResult]) -> pd.DataFrame:
    """One numeric row per cell, in canonical order (the CSV table)."""
    rows = []
    for r in sort_results(results):
        quality = r.dictionary_quality or {}
        k_lo, k_hi = ci_pair(r.k_at_0_8_ci)
        row: dict[str, Any] = {
            "model": r.model,
            "task": r.task,
            "basis": r.basis,
            "site": r.site,
            "dictionary": r.dictionary,
            "method": r.method,
            "ablation": r.ablation,
            "error_mode": r.error_mode,
            "n_nodes": r.n_nodes,
            "k_at_0_8": _num(r.k_at_0_8),
            "k_at_0_8_lo": _num(k_lo),
            "k_at_0_8_hi": _num(k_hi),
            "f_nonzero": _num((r.consistency or {}).get("f_nonzero")),
            "zero_score_fraction": _num((r.consistency or {}).get("zero_score_fraction")),
        }
        for name in ("auc", "cpr", "cmd"):
            lo, hi = ci_pair(getattr(r, f"{name}_ci"))
            row[name] = _num(getattr(r, name))
            row[f"{name}_lo"], row[f"{name}_hi"] = _num(lo), _num(hi)
        for key, _, _ in QUALITY_COLUMNS:
            row[key] = _num(quality.get(key))
        rows.append(row)
    return pd.DataFrame(rows)


def scores_display(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Strings for Markdown/LaTeX, and how many leading columns are text (left-aligned)."""
    several_models = frame["model"].nunique() > 1
    variants = (frame["ablation"] != "patch").any() or (frame["error_mode"] == "keep").any()
    out: dict[str, list[str]] = {}
    if several_models:
        out["model"] = list(frame["model"])
    out["task"] = list(frame["task"])
    out["basis"] = list(frame["basis"])
    out["site"] = list(frame["site"])
    out["dictionary"] = [DASH if _isna(d) else str(d) for d in frame["dictionary"]]
    out["method"] = list(frame["method"])
    if variants:
        out["variant"] = [
            variant_text(a, None if _isna(e) else e) or DASH
            for a, e in zip(frame["ablation"], frame["error_mode"], strict=True)
        ]
    n_text = len(out)
    out["k@0.8 [95% CI]"] = [
        with_ci(fmt_k(k), fmt_k(lo), fmt_k(hi))
        for k, lo, hi in zip(
            frame["k_at_0_8"], frame["k_at_0_8_lo"], frame["k_at_0_8_hi"], strict=True
        )
    ]
    out["AUC [95% CI]"] = [
        with_ci(fmt_score(a), fmt_score(lo), fmt_score(hi))
        for a, lo, hi in zip(frame["auc"], frame["auc_lo"], frame["auc_hi"], strict=True)
    ]
    out["F(non-zero)"] = [
        fmt_score(x) + (f" {WARN}" if _num(x) is not None and x < CONSISTENCY_FLAG else "")
        for x in frame["f_nonzero"]
    ]
    out["CPR"] = [fmt_score(x) for x in frame["cpr"]]
    out["CMD"] = [fmt_score(x) for x in frame["cmd"]]
    for key, title, fmt in QUALITY_COLUMNS:
        out[title] = [DASH if _num(x) is None else _fixed(fmt, float(x)) for x in frame[key]]
    return pd.DataFrame(out), n_text


def _isna(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def ratios_frame(ratios: Sequence[KRatio]) -> pd.DataFrame:
    cols = ["model", "task", "cell", "method", "variant", "reference", "ratio", "ratio_lo"]
    cols += ["ratio_hi", "source"]
    rows = [
        {
            "model": k.model,
            "task": k.task,
            "cell": k.cell,
            "method": k.method,
            "variant": k.variant,
            "reference": k.denominator,  # column name kept: the CSV is read elsewhere
            "ratio": k.ratio,
            "ratio_lo": k.lo,
            "ratio_hi": k.hi,
            "source": "propagated" if k.propagated else "paired bootstrap",
        }
        for k in ratios
    ]
    return pd.DataFrame(rows, columns=cols)


def ratios_display(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    out: dict[str, list[str]] = {}
    if frame["model"].nunique() > 1:
        out["model"] = list(frame["model"])
    out["task"] = list(frame["task"])
    out["cell"] = [
        f"{c} {m}" + (f" [{v}]" if v else "")
        for c, m, v in zip(frame["cell"], frame["method"], frame["variant"], strict=True)
    ]
    out["reference"] = list(frame["reference"])
    n_text = len(out)
    out["k@0.8 ratio [95% CI]"] = [
        with_ci(fmt_ratio(r), fmt_ratio(lo), fmt_ratio(hi)) + (DAGGER if s == "propagated" else "")
        for r, lo, hi, s in zip(
            frame["ratio"], frame["ratio_lo"], frame["ratio_hi"], frame["source"], strict=True
        )
    ]
    return pd.DataFrame(out), n_text


# -- formatters


def _md_cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def to_markdown(frame: pd.DataFrame, n_text: int) -> str:
    """A GitHub-flavoured Markdown table; text columns left-, numbers right-aligned."""
    header = "| " + " | ".join(_md_cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join(":---" if i < n_text else "---:" for i in range(frame.shape[1])) + "|"
    body = ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join([header, rule, *body]) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    DASH: "---",
    DAGGER: r"\textsuperscript{\dag}",
}


def latex_escape(s: Any) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(s))


def to_latex(frame: pd.DataFrame, n_text: int, group_column: str = "task") -> str:
    """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``); a rule between tasks."""
    spec = "l" * n_text + "r" * (frame.shape[1] - n_text)
    lines = [
        "% generated by sparsebench reports; needs \\usepackage{booktabs}",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(latex_escape(c) for c in frame.columns) + " \\\\",
        "\\midrule",
    ]
    group = list(frame[group_column]) if group_column in frame.columns else [None] * len(frame)
    col = list(frame.columns).index(group_column) if group_column in frame.columns else -1
    for i, row in enumerate(frame.itertuples(False)):
        cells = [latex_escape(v) for v in row]
        if i > 0 and group[i] == group[i - 1] and col >= 0:
            cells[col] = ""
        elif i > 0 and col >= 0:
            lines.append("\\midrule")
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, float_format="%.8g", na_rep="", lineterminator="\n")


def write_tables(
    numeric: pd.DataFrame, display: pd.DataFrame, n_text: int, stem: Path
) -> list[Path]:
    """``stem``.md / .tex / .csv; returns the paths written."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(s) for s in (".md", ".tex", ".csv")]
    texts = [to_markdown(display, n_text), to_latex(display, n_text), to_csv(numeric)]
    for p, text in zip(paths, texts, strict=True):
        p.write_text(text, encoding="utf-8", newline="\n")
    return paths


def describe_cells(results: Sequence[SweepResult]) -> list[str]:
    """Cell labels in table order (for logs and the index)."""
    return [f"{r.task}: {cell_label(r)}" for r in sort_results(results)]
