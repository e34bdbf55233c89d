"""``run_sweep``: one cell of the benchmark, task pairs in, :class:`SweepResult` out.

Steps (DESIGN.md, "The pipeline"):

1. validate the cell (basis, site, method, ablation, error mode) and the dataset;
2. encode the dataset's splits to token ids on the model's device;
3. attribute on the train split (:mod:`bench.attribution`), timed;
4. rank nodes, evaluate the shared size grid on the test split (:mod:`bench.sweep`), timed;
5. curves, scalars and bootstrap CIs (:mod:`bench.scores`);
6. bare-torch references from the same run: one plain forward of the test batch, and one lean
   forward + forward + backward of a train batch; ``attribution_ratio`` and ``sweep_ratio``
   compare the harness against them;
7. a SweepResult with seeds, versions and timings.
"""

from __future__ import annotations

import importlib.metadata
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import scores
from bench.attribution import attribute, check_method
from bench.bases import make_basis
from bench.models import ModelHandle
from bench.result import SweepResult
from bench.sweep import ablation_values, check_ablation, evaluate, node_ranks

log = logging.getLogger(__name__)


def library_versions() -> dict[str, str]:
    out = {}
    for dist in ("sparsebench", "torch", "transformers", "sae-lens", "numpy", "scipy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "absent"
    try:
        root = Path(__file__).resolve().parents[1]
        out["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out["git_commit"] = "unknown"
    return out


def _timed(fn, repeats: int = 3) -> float:
    """Best of ``repeats`` wall times of ``fn()`` (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bare_torch_references(handle: ModelHandle, train_batch, test) -> dict[str, float]:
    """Step 6: seconds of a plain test forward and of a lean fwd+fwd+bwd on a train batch."""
    model = handle.model

    def plain():
        with torch.no_grad():
            model(input_ids=test["clean_ids"], logits_to_keep=1)

    def lean():
        emb = model.get_input_embeddings()(train_batch["clean_ids"]).requires_grad_(True)
        logits = model(inputs_embeds=emb, logits_to_keep=1).logits[:, -1]
        rows = torch.arange(logits.shape[0], device=logits.device)
        m = logits[rows, train_batch["clean_answer_id"]] - logits[rows, train_batch["cf_answer_id"]]
        torch.autograd.grad(m.sum(), emb)
        with torch.no_grad():
            model(input_ids=train_batch["cf_ids"], logits_to_keep=1)

    return {"plain_forward_s": _timed(plain), "lean_fwd_fwd_bwd_s": _timed(lean)}


def run_sweep(
    handle: ModelHandle,
    ds,
    basis: str = "neurons",
    site: str = "mlp_acts",
    method: str = "relp",
    ablation: str = "mean",
    sizes: list[int] | None = None,
    dictionary: str | None = None,
    error_mode: str = "keep",
    seed: int = 0,
    batch_size: int = 32,
    ig_steps: int = 10,
    n_bootstrap: int = 1000,
    masks_per_forward: int = 8,
    progress: bool = False,
    timing_references: bool = True,
) -> SweepResult:
    """Attribute on ``ds.train``, sweep circuit sizes on ``ds.test``; see the module docstring."""
    # 1. validate
    check_method(method)
    check_ablation(ablation, error_mode)
    b = make_basis(handle.sites, basis, site, dictionary)
    if len(ds.train) == 0 or len(ds.test) == 0:
        raise ValueError(
            f"dataset {ds.task!r} has {len(ds.train)} train and {len(ds.test)} test pairs; "
            "both splits must be non-empty"
        )
    if len(ds.test) < 2:
        raise ValueError("the test split needs at least 2 pairs for bootstrap CIs")
    # 2. encode
    enc = ds.encode(handle.tokenizer)
    train = {k: v.to(handle.device) for k, v in enc["train"].items()}
    test = {k: v.to(handle.device) for k, v in enc["test"].items()}
    torch.manual_seed(seed)
    # 3. attribution
    start = time.perf_counter()
    sc = attribute(handle, b, train, method, batch_size, ig_steps, seed, progress)
    t_attr = time.perf_counter() - start
    # 4. sweep
    start = time.perf_counter()
    ablate_error = b.has_error and error_mode == "ablate"
    flat = sc.flat(include_error=ablate_error)
    n_nodes = len(flat)
    grid = sorted(set(sizes)) if sizes is not None else scores.size_grid(n_nodes)
    if grid[0] < 1 or grid[-1] > n_nodes:
        raise ValueError(f"sizes must lie in 1..{n_nodes} (the number of nodes), got {grid}")
    values = ablation_values(handle, b, test, ablation)
    sm = evaluate(
        handle, b, test, node_ranks(flat), grid, values, ablate_error, masks_per_forward, progress
    )
    t_sweep = time.perf_counter() - start
    # 5. curves, scalars, CIs
    sz = np.asarray(grid)
    faith = scores.curve(sm.m_faith, sm.m_full, sm.m_empty)
    comp = scores.curve(sm.m_comp, sm.m_full, sm.m_empty)
    point = scores.scalars(sz, faith, n_nodes)
    ci = scores.bootstrap(
        sz, sm.m_faith, sm.m_comp, sm.m_full, sm.m_empty, n_nodes, n_bootstrap, seed
    )
    # 6. timings
    timings: dict[str, float] = {"attribution_s": t_attr, "sweep_s": t_sweep}
    n_batches = -(-len(ds.train) // batch_size)
    timings.update(n_train_batches=n_batches, n_sweep_forwards=sm.n_forwards)
    if timing_references:
        ref = bare_torch_references(handle, {k: v[:batch_size] for k, v in train.items()}, test)
        timings.update(ref)
        timings["attribution_ratio"] = t_attr / (n_batches * ref["lean_fwd_fwd_bwd_s"])
        timings["sweep_ratio"] = t_sweep / (sm.n_forwards * ref["plain_forward_s"])
    # 7. result
    k08 = point["k_at_0_8"]
    extra: dict[str, Any] = {"dataset_dropped": dict(getattr(ds, "dropped", {}))}
    if method == "ig":
        extra["ig_steps"] = ig_steps
    return SweepResult(
        model=handle.name,
        task=ds.task,
        task_version=str(ds.version),
        basis=basis,
        site=site,
        method=method,
        ablation=ablation,
        dictionary=dictionary,
        error_mode=error_mode if b.has_error else None,
        n_nodes=n_nodes,
        sizes=[int(k) for k in grid],
        faithfulness=faith.tolist(),
        faithfulness_ci=ci["faithfulness"].tolist(),
        completeness=comp.tolist(),
        completeness_ci=ci["completeness"].tolist(),
        k_at_0_8=None if np.isnan(k08) else k08,
        k_at_0_8_ci=[None if np.isnan(v) else float(v) for v in ci["k_at_0_8"]],
        auc=point["auc"],
        auc_ci=ci["auc"].tolist(),
        cpr=point["cpr"],
        cpr_ci=ci["cpr"].tolist(),
        cmd=point["cmd"],
        cmd_ci=ci["cmd"].tolist(),
        m_full=float(sm.m_full.mean()),
        m_empty=float(sm.m_empty.mean()),
        seed=seed,
        n_train=len(ds.train),
        n_test=len(ds.test),
        seq_len=int(train["clean_ids"].shape[1]),
        dictionary_quality=b.quality(),
        versions=library_versions(),
        timings=timings,
        extra=extra,
    )
