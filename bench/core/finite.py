"""Non-finite checks: a NaN never reaches a cache entry or a result.

:func:`check_finite` (one tensor), :func:`check_finite_scores`, :func:`check_finite_metrics` and
:func:`check_finite_curves` stop a run at the stage that produced the NaN, naming it;
:func:`nonfinite_fields` lists the non-finite fields of plain data before it is written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def nonfinite_fields(data: Any, prefix: str = "") -> list[str]:
    """Paths (``faithfulness[3]``, ``timings.sweep_s``) of every NaN or ±inf float in ``data``."""
    out: list[str] = []
    if isinstance(data, float):
        if not math.isfinite(data):
            out.append(f"{prefix or '<value>'} = {data}")
    elif isinstance(data, Mapping):
        for k, v in data.items():
            out += nonfinite_fields(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(data, list | tuple):
        for i, v in enumerate(data):
            out += nonfinite_fields(v, f"{prefix}[{i}]")
    return out


def _count_nonfinite(values) -> tuple[int, int, str]:
    import numpy as np

    arr = np.asarray(values, dtype=float)
    bad = ~np.isfinite(arr)
    kind = "NaN" if np.isnan(arr).any() else "inf"
    return int(bad.sum()), int(arr.size), kind


def check_finite_metrics(sweep: Any, where: str) -> None:
    """A sweep's per-pair metrics (``bench.sweep.sweep.SweepMetrics``) must be finite; names the
    first that is not, and why."""
    metrics = {
        "m(M)": sweep.m_full,
        "m(∅)": sweep.m_empty,
        "m(C_k)": sweep.m_faith,
        "m(M∖C_k)": sweep.m_comp,
    }
    for name, values in metrics.items():
        n_bad, n, kind = _count_nonfinite(values)
        if n_bad:
            raise FloatingPointError(
                f"{kind} in the metric {name} ({n_bad} of {n} values) {where}: the model's logits "
                "are not finite; check the model's weights and dtype (nothing was written)"
            )


def check_finite_scores(units, error, where: str) -> None:
    """Attribution scores must be finite before they are cached or ranked."""
    import torch

    for name, t in (("units", units), ("error nodes", error)):
        if t is not None and not torch.isfinite(t).all():
            n_bad = int((~torch.isfinite(t)).sum())
            kind = "NaN" if torch.isnan(t).any() else "inf"
            raise FloatingPointError(
                f"{kind} in {n_bad} of {t.numel()} attribution scores ({name}) {where}: the "
                "model's activations, logits or gradients are not finite; check the model's "
                "weights and dtype (nothing was cached or written)"
            )


def check_finite_curves(faith, comp, m_full, m_empty, task: str) -> None:
    """Faithfulness and completeness curves must be finite; a zero denominator is explained."""
    import numpy as np

    denom = float(np.mean(m_full) - np.mean(m_empty))
    if denom == 0:
        raise FloatingPointError(
            f"task {task!r}: m(M) − m(∅) is 0 on the test split (ablating every node does not "
            "change the metric), so faithfulness is undefined; are the clean and counterfactual "
            "prompts different? (nothing was written)"
        )
    for name, curve in (("faithfulness", faith), ("completeness", comp)):
        n_bad, n, kind = _count_nonfinite(curve)
        if n_bad:
            raise FloatingPointError(
                f"task {task!r}: {kind} in {n_bad} of {n} {name} values (nothing was written)"
            )


def check_finite(t: torch.Tensor, what: str) -> None:
    """Activations at ``what`` are finite, or a FloatingPointError names the site."""
    import torch

    if not torch.isfinite(t).all():
        bad = "NaN" if torch.isnan(t).any() else "inf"
        raise FloatingPointError(f"{bad} in activations at {what}; check the model and dtype")
