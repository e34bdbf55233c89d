"""Multiplier steering, per basis (Arora et al. 2026's steering, automated and identical for
every basis; their code multiplies hand-picked neurons by −4…4 where they are circuit nodes).

Steps of :func:`steer`:

1. per basis, attribute on the train split (the suite's method and ``patch`` protocol) and
   rank the units (latents or neurons; error nodes are not units and are never steered) by
   |score|;
2. per k, the top-k units: (layer, position, unit) nodes; on each test prompt their values are
   multiplied by α at their positions, and only there (:func:`bench.sweep.units.unit_scaling`);
   α = 1 leaves every activation as it was, so that record is the unsteered model;
3. per (basis, k, α), the mean over test prompts of p(clean answer), p(counterfactual answer)
   at the last position, the top-1 rate of each and, where the task names an intermediate
   token (capitals: the state, :func:`tasks.capitals.state_of`), p of its first token.

The result is plain data: ``{"records": [...], "protocol": {...}}``
(``reports.steering`` draws it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from bench.attribution.attribute import attribute
from bench.cell import CELL, RUN
from bench.model.handle import ModelHandle
from bench.results.provenance import library_versions
from bench.sweep.units import unit_scaling
from tasks.validate import encode

log = logging.getLogger(__name__)

DEFAULT_ALPHAS = (-4.0, -2.0, -1.0, 0.0, 0.5, 1.0, 2.0, 4.0)
STEER_FORMAT = 1


def top_units(units: torch.Tensor, k: int) -> torch.Tensor:
    """A bool mask [layers, pos, n] of the k units of largest |score| (ties: node order)."""
    flat = units.abs().double().reshape(-1)
    order = torch.argsort(flat, descending=True, stable=True)[:k]
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[order] = True
    return mask.view(units.shape)


def _intermediate_ids(handle: ModelHandle, ds, intermediate) -> torch.Tensor | None:
    """First token of each test pair's intermediate answer (capitals: the state) [pairs]."""
    if intermediate is None:
        return None
    words = [intermediate(p.clean_prompt) for p in ds.test]
    if any(w is None for w in words):
        return None
    tok = handle.tokenizer
    return torch.tensor([tok(w, add_special_tokens=False)["input_ids"][0] for w in words])


def _probabilities(handle: ModelHandle, test: dict, state_ids) -> dict[str, float]:
    logits = handle.model(input_ids=test["clean_ids"], logits_to_keep=1).logits[:, -1]
    p = torch.softmax(logits.double(), -1)  # [pairs, vocab]
    rows = torch.arange(p.shape[0])
    top = p.argmax(-1)
    out = {
        "p_clean": float(p[rows, test["clean_answer_id"]].mean()),
        "p_counterfactual": float(p[rows, test["cf_answer_id"]].mean()),
        "top1_clean": float((top == test["clean_answer_id"]).double().mean()),
        "top1_counterfactual": float((top == test["cf_answer_id"]).double().mean()),
    }
    if state_ids is not None:
        out["p_intermediate"] = float(p[rows, state_ids.to(p.device)].mean())
    return out


def steer(
    handle: ModelHandle,
    ds,
    bases: Sequence[tuple[str, Any]],  # (label, Basis)
    ks: Sequence[int],
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    method: str = CELL.method,
    intermediate=None,  # prompt -> intermediate answer text, e.g. tasks.capitals.state_of
    batch_size: int = RUN.batch_size,
    seed: int = CELL.seed,
) -> dict[str, Any]:
    """Steps 1-3 for every basis, k and α; see the module docstring."""
    enc = encode(ds, handle.tokenizer)
    train = {k: v.to(handle.device) for k, v in enc["train"].items()}
    test = {k: v.to(handle.device) for k, v in enc["test"].items()}
    state_ids = _intermediate_ids(handle, ds, intermediate)
    records = []
    for label, basis in bases:
        torch.manual_seed(seed)
        scores = attribute(handle, basis, train, method, batch_size=batch_size, seed=seed)
        n_units = scores.units.numel()
        for k in ks:
            if not 1 <= k <= n_units:
                raise ValueError(f"--k {k}: {label} has {n_units} units; give 1..{n_units}")
            mask = top_units(scores.units, k)  # [layers, pos, n]
            for alpha in alphas:
                scale = torch.where(mask, float(alpha), 1.0).to(handle.device)
                with torch.no_grad(), unit_scaling(handle, basis, scale):
                    probs = _probabilities(handle, test, state_ids)
                records.append({"basis": label, "k": int(k), "alpha": float(alpha), **probs})
                log.debug("%s k=%d alpha=%g: %s", label, k, alpha, probs)
    with torch.no_grad():
        unsteered = _probabilities(handle, test, state_ids)
    protocol = {
        "format": STEER_FORMAT, "model": handle.name, "task": ds.task,
        "task_version": str(ds.version), "method": method, "reference": "patch",
        "n_train": len(ds.train), "n_test": len(ds.test), "seed": seed,
        "ks": [int(k) for k in ks], "alphas": [float(a) for a in alphas],
        "bases": [label for label, _ in bases], "steered": "units only (no error nodes)",
        "intermediate": "state" if state_ids is not None else None,
        "versions": library_versions(),
    }  # fmt: skip
    return {"records": records, "unsteered": unsteered, "protocol": protocol}
