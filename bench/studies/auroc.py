"""Units that track a task variable: the paper's addition analysis, per basis.

Arora et al. (2026) score each neuron's RelP attribution, summed over positions, one-vs-rest by
AUROC for the sum mod n and report neurons with AUROC ≥ 0.9 or ≤ 0.1. Steps of :func:`auroc`:

1. the class of each pair from its prompt (:func:`tasks.addition.operands`): the sum mod 2,
   mod 5, mod 10 and its tens digit;
2. per basis and pair, every node's attribution (one pair at a time, against ``patch``),
   summed over positions: node = (layer, unit), plus one error node per layer for
   dictionaries; and every node's activation at the last position;
3. per node, family and class c, the one-vs-rest AUROC of the node's value between pairs of
   class c and the others (scipy's Mann–Whitney U / (n_c · n_rest)); classes with fewer than
   two pairs on either side are left out;
4. per basis and family: how many nodes reach AUROC ≥ 0.9 or ≤ 0.1 for some class, raw and per
   node of the basis (so a wider dictionary is not favoured by its size), and a histogram of
   each node's max over classes of |AUROC − 0.5| + 0.5.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import stats

from bench.attribution.attribute import attribute
from bench.cell import CELL
from bench.model.handle import ModelHandle
from bench.results.provenance import library_versions
from bench.sweep.units import unit_values
from tasks.addition import operands
from tasks.validate import encode

log = logging.getLogger(__name__)

FAMILIES = {
    "sum_mod_2": lambda s: s % 2,
    "sum_mod_5": lambda s: s % 5,
    "sum_mod_10": lambda s: s % 10,
    "tens_digit": lambda s: s // 10,
}
HIGH, LOW = 0.9, 0.1
BINS = np.linspace(0.5, 1.0, 11)  # histogram of max |AUROC − 0.5| + 0.5
AUROC_FORMAT = 1


def one_vs_rest(values: np.ndarray, labels: np.ndarray) -> dict[int, np.ndarray]:
    """AUROC [nodes] of each node's value for class c against the rest, per class c.
    values: [pairs, nodes]; labels: [pairs]."""
    out = {}
    for c in np.unique(labels):
        pos, neg = values[labels == c], values[labels != c]
        if len(pos) < 2 or len(neg) < 2:
            continue
        u = stats.mannwhitneyu(pos, neg, axis=0, alternative="two-sided").statistic  # [nodes]
        out[int(c)] = np.asarray(u, dtype=float) / (len(pos) * len(neg))
    return out


def _per_pair_attribution(handle, basis, split, method: str) -> np.ndarray:
    """[pairs, nodes]: each pair's attribution summed over positions (units, then errors)."""
    rows = []
    for i in range(split["clean_ids"].shape[0]):
        one = {k: v[i : i + 1] for k, v in split.items()}
        sc = attribute(handle, basis, one, method, batch_size=1)
        parts = [sc.units.sum(1).reshape(-1)]  # [layers * n]
        if sc.error is not None:
            parts.append(sc.error.sum(1))  # [layers]
        rows.append(torch.cat(parts).double().cpu().numpy())
    return np.stack(rows)


def _last_activations(handle, basis, split) -> np.ndarray:
    """[pairs, nodes]: every unit's value at the last position (error nodes: their norm)."""
    with torch.no_grad(), unit_values(handle, basis) as vals:
        handle.model(input_ids=split["clean_ids"], logits_to_keep=1)
    parts = [torch.cat([vals[layer].units[:, -1] for layer in sorted(vals)], -1)]
    if basis.has_error:
        parts.append(
            torch.stack([vals[layer].error[:, -1].norm(dim=-1) for layer in sorted(vals)], -1)
        )
    return torch.cat(parts, -1).double().cpu().numpy()


def summarize(values: np.ndarray, sums: np.ndarray) -> dict[str, Any]:
    """Step 3-4 for one basis and one kind of value (attribution or activation)."""
    out = {}
    n_nodes = values.shape[1]
    for family, of in FAMILIES.items():
        per_class = one_vs_rest(values, np.array([of(s) for s in sums]))
        if not per_class:
            out[family] = {"classes": [], "n_high": 0, "n_low": 0, "n_either": 0}
            continue
        a = np.stack(list(per_class.values()))  # [classes, nodes]
        high, low = (a >= HIGH).any(0), (a <= LOW).any(0)
        strength = (np.abs(a - 0.5) + 0.5).max(0)  # [nodes]
        hist, _ = np.histogram(strength, BINS)
        either = int((high | low).sum())
        out[family] = {
            "classes": sorted(per_class), "n_high": int(high.sum()), "n_low": int(low.sum()),
            "n_either": either, "per_node": either / n_nodes,
            "histogram": {"bins": BINS.tolist(), "counts": hist.astype(int).tolist()},
            "best": float(strength.max()),
        }  # fmt: skip
    return out


def auroc(
    handle: ModelHandle,
    ds,
    bases: Sequence[tuple[str, Any]],  # (label, Basis)
    method: str = CELL.method,
    seed: int = 0,
) -> dict[str, Any]:
    """Steps 1-4 on the train split of an addition dataset, for every basis."""
    pairs = list(ds.train)
    found = [operands(p.clean_prompt) for p in pairs]
    if any(o is None for o in found):
        raise ValueError(
            f"task {ds.task!r}: auroc needs addition prompts ('a + b ='); use addition"
        )
    sums = np.array([a + b for a, b in found])
    split = {k: v.to(handle.device) for k, v in encode(ds, handle.tokenizer)["train"].items()}
    out = []
    for label, basis in bases:
        torch.manual_seed(seed)
        attributions = _per_pair_attribution(handle, basis, split, method)  # [pairs, nodes]
        activations = _last_activations(handle, basis, split)
        n_nodes = attributions.shape[1]
        out.append({
            "basis": label, "n_nodes": int(n_nodes),
            "attribution": summarize(attributions, sums),
            "activation": summarize(activations, sums),
        })  # fmt: skip
        log.info("%s: %s", label, {f: v["n_either"] for f, v in out[-1]["attribution"].items()})
    protocol = {
        "format": AUROC_FORMAT, "model": handle.name, "task": ds.task,
        "task_version": str(ds.version), "method": method, "reference": "patch",
        "n_pairs": len(pairs), "seed": seed, "thresholds": [LOW, HIGH],
        "families": list(FAMILIES), "attribution": "per pair, summed over positions",
        "activation": "last position (error nodes: the norm of the error vector)",
        "versions": library_versions(),
    }  # fmt: skip
    return {"bases": out, "protocol": protocol}
