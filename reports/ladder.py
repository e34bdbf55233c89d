"""The verdict against dictionary quality: each rung of a ladder of dictionaries, its paired
k@0.8 ratio to the neurons against how good the dictionary is.

Steps:

1. :func:`find_ladders`: among dictionary-basis results (sae, transcoder; not ``random``, the
   floor) whose ``dictionary_quality`` holds ``ce_loss_recovered``, group by (model, basis,
   site, method, ablation, error_mode); a group with two or more distinct ``dictionary``
   strings is a ladder, each of its results a rung;
2. per rung: the ratio k@0.8(dictionary) / k@0.8(neurons@mlp_acts) [95% CI] as
   :func:`reports.cells.k_ratios` gives it (paired, or propagated †), the dictionary's quality
   (CE-loss recovered, FVU, L0: means over layers; width; training tokens) and the verdict read
   from the ratio's CI by :func:`bench.results.verdict.verdict` (above 1: "neurons sparser",
    below 1:
   "dictionary sparser", else "no difference at 95%");
3. :func:`ladder_frame` / :func:`ladder_display`: the table, one row per rung ordered by
   ladder, task, then CE-loss recovered (written by :func:`reports.tables.write_tables`);
4. :func:`plot_ladders`: one panel per ladder; x = CE-loss recovered, y = the ratio with its CI
   (log), a line at ratio 1; one colour per task joining its rungs in x order, a marker shape
   per width and a marker fill per token budget;
5. :func:`readings`: one line per ladder and task, from the lowest CE-loss recovered to the
   highest, with the verdict at the best dictionary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench.results.result import SweepResult
from bench.results.verdict import verdict
from reports import style
from reports.cells import (
    DENOMINATOR_BASIS,
    DENOMINATOR_SITE,
    DICTIONARY_BASES,
    KRatio,
    ci_pair,
    dictionary_size,
    dictionary_size_text,
    k_ratios,
    variant_text,
)
from reports.figures import legend_columns, legend_height, setup_ratio_axis
from reports.tables import DAGGER, DASH, fmt_k, fmt_ratio, fmt_score, with_ci

X_LABEL = "CE-loss recovered (mean over layers)"
DICTIONARY_NAME = "dictionary"  # "dictionary sparser"


@dataclass(frozen=True)
class Rung:
    result: SweepResult
    ratio: KRatio | None  # None: no paired ratio and no neurons cell to compute one
    verdict: str

    @property
    def ce(self) -> float:
        return float(self.result.dictionary_quality["ce_loss_recovered"])  # type: ignore[index]

    @property
    def point(self) -> float | None:
        return None if self.ratio is None else self.ratio.ratio


@dataclass(frozen=True)
class Ladder:
    model: str
    basis: str
    site: str
    method: str
    ablation: str
    error_mode: str | None
    rungs: tuple[Rung, ...]  # by task, then CE-loss recovered, then dictionary

    @property
    def title(self) -> str:
        protocol = variant_text(self.ablation, self.error_mode) or self.ablation
        return (
            f"{self.model}: {self.basis}@{self.site}, {style.method_name(self.method)}, {protocol}"
        )

    def by_task(self) -> dict[str, list[Rung]]:
        out: dict[str, list[Rung]] = {}
        for rung in self.rungs:
            out.setdefault(rung.result.task, []).append(rung)
        return out


def _has_ce(r: SweepResult) -> bool:
    ce = (r.dictionary_quality or {}).get("ce_loss_recovered")
    return isinstance(ce, (int, float)) and not isinstance(ce, bool) and np.isfinite(ce)


def _rung(r: SweepResult, neurons: Sequence[SweepResult]) -> Rung:
    found = k_ratios([r, *neurons])  # r is the only dictionary cell: at most its one ratio
    k = found[0] if found and found[0].ratio is not None else None
    given = None if k is None else {"ratio": k.ratio, "ci": [k.lo, k.hi]}
    cell = (r.model, r.task, r.method, r.ablation)
    base = next((n for n in neurons if (n.model, n.task, n.method, n.ablation) == cell), None)
    if base is not None:
        text = verdict(given, r.k_at_0_8, base.k_at_0_8, DICTIONARY_NAME)
    else:  # the harness's ratio alone decides (both cells reached F = 0.8 to give one)
        text = verdict(given, 1.0, 1.0, DICTIONARY_NAME) if given else "no paired ratio"
    return Rung(r, k, text)


def find_ladders(results: Sequence[SweepResult]) -> list[Ladder]:
    """Step 1-2: every ladder in ``results``, in canonical order (empty: none)."""
    neurons = [r for r in results if (r.basis, r.site) == (DENOMINATOR_BASIS, DENOMINATOR_SITE)]
    groups: dict[tuple[Any, ...], list[SweepResult]] = {}
    for r in results:
        if r.basis in DICTIONARY_BASES and r.method != "random" and _has_ce(r):
            key = (r.model, r.basis, r.site, r.method, r.ablation, r.error_mode)
            groups.setdefault(key, []).append(r)

    ladders = []
    for key in sorted(groups, key=_ladder_order):
        rs = groups[key]
        if len({r.dictionary for r in rs}) < 2:
            continue
        rungs = sorted((_rung(r, neurons) for r in rs), key=_rung_order)
        ladders.append(Ladder(*key, rungs=tuple(rungs)))
    return ladders


KEY_ORDERS = (style.BASIS_ORDER, style.SITE_ORDER, style.METHOD_ORDER, style.ABLATION_ORDER)


def _ladder_order(key: tuple[Any, ...]) -> tuple[Any, ...]:
    model, *names, error_mode = key
    ordered = (style.order_key(v, o) for v, o in zip(names, KEY_ORDERS, strict=True))
    return (model, *ordered, style.order_key(error_mode, ("ablate", "keep")))


def _rung_order(g: Rung) -> tuple[Any, ...]:
    return (g.result.task, g.ce, str(g.result.dictionary))


def _row(ld: Ladder, g: Rung) -> dict[str, Any]:
    r, k, q = g.result, g.ratio, g.result.dictionary_quality or {}
    width, tokens = dictionary_size(q)
    k_lo, k_hi = ci_pair(r.k_at_0_8_ci)
    row = {f: getattr(ld, f) for f in ("model", "basis", "site", "method", "ablation")}
    row |= {"error_mode": ld.error_mode, "task": r.task, "dictionary": r.dictionary}
    row |= {"width": width, "tokens": tokens, "ce_loss_recovered": g.ce}
    row |= {"fvu": q.get("fvu"), "l0": q.get("l0"), "k_at_0_8": r.k_at_0_8}
    row |= {"k_at_0_8_lo": k_lo, "k_at_0_8_hi": k_hi}
    row |= {"ratio": k and k.ratio, "ratio_lo": k and k.lo, "ratio_hi": k and k.hi}
    row["ratio_source"] = "" if k is None else ("propagated" if k.propagated else "paired")
    return row | {"verdict": g.verdict}


def ladder_frame(ladders: Sequence[Ladder]) -> pd.DataFrame:
    """Step 3: one numeric row per rung (the CSV table)."""
    return pd.DataFrame([_row(ld, g) for ld in ladders for g in ld.rungs])


def _count_text(x: Any) -> str:
    return DASH if x is None or pd.isna(x) else f"{int(x):,}"


def _ratio_text(r: Any, lo: Any, hi: Any, source: str) -> str:
    mark = DAGGER if source == "propagated" else ""
    return DASH if pd.isna(r) else with_ci(fmt_ratio(r), fmt_ratio(lo), fmt_ratio(hi)) + mark


def _cell_text(t: Any) -> str:
    variant = variant_text(t.ablation, None if pd.isna(t.error_mode) else t.error_mode)
    return f"{t.basis}@{t.site} {t.method}" + (f" [{variant}]" if variant else "")


def ladder_display(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Strings for Markdown/LaTeX, and how many leading columns are text."""
    out: dict[str, list[str]] = {}
    if frame["model"].nunique() > 1:
        out["model"] = list(frame["model"])
    cells = [_cell_text(t) for t in frame.itertuples()]
    if len(set(cells)) > 1:
        out["cell"] = cells
    out["task"] = list(frame["task"])
    out["dictionary"] = [str(d) for d in frame["dictionary"]]
    n_text = len(out)
    out["width"] = [_count_text(x) for x in frame["width"]]
    out["tokens"] = [_count_text(x) for x in frame["tokens"]]
    out["CE rec."] = [fmt_score(x) for x in frame["ce_loss_recovered"]]
    out["FVU"] = [fmt_score(x) for x in frame["fvu"]]
    out["L0"] = [DASH if pd.isna(x) else f"{float(x):.1f}" for x in frame["l0"]]
    out["k@0.8 [95% CI]"] = [
        with_ci(fmt_k(t.k_at_0_8), fmt_k(t.k_at_0_8_lo), fmt_k(t.k_at_0_8_hi))
        for t in frame.itertuples()
    ]
    out["ratio [95% CI]"] = [
        _ratio_text(t.ratio, t.ratio_lo, t.ratio_hi, t.ratio_source) for t in frame.itertuples()
    ]
    out["verdict"] = list(frame["verdict"])
    return pd.DataFrame(out), n_text


