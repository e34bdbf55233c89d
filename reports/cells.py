"""Naming, ordering and grouping the cells of a report, and the dictionary/neurons k@0.8 ratio.

Steps:

1. :func:`basis_label` / :func:`cell_label` name a cell ("neurons@mlp_acts relp",
   "sae@mlp_out(local, 2048 lat., 131k tok) relp": a dictionary's width and training tokens
   from its recorded quality, when known), adding the protocol or error mode only when not the
   default;
2. :func:`sort_results` orders cells canonically (model, task, basis, site, dictionary, method,
   ablation) so figures, legends and tables are deterministic;
3. :func:`by_task` groups results per (model, task), one figure each;
4. :func:`k_ratios` gives k@0.8(dictionary basis) / k@0.8(neurons@mlp_acts) per task and
   method: the harness's paired-bootstrap value when the result carries
   ``extra["k_ratio_vs_neurons"]``, else the ratio of the point values with a CI propagated
   conservatively from the two CIs (lo = lo_dict / hi_neu, hi = hi_dict / lo_neu).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.results.result import SweepResult
from bench.results.verdict import propagated_ratio
from reports import style

DICTIONARY_BASES = ("sae", "transcoder")
DENOMINATOR_BASIS = "neurons"  # the baseline cell of a k ratio
DENOMINATOR_SITE = "mlp_acts"


def short_dictionary(dictionary: str | None) -> str | None:
    """A dictionary name short enough for a legend ("path:/a/b/sae" -> "path:sae")."""
    if dictionary is None:
        return None
    if dictionary.startswith("path:"):
        tail = dictionary[len("path:") :].rstrip("/").rsplit("/", 1)[-1]
        return f"path:{tail}"
    return dictionary


def _count(x: Any) -> int | None:
    """A positive whole number as recorded (an int, or a float with no fraction), else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    if isinstance(x, float) and not x.is_integer():
        return None
    return int(x) if x > 0 else None


def fmt_tokens(n: int) -> str:
    """A token count to 3 significant figures: 65536 -> "65.5k", 131072 -> "131k", 2e6 -> "2M"."""
    rounded = float(f"{n:.3g}")
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if rounded >= div:
            return f"{rounded / div:.3g}{suffix}"
    return f"{rounded:.0f}"


def dictionary_size(quality: dict[str, Any] | None) -> tuple[int | None, int | None]:
    """(width, training tokens) from a result's ``dictionary_quality``; None where not recorded
    (releases and paths carry a width but no training tokens)."""
    q = quality if isinstance(quality, dict) else {}
    training = q.get("training")
    tokens = training.get("tokens") if isinstance(training, dict) else None
    return _count(q.get("width")), _count(tokens)


def dictionary_size_text(quality: dict[str, Any] | None) -> str:
    """ "2048 lat., 131k tok", "2048 lat." or "" (nothing recorded)."""
    width, tokens = dictionary_size(quality)
    parts = [f"{width} lat."] if width is not None else []
    parts += [f"{fmt_tokens(tokens)} tok"] if tokens is not None else []
    return ", ".join(parts)


def basis_label(r: SweepResult) -> str:
    """basis@site, plus (dictionary, width, training tokens) for SAEs and transcoders."""
    label = f"{r.basis}@{r.site}"
    short = short_dictionary(r.dictionary)
    if short:
        size = dictionary_size_text(r.dictionary_quality)
        label += f"({short}, {size})" if size else f"({short})"
    return label


def variant_text(ablation: str, error_mode: str | None) -> str:
    """Protocol and SAE error mode, named only when not the defaults (patch, ablate)."""
    parts = []
    if ablation == "marks":
        parts.append("marks (unmatched)")
    elif ablation != "patch":
        parts.append(f"{ablation} ref.")
    if error_mode == "keep":
        parts.append("err. kept (upper bound)")
    return ", ".join(parts)


def variant_suffix(r: SweepResult) -> str:
    text = variant_text(r.ablation, r.error_mode)
    return f" [{text}]" if text else ""


def cell_label(r: SweepResult) -> str:
    return f"{basis_label(r)} {r.method}{variant_suffix(r)}"


