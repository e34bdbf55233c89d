"""``ig``: integrated gradients along r(x) + α(u(x) − r(x)), one layer at a time.

N midpoint steps stacked in one batch (Marks et al. 2024's per-submodule IG).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from bench.attribution.gradients import batches, values_of
from bench.attribution.nodes import NodeScores
from bench.attribution.registry import MethodArgs, register_method
from bench.bases import Basis
from bench.core.finite import check_finite
from bench.model.handle import ModelHandle
from bench.model.interventions import intervene
from bench.sweep.references import batch_reference, get_reference
from bench.sweep.units import metric


def _ig(handle, basis, batch, steps: int, acc_u, acc_e, ref: str, means) -> None:
    """Per-layer integrated gradients along r + α(u − r), ``steps`` midpoint alphas stacked
    in the batch."""
    clean = values_of(handle, basis, batch["clean_ids"])
    cf = batch_reference(handle, basis, batch, ref, clean, means)  # r(x), shaped like clean
    b = batch["clean_ids"].shape[0]
    alphas = (torch.arange(steps, device=handle.device) + 0.5) / steps  # [steps]
    ids = batch["clean_ids"].repeat(steps, 1)
    for layer in range(handle.sites.n_layers):
        a = alphas.view(steps, 1, 1, 1).to(clean[layer].units.dtype)
        du = clean[layer].units - cf[layer].units  # [B, pos, n]
        u = (cf[layer].units + a * du).reshape(steps * b, *du.shape[1:]).requires_grad_(True)
        e = None
        if basis.has_error:
            de = clean[layer].error - cf[layer].error
            e = (cf[layer].error + a * de).reshape(steps * b, *de.shape[1:]).requires_grad_(True)

        def fn(x, u=u, e=e, layer=layer):
            out = basis.decode(layer, u)  # neurons: u itself
            return out + e if e is not None else out

        with intervene(handle.sites, replace={(basis.site, layer): fn}):
            m = metric(handle, ids, batch["clean_answer_id"], batch["cf_answer_id"])
        grads = torch.autograd.grad(m.sum(), [u] if e is None else [u, e])
        gu = grads[0].view(steps, b, *du.shape[1:]).mean(0)
        acc_u[layer] += (du * gu).sum(0)
        if e is not None:
            ge = grads[1].view(steps, b, *de.shape[1:]).mean(0)
            acc_e[layer] += (de * ge).sum(-1).sum(0)


@register_method("ig", joint=False, uses_ig_steps=True)
def _ig_scores(
    handle: ModelHandle, bases: list[Basis], train, args: MethodArgs
) -> list[NodeScores]:
    out = []
    for basis in bases:  # one basis at a time
        n = train["clean_ids"].shape[0]
        n_layers, seq = handle.sites.n_layers, train["clean_ids"].shape[1]
        shape = (n_layers, seq, basis.n_units())
        acc_u = torch.zeros(shape, dtype=torch.float32, device=handle.device)
        acc_e = torch.zeros((n_layers, seq), dtype=torch.float32, device=handle.device)
        means = get_reference(args.reference).split_means(
            handle, basis, train["cf_ids"], args.batch_size
        )
        chunks = list(batches(train, args.batch_size))
        for batch in tqdm(chunks, desc="ig", disable=not args.progress):
            _ig(handle, basis, batch, args.ig_steps, acc_u, acc_e, args.reference, means)
        check_finite(acc_u, "ig scores")
        out.append(NodeScores(acc_u / n, acc_e / n if basis.has_error else None, "ig"))
    return out