def _size_key(g: Rung) -> tuple[int | None, int | None]:
    return dictionary_size(g.result.dictionary_quality)


def _rank(values: set[int | None]) -> dict[int | None, int]:
    """Known values in increasing order, then None."""
    known = sorted(v for v in values if v is not None)
    return {v: i for i, v in enumerate([*known, *([None] if None in values else [])])}


GREY = "0.3"
Marker = Callable[[tuple[int | None, int | None]], dict[str, Any]]


def _panel(ax: Axes, ld: Ladder, colour: dict[str, str], marker: Marker) -> None:
    ends = [1.0]
    for task, rungs in ld.by_task().items():
        pts = [g for g in rungs if g.point is not None]
        xs, ys = [g.ce for g in pts], [float(g.point) for g in pts]  # type: ignore[arg-type]
        ax.plot(xs, ys, color=colour[task], lw=0.9, label=f"_{task}")
        for g, x, y in zip(pts, xs, ys, strict=True):
            lo, hi = g.ratio.lo, g.ratio.hi  # type: ignore[union-attr]
            lo_v, hi_v = (y if lo is None else min(lo, y)), (y if hi is None else max(hi, y))
            ends += [lo_v, hi_v]
            kw = {"color": colour[task], "capsize": 2, "elinewidth": 0.8, "label": "_rung"}
            ax.errorbar([x], [y], yerr=[[y - lo_v], [hi_v - y]], **kw, **marker(_size_key(g)))
    ax.axhline(1.0, color=GREY, lw=0.7, ls="--", zorder=1, label="_parity")
    setup_ratio_axis(ax)
    positive = [v for v in ends if v > 0]
    lo, hi = min(0.5, min(positive)), max(2.0, max(positive))
    pad = (hi / lo) ** (0.1 / 0.8)  # the outer 10% of the axis at each end: the two labels
    ax.set_ylim(lo / pad, hi * pad)
    kw = {"transform": ax.transAxes, "ha": "right", "fontsize": 6.5, "color": GREY}
    ax.text(0.98, 0.98, "↑ neurons sparser", va="top", **kw)
    ax.text(0.98, 0.02, "↓ dictionary sparser", va="bottom", **kw)
    ax.set_xlabel(X_LABEL)
    ax.set_title(ld.title)
    ax.grid(True, which="major", axis="both")