def sort_key(r: SweepResult) -> tuple[Any, ...]:
    return (
        r.model,
        r.task,
        style.order_key(r.basis, style.BASIS_ORDER),
        style.order_key(r.site, style.SITE_ORDER),
        style.order_key(r.dictionary, ()),
        style.order_key(r.method, style.METHOD_ORDER),
        style.order_key(r.ablation, style.ABLATION_ORDER),
        style.order_key(r.error_mode, ("keep", "ablate")),
    )


def sort_results(results: Iterable[SweepResult]) -> list[SweepResult]:
    return sorted(results, key=sort_key)


def models(results: Iterable[SweepResult]) -> list[str]:
    return sorted({r.model for r in results})


def by_task(results: Iterable[SweepResult]) -> dict[tuple[str, str], list[SweepResult]]:
    """Results grouped per (model, task), groups and members in canonical order."""
    groups: dict[tuple[str, str], list[SweepResult]] = {}
    for r in sort_results(results):
        groups.setdefault((r.model, r.task), []).append(r)
    return groups


def task_title(model: str, task: str, several_models: bool) -> str:
    return f"{model}: {task}" if several_models else task


def file_stem(*parts: str) -> str:
    """A safe file name from names that may hold '/', ':' or spaces."""
    return "__".join(re.sub(r"[^A-Za-z0-9._-]+", "_", p).strip("_") or "x" for p in parts)


@dataclass(frozen=True)
class KRatio:
    """k@0.8(dictionary basis) / k@0.8(the baseline neurons cell) for one task and method."""

    model: str
    task: str
    cell: str  # basis label of the dictionary cell, e.g. "sae@mlp_out(local, 2048 lat.)"
    basis: str
    site: str
    method: str
    variant: str  # variant_text of the dictionary cell ("" for defaults)
    denominator: str  # basis label of the baseline neurons cell
    ratio: float | None
    lo: float | None
    hi: float | None
    propagated: bool  # True: computed here from the two CIs (conservative), not paired


def ci_pair(ci: Any) -> tuple[Any, Any]:
    """(lo, hi) of a stored CI, as stored: a 2-element list or tuple; anything else (missing,
    malformed) is (None, None). The reports' one CI-pair parser."""
    return (ci[0], ci[1]) if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)


def _ci(values: Any) -> tuple[float | None, float | None]:
    lo, hi = ci_pair(values)
    return (None if lo is None else float(lo)), (None if hi is None else float(hi))


def k_ratios(results: Sequence[SweepResult]) -> list[KRatio]:
    """One ratio per dictionary-basis result that has one (from the harness or computed)."""
    baseline: dict[tuple[Any, ...], SweepResult] = {}  # the denominator cells
    for r in results:
        if r.basis == DENOMINATOR_BASIS and r.site == DENOMINATOR_SITE:
            baseline[(r.model, r.task, r.method, r.ablation)] = r
    out: list[KRatio] = []
    for r in sort_results(results):
        if r.basis not in DICTIONARY_BASES:
            continue
        ref = baseline.get((r.model, r.task, r.method, r.ablation))
        denominator = f"{DENOMINATOR_BASIS}@{DENOMINATOR_SITE}"
        given = r.extra.get("k_ratio_vs_neurons") if isinstance(r.extra, dict) else None
        if isinstance(given, dict) and given.get("ratio") is not None:
            lo, hi = _ci(given.get("ci"))
            ratio, propagated = float(given["ratio"]), False
            denominator = str(given.get("reference", denominator))  # the result's JSON key
        elif ref is not None:
            p = propagated_ratio(r, ref)  # the verdict's fallback, computed in one place
            ratio, (lo, hi), propagated = p["ratio"], p["ci"], True
        else:
            continue
        out.append(
            KRatio(
                model=r.model,
                task=r.task,
                cell=basis_label(r),
                basis=r.basis,
                site=r.site,
                method=r.method,
                variant=variant_text(r.ablation, r.error_mode),
                denominator=denominator,
                ratio=ratio,
                lo=lo,
                hi=hi,
                propagated=propagated,
            )
        )
    return out


PROPAGATED_FOOTNOTE = (
    "Ratio computed by the report from the two results' k@0.8 point values; its CI is "
    "propagated conservatively from their separate bootstrap CIs (lo = lo_dict / hi_neurons, "
    "hi = hi_dict / lo_neurons), so it is wider than a paired-bootstrap CI."
)
