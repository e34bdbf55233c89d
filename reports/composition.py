"""What each circuit is made of, and how many nodes steer: a table per basis and task.

Steps (pure over saved results; cells without schema-3 keys are left out):

1. one row per attributed cell (not ``random``): model, task, basis@site[:dictionary], method;
2. its k@0.8 circuit (``composition["k_at_0_8"]``): size, error nodes and their share, the
   layer holding most of its nodes, and how many sit at the last position;
3. the flip rate's k@flip0.8 [95% CI] (nodes that flip 80% of the test pairs to the
   counterfactual answer when only they are patched from x′) and the flip rate at all nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from bench.results.result import SweepResult
from reports.cells import cell_label, ci_pair, sort_results
from reports.tables import DASH, fmt_k, with_ci


def composition_frame(results: Sequence[SweepResult]) -> pd.DataFrame:
    """Steps 1-3 as numbers (the CSV table); empty when no result carries composition."""
    rows = []
    for r in sort_results(results):
        if r.method == "random" or r.composition is None:
            continue
        at = r.composition.get("k_at_0_8") or {}
        by_layer = at.get("by_layer") or []
        lo, hi = ci_pair(r.k_at_flip_0_8_ci)
        row: dict[str, Any] = {
            "model": r.model, "task": r.task, "cell": cell_label(r), "method": r.method,
            "k": at.get("k"), "error_nodes": at.get("error_nodes"),
            "error_share": at.get("error_share"),
            "top_layer": max(range(len(by_layer)), key=by_layer.__getitem__) if by_layer else None,
            "last_position": (at.get("by_position") or [None])[-1],
            "k_at_flip_0_8": r.k_at_flip_0_8, "k_at_flip_0_8_lo": lo, "k_at_flip_0_8_hi": hi,
            "flip_rate_all": r.flip_rate[-1] if r.flip_rate else None,
        }  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def composition_display(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Strings for Markdown/LaTeX, and how many leading columns are text."""

    def text(x: Any, fmt: str = "{}") -> str:
        return DASH if x is None or x != x else fmt.format(x)

    out: dict[str, list[str]] = {}
    if frame["model"].nunique() > 1:
        out["model"] = list(frame["model"])
    out["task"], out["cell"], out["method"] = (
        list(frame["task"]),
        list(frame["cell"]),
        list(frame["method"]),
    )
    n_text = len(out)
    out["k@0.8 circuit"] = [text(k, "{:.0f}") for k in frame["k"]]
    out["error nodes"] = [
        DASH if e is None or e != e else f"{e:.0f} ({s:.0%})"
        for e, s in zip(frame["error_nodes"], frame["error_share"], strict=True)
    ]
    out["most nodes at layer"] = [text(x, "{:.0f}") for x in frame["top_layer"]]
    out["at last position"] = [text(x, "{:.0f}") for x in frame["last_position"]]
    out["k@flip0.8 [95% CI]"] = [
        with_ci(fmt_k(k), fmt_k(lo), fmt_k(hi))
        for k, lo, hi in zip(frame["k_at_flip_0_8"], frame["k_at_flip_0_8_lo"],
                             frame["k_at_flip_0_8_hi"], strict=True)
    ]  # fmt: skip
    out["flip rate, all nodes"] = [text(x, "{:.2f}") for x in frame["flip_rate_all"]]
    return pd.DataFrame(out), n_text
