"""``exact``: each node set alone to its reference: m(x) − m(x | node ← r(x)).

Ground truth; small cases only.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from bench.attribution.gradients import batches, values_of
from bench.attribution.nodes import NodeScores
from bench.attribution.registry import MethodArgs, register_method
from bench.bases import Basis
from bench.cell import CELL, RUN
from bench.model.handle import ModelHandle
from bench.model.interventions import intervene
from bench.sweep.references import batch_reference, get_reference
from bench.sweep.units import LayerUnits, metric


def _single_node_patch(basis, layer, u, clean_l: LayerUnits, cf_l: LayerUnits, pos, is_err):
    """Site replacement for ``exact``: copy g of the batch has its own node set to its
    reference (``cf_l``: r(x) of every unit and error node)."""

    def fn(x: torch.Tensor) -> torch.Tensor:  # [G*B, pos, width]
        base_u = clean_l.units.repeat(u.shape[0], 1, 1)  # [G*B, pos, n]
        out = basis.splice(layer, x, u.reshape(base_u.shape), base_u)  # neurons: u itself
        if is_err.any():  # an error node: add e(x′) − e(x) at its position
            out4 = out.view(u.shape[0], -1, *out.shape[1:]).clone()
            rows_e, pos_e = torch.arange(u.shape[0])[is_err], pos[is_err]
            d = cf_l.error - clean_l.error  # [B, pos, width]: r(e) − e
            out4[rows_e, :, pos_e] += d[:, pos_e].transpose(0, 1)
            out = out4.view_as(out)
        return out

    return fn


def exact_scores(
    handle: ModelHandle,
    basis: Basis,
    split: dict[str, torch.Tensor],
    nodes: torch.Tensor,  # [n_nodes_to_score, 3]: (layer, pos, unit); unit == n_units: error
    batch_size: int = RUN.batch_size,
    nodes_per_forward: int = 16,
    progress: bool = False,
    reference: str = CELL.ablation,
) -> torch.Tensor:  # [n_nodes_to_score]
    """Ground truth: m(x) − m(x | node ← r(x)) for each node alone, averaged over pairs."""
    get_reference(reference)  # raises naming the valid references
    n_units = basis.n_units()
    means = get_reference(reference).split_means(handle, basis, split["cf_ids"], batch_size)
    total = torch.zeros(len(nodes), dtype=torch.float64)
    n = split["clean_ids"].shape[0]
    bar = tqdm(total=len(nodes) * ((n + batch_size - 1) // batch_size), disable=not progress)
    bar.set_description("exact")
    for batch in batches(split, batch_size):
        clean = values_of(handle, basis, batch["clean_ids"])
        cf = batch_reference(handle, basis, batch, reference, clean, means)  # r(x)
        args = batch["clean_ids"], batch["clean_answer_id"], batch["cf_answer_id"]
        with torch.no_grad():
            base = metric(handle, *args)  # [B]
        for layer in nodes[:, 0].unique().tolist():
            idx = (nodes[:, 0] == layer).nonzero()[:, 0]
            for chunk in idx.split(nodes_per_forward):
                g = len(chunk)
                pos, unit = nodes[chunk, 1], nodes[chunk, 2]
                is_err = unit == n_units
                # patched units: [G, B, pos, n]; each copy has one node set to its x' value
                u = clean[layer].units.unsqueeze(0).repeat(g, 1, 1, 1)
                rows = torch.arange(g)[~is_err]
                cf_u = cf[layer].units[:, pos[~is_err], unit[~is_err]].T  # [g', B]
                u[rows, :, pos[~is_err], unit[~is_err]] = cf_u

                fn = _single_node_patch(basis, layer, u, clean[layer], cf[layer], pos, is_err)
                with torch.no_grad(), intervene(handle.sites, replace={(basis.site, layer): fn}):
                    patched = metric(handle, args[0].repeat(g, 1), args[1], args[2])
                total[chunk] += (base.repeat(g) - patched).view(g, -1).sum(1).double().cpu()
                bar.update(g)
    bar.close()
    return (total / n).float()


@register_method("exact", joint=False)
def _exact(handle: ModelHandle, bases: list[Basis], train, args: MethodArgs) -> list[NodeScores]:
    out = []
    for basis in bases:  # one basis at a time
        n_layers, seq = handle.sites.n_layers, train["clean_ids"].shape[1]
        n_units = basis.n_units()
        sizes = (n_layers, seq, n_units + basis.has_error)
        grid = torch.cartesian_prod(*(torch.arange(s) for s in sizes))
        flat = exact_scores(
            handle, basis, train, grid, args.batch_size, progress=args.progress,
            reference=args.reference,
        )  # fmt: skip
        full = flat.view(n_layers, seq, n_units + basis.has_error)
        err = full[..., -1].contiguous() if basis.has_error else None
        out.append(NodeScores(full[..., :n_units].contiguous(), err, "exact"))
    return out
