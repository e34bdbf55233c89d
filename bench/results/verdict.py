"""The answer: per task, is the neuron basis sparser than a dictionary basis? Pure functions
over saved :class:`~bench.results.result.SweepResult` values (the suite prints it at the end of
a run;
``python -m reports`` writes it first in its index).

Steps of :func:`verdict_frame`:

1. group results by (model, task, method, protocol), leaving out ``random`` (the floor);
2. per group, k@0.8 [95% CI] of every basis, in the order the bases first appear;
3. per dictionary cell, the paired ratio k@0.8(dictionary) / k@0.8(neurons@mlp_acts) [95% CI]
   that the harness computed on the same test pairs (``extra["k_ratio_vs_neurons"]``); where
   a result lacks it, a ratio whose CI is propagated conservatively from the two cells' own
   CIs (lo_dict / hi_neurons, hi_dict / lo_neurons), marked †;
4. a verdict from that CI: above 1 → "neurons sparser", below 1 → "<dictionary> sparser",
   else "no difference at 95%"; when a curve never reaches F = 0.8, the basis that does wins;
5. the second axis, steering: the paired ratio k@flip0.8(dictionary) / k@flip0.8(neurons)
   (``extra["k_flip_ratio_vs_neurons"]``: circuit sizes that flip 80% of the test pairs to the
   counterfactual answer) and its verdict, the same rule; and the share of each dictionary's
   k@0.8 circuit that is error nodes (``composition``);
6. no verdict where the model gets fewer than ``tasks.metric.MIN_ACCURACY`` (70%) of the test
   pairs right (``extra["test_accuracy"]``): a circuit for a task the model cannot do is a
   circuit for noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from bench.cell import Cell
from bench.results.result import SweepResult
from tasks.metric import MIN_ACCURACY

NEURONS = ("neurons", "mlp_acts")
DICTIONARY_BASES = ("sae", "transcoder")
METHOD_ORDER = ("relp", "atp", "ig", "exact")


def _basis_order(r: SweepResult) -> tuple:
    return (r.basis in DICTIONARY_BASES, r.basis, r.site != "mlp_acts", r.site, r.dictionary or "")


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else float(a) / float(b)


def _pair(ci: Any) -> tuple[Any, Any]:
    return (ci[0], ci[1]) if isinstance(ci, list | tuple) and len(ci) == 2 else (None, None)


def propagated_ratio(r: SweepResult, neurons: SweepResult) -> dict[str, Any]:
    """k@0.8(r) / k@0.8(neurons) with a CI propagated conservatively from the two cells' own
    CIs (lo_dict / hi_neurons, hi_dict / lo_neurons; wider than a paired one): the fallback of
    the verdict and of ``python -m reports`` for results without a paired ratio."""
    (lo_d, hi_d), (lo_n, hi_n) = _pair(r.k_at_0_8_ci), _pair(neurons.k_at_0_8_ci)
    return {
        "ratio": _div(r.k_at_0_8, neurons.k_at_0_8),
        "ci": [_div(lo_d, hi_n), _div(hi_d, lo_n)],
        "propagated": True,
    }


def _propagated(r: SweepResult, neurons: SweepResult) -> dict[str, Any] | None:
    p = propagated_ratio(r, neurons)
    return p if r.k_at_0_8 is not None and neurons.k_at_0_8 is not None else None


def cell_label(r: SweepResult) -> str:
    return Cell.of_result(r).label


def fmt_k(k: float | None, ci: Sequence[float | None] | None = None) -> str:
    if k is None:
        return "not reached"
    text = f"{k:,.0f}" if k >= 100 else f"{k:.3g}"
    if ci and len(ci) == 2:
        lo, hi = ci
        lo_t = "—" if lo is None else (f"{lo:,.0f}" if lo >= 100 else f"{lo:.3g}")
        hi_t = "∞" if hi is None else (f"{hi:,.0f}" if hi >= 100 else f"{hi:.3g}")
        text += f" [{lo_t}, {hi_t}]"
    return text


def fmt_ratio(ratio: float | None, ci: Sequence[float | None] | None) -> str:
    if ratio is None:
        return "—"
    lo, hi = ci if ci and len(ci) == 2 else (None, None)
    lo_t = "0" if lo is None else f"{lo:.3g}"
    hi_t = "∞" if hi is None else f"{hi:.3g}"
    return f"{ratio:.3g} [{lo_t}, {hi_t}]"


def verdict(
    ratio: dict[str, Any] | None,
    k_dict: float | None,
    k_neurons: float | None,
    name: str,
    neither: str = "neither reaches F = 0.8",
) -> str:
    """Step 4: one verdict from the paired ratio's CI (or, failing that, the k values);
    ``neither``: what it says when no curve gets there."""
    if k_dict is None and k_neurons is None:
        return neither
    if k_dict is None:
        return "neurons sparser"
    if k_neurons is None:
        return f"{name} sparser"
    if not ratio or ratio.get("ratio") is None:
        return "no paired ratio"
    lo, hi = ratio.get("ci") or (None, None)
    if lo is not None and lo > 1:
        return "neurons sparser"
    if hi is not None and hi < 1:
        return f"{name} sparser"
    return "no difference at 95%"


def verdict_frame(results: Sequence[SweepResult]) -> pd.DataFrame:
    """Steps 1-4: one row per (model, task, method, protocol) with k@0.8 per basis and, per
    dictionary cell, the paired ratio and the verdict."""
    groups: dict[tuple, list[SweepResult]] = {}
    for r in results:
        if r.method != "random":
            groups.setdefault((r.model, r.task, r.method, r.ablation), []).append(r)
    rows = []
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    for key in sorted(groups, key=lambda g: (g[0], g[1], order.get(g[2], 99), g[2], g[3])):
        model, task, method, protocol = key
        rs = sorted(groups[key], key=_basis_order)
        row: dict[str, Any] = {"model": model, "task": task, "method": method}
        row["protocol"] = protocol
        neurons = next((r for r in rs if (r.basis, r.site) == NEURONS), None)
        for r in rs:
            row[f"k@0.8 {cell_label(r)}"] = fmt_k(r.k_at_0_8, r.k_at_0_8_ci)
        verdicts = []
        dictionaries = [r for r in rs if r.basis in DICTIONARY_BASES]
        for r in dictionaries:
            given = r.extra.get("k_ratio_vs_neurons") if isinstance(r.extra, dict) else None
            if not (given or {}).get("ratio") and neurons is not None:
                given = _propagated(r, neurons)
            given = given or {}
            text = fmt_ratio(given.get("ratio"), given.get("ci"))
            row[f"{cell_label(r)} / neurons@mlp_acts"] = text + (
                "†" if given.get("propagated") else ""
            )
            if neurons is not None:
                name = "SAE" if r.basis == "sae" else r.basis
                v = verdict(given, r.k_at_0_8, neurons.k_at_0_8, name)
                verdicts.append(v if len(dictionaries) == 1 else f"{cell_label(r)}: {v}")
        row["verdict"] = "; ".join(verdicts) if verdicts else "—"
        accuracy = (neurons or rs[0]).extra.get("test_accuracy") if isinstance(
            (neurons or rs[0]).extra, dict) else None  # fmt: skip
        if accuracy is not None and accuracy < MIN_ACCURACY:
            row["verdict"] = (
                f"none: the model gets {accuracy:.0%} of test pairs right (< {MIN_ACCURACY:.0%})"
            )
        steer = []
        for r in dictionaries:
            if r.flip_rate is None or neurons is None or neurons.flip_rate is None:
                continue  # results before schema 3 carry no flip rate
            flip = r.extra.get("k_flip_ratio_vs_neurons") if isinstance(r.extra, dict) else None
            flip = flip or {}
            row[f"{cell_label(r)} steer / neurons@mlp_acts"] = fmt_ratio(
                flip.get("ratio"), flip.get("ci")
            )
            name = "SAE" if r.basis == "sae" else r.basis
            v = verdict(flip, r.k_at_flip_0_8, neurons.k_at_flip_0_8, name,
                        neither="neither flips 80% of pairs")  # fmt: skip
            steer.append(v if len(dictionaries) == 1 else f"{cell_label(r)}: {v}")
            at = (r.composition or {}).get("k_at_0_8")
            row[f"{cell_label(r)} error nodes"] = (
                f"{at['error_nodes']}/{at['k']} ({at['error_share']:.0%})" if at else "—"
            )
        if steer:
            low = accuracy is not None and accuracy < MIN_ACCURACY
            row["steering verdict"] = "none (accuracy)" if low else "; ".join(steer)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if len(frame) and frame["model"].nunique() == 1:
        frame = frame.drop(columns="model")
    if len(frame) and frame["protocol"].nunique() == 1:
        frame = frame.drop(columns="protocol")
    return frame.fillna("—")


def task_notes(results: Sequence[SweepResult]) -> list[str]:
    """Per (model, task): pairs the task lost under the model's tokenizer (multi-token answers,
    unequal lengths, ...) with their counts, and test accuracy under ``MIN_ACCURACY``."""
    seen: dict[tuple[str, str], SweepResult] = {}
    for r in results:
        seen.setdefault((r.model, r.task), r)
    out = []
    for (model, task), r in sorted(seen.items()):
        extra = r.extra if isinstance(r.extra, dict) else {}
        dropped = {k: v for k, v in (extra.get("dataset_dropped") or {}).items() if v}
        if dropped:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(dropped.items()))
            out.append(f"{model} {task}: pairs dropped building the task: {counts} "
                       f"(kept {r.n_train} train, {r.n_test} test)")  # fmt: skip
        accuracy = extra.get("test_accuracy")
        if accuracy is not None and accuracy < MIN_ACCURACY:
            out.append(f"{model} {task}: the model gets {accuracy:.0%} of the test pairs right, "
                       f"under {MIN_ACCURACY:.0%}: no verdict")  # fmt: skip
    return out


def verdict_text(results: Sequence[SweepResult]) -> str:
    """The frame as a fixed-width table for a terminal, with the protocol under it."""
    frame = verdict_frame(results)
    if frame.empty:
        return "(no attributed cells: the verdict needs a method other than random)"
    protocols = sorted({r.ablation for r in results})
    notes = []
    for r in results:
        p = r.protocol or {}
        if p and not p.get("matched", True):
            notes.append(f"protocol {r.ablation!r}: {p.get('description', 'UNMATCHED')}")
            break
    low = [
        cell_label(r) + f" {r.task} {r.method}"
        for r in results
        if (r.consistency or {}).get("f_nonzero") is not None
        and r.method != "random"
        and r.consistency["f_nonzero"] < 0.9
    ]
    lines = [frame.to_string(index=False)]
    lines.append(
        f"\nprotocol: {', '.join(protocols)}; ratio = k@0.8(dictionary) / k@0.8(neurons@mlp_acts), "
        "paired bootstrap 95% CI over test pairs"
    )
    if "steering verdict" in frame.columns:
        lines.append(
            "steer = k@flip0.8(dictionary) / k@flip0.8(neurons@mlp_acts): nodes needed to flip 80% "
            "of test pairs to the counterfactual answer when only they are patched from x′; "
            "error nodes: of the k@0.8 circuit"
        )
    if "†" in frame.to_string():
        lines.append("† no paired ratio in the result: CI propagated from the two cells' CIs")
    lines += notes
    lines += task_notes(results)
    if low:
        lines.append(
            f"consistency check below 0.9 (F of all non-zero-score nodes) in {len(low)} cell(s): "
            + ", ".join(low[:8])
            + (" …" if len(low) > 8 else "")
        )
    return "\n".join(lines)
