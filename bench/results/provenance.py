"""Provenance of a result: what it was computed with, and bare-torch timings to divide by.

- :func:`library_versions`: versions of sparsebench, torch, transformers, sae-lens, numpy,
  scipy, and the git commit of the checkout (``unknown`` outside one);
- :func:`measure_bare_torch`: step 6 of :mod:`bench.pipeline` — best-of-two seconds of one plain
  forward of the test batch and of one lean forward + forward + backward of a train batch,
  the denominators of ``attribution_ratio`` and ``sweep_ratio``.
"""

from __future__ import annotations

import importlib.metadata
import logging
import subprocess
import time
from pathlib import Path

import torch

from bench.model.handle import ModelHandle

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


def _timed(fn, sync, repeats: int = 2) -> float:
    """Best of ``repeats`` wall times of ``fn()`` (the model is warm: the cell just ran);
    ``sync()`` waits for the device (CUDA queues work and returns at once)."""
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def measure_bare_torch(handle: ModelHandle, train_batch, test) -> dict[str, float]:
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

    sync = handle.synchronize
    return {"plain_forward_s": _timed(plain, sync), "lean_fwd_fwd_bwd_s": _timed(lean, sync)}