def plot_ladders(ladders: Sequence[Ladder]) -> Figure:
    """Step 4: the figure, one panel per ladder, one legend under them."""
    rungs = [g for ld in ladders for g in ld.rungs]
    tasks = sorted({g.result.task for g in rungs})
    colour = {t: style.category_colour(i) for i, t in enumerate(tasks)}
    width_rank = _rank({_size_key(g)[0] for g in rungs})
    token_rank = _rank({_size_key(g)[1] for g in rungs})
    sizes = sorted(
        {_size_key(g) for g in rungs}, key=lambda s: (width_rank[s[0]], token_rank[s[1]])
    )

    def marker(size: tuple[int | None, int | None]) -> dict[str, Any]:
        shape = style.MARKERS[width_rank[size[0]] % len(style.MARKERS)]
        fill = "full" if size[1] is None else style.FILLS[token_rank[size[1]] % len(style.FILLS)]
        return {"marker": shape, "fillstyle": fill, "markerfacecoloralt": "white", "ms": 5}

    handles = [Line2D([], [], color=colour[t], label=t) for t in tasks]
    for s in sizes:
        text = dictionary_size_text({"width": s[0], "training": {"tokens": s[1]}})
        kw = {"ls": "none", "color": GREY, "label": text or "size not recorded"}
        handles.append(Line2D([], [], **kw, **marker(s)))
    handles.append(Line2D([], [], color=GREY, lw=0.7, ls="--", label="ratio 1: equally sparse"))
    with style.figure_rc():
        w, h = style.figsize(len(ladders))
        fig = Figure(figsize=(w, h), layout="constrained")
        ncol = legend_columns(fig, len(handles), [str(h.get_label()) for h in handles])
        fig.set_figheight(h + legend_height(len(handles), ncol))
        axes = fig.subplots(1, len(ladders), squeeze=False)[0]
        for ax, ld in zip(axes, ladders, strict=True):
            _panel(ax, ld, colour, marker)
        for ax in axes[1:]:
            ax.set_ylabel("")
        fig.suptitle("k@0.8 ratio against dictionary quality")
        fig.legend(handles=handles, loc="outside lower center", ncol=ncol)
    return fig


def readings(ladders: Sequence[Ladder]) -> list[str]:
    """Step 5: "sva_simple: ratio 1.20 at CE rec. 0.550 → 0.90 at 0.850; at the highest ..."."""
    lines = []
    for ld in ladders:
        prefix = f"{ld.title} — " if len(ladders) > 1 else ""
        for task, rungs in ld.by_task().items():
            steps = [f"{fmt_ratio(g.point)} at {fmt_score(g.ce)}" for g in rungs]
            best = rungs[-1]
            lines.append(
                f"{prefix}{task}: ratio {steps[0].replace(' at ', ' at CE rec. ', 1)}"
                + "".join(f" → {s}" for s in steps[1:])
                + f"; at the highest CE-loss recovered ({best.result.dictionary}): {best.verdict}"
            )
    return lines
