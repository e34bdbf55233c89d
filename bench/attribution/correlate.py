"""Attribution against ground truth: correlation of ``relp``/``atp`` with ``exact`` scores.

Does RelP earn its place (Jafari et al. 2025 found it tracks activation patching better than
AtP)? Steps of :func:`attribution_vs_exact`:

1. take the first ``n_pairs`` train pairs (exact patching costs one forward per node);
2. score every node with each gradient method on those pairs;
3. sample nodes: the ``n_top`` largest by |relp| plus ``n_random`` others, seeded;
4. patch each sampled node alone (``exact``) on the same pairs;
5. Pearson and Spearman correlations (scipy.stats) of each method with ``exact``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from scipy import stats

from bench.attribution.attribute import attribute
from bench.attribution.exact import exact_scores
from bench.bases import make_basis
from bench.model.handle import ModelHandle
from tasks.validate import encode

log = logging.getLogger(__name__)


def attribution_vs_exact(
    handle: ModelHandle,
    ds,
    site: str = "mlp_acts",
    methods: tuple[str, ...] = ("relp", "atp"),
    n_top: int = 500,
    n_random: int = 500,
    n_pairs: int = 48,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    basis = make_basis(handle, "neurons", site)
    train = {
        k: v[:n_pairs].to(handle.device) for k, v in encode(ds, handle.tokenizer)["train"].items()
    }
    scores = {m: attribute(handle, basis, train, m, progress=progress).units for m in methods}
    shape = scores[methods[0]].shape  # [layers, pos, n]
    lead = scores["relp" if "relp" in methods else methods[0]].reshape(-1).abs()
    top = torch.argsort(lead, descending=True)[:n_top]
    gen = torch.Generator().manual_seed(seed)
    rest = torch.ones(lead.numel(), dtype=torch.bool)
    rest[top] = False
    others = rest.nonzero()[:, 0]
    rand = others[torch.randperm(len(others), generator=gen)[:n_random]]
    flat = torch.cat([top, rand])
    nodes = torch.stack(torch.unravel_index(flat, shape), 1)  # [n, 3]
    exact = exact_scores(handle, basis, train, nodes, progress=progress).numpy()
    out: dict[str, Any] = {"n_nodes": len(flat), "n_pairs": int(train["clean_ids"].shape[0])}
    for m in methods:
        est = scores[m].reshape(-1)[flat].cpu().numpy()
        out[m] = {
            "pearson": float(stats.pearsonr(est, exact).statistic),
            "spearman": float(stats.spearmanr(est, exact).statistic),
            "pearson_top": float(stats.pearsonr(est[:n_top], exact[:n_top]).statistic),
        }
    out["exact_abs_mean"] = float(np.abs(exact).mean())
    return out
