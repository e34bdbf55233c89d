"""The ablation sweep: faithfulness and completeness of C_k on the test split.

Steps of :func:`evaluate`:

1. ablation values per layer from the test split: the protocol's reference (docs/METHOD.md,
   "Attribution baseline and ablation"; :mod:`bench.protocol`): ``patch`` — the unit's value
   on the pair's own counterfactual prompt; ``mean`` — each unit's mean over the
   counterfactual test prompts, per position; ``zero``;
2. rank nodes by |score| (ties broken by node order, so every basis and method is ranked the
   same way); C_k = the k best;
3. m(M): the unablated model; m(∅): every ablatable node ablated;
4. for each k of the shared grid, m(C_k) (nodes outside C_k ablated) and m(M∖C_k) (nodes in
   C_k ablated), each distinct mask once (ablating every node, as the grid's last M∖C_k does,
   is m(∅)'s mask; keeping every node is still run, so F(all) = 1 is measured), several masks
   per forward: the test batch is repeated once per mask; on the CPU, chunks of masks run
   side by side, one thread each (:mod:`bench.model.replicas`). Where the ablation reference
   is the pair's own counterfactual (``patch``), no mask changes the positions before the
   first token where x and x′ differ, so they run once (:mod:`bench.model.prefix`) and each
   mask runs the suffix only (``reuse_prefix``);
5. the consistency check: m of the circuit holding every node with a non-zero score (≈ m(M)
   under a matched protocol, since every zero-scored node then sits at its reference or
   cannot reach the metric).

It returns per-pair metrics; :mod:`bench.sweep.scores` turns them into curves and scalars.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.bases import Basis
from bench.cell import RUN
from bench.model.handle import ModelHandle
from bench.model.load import configure_workers
from bench.model.prefix import PrefixCache, shared_prefix
from bench.model.replicas import parallel_map
from bench.sweep.units import AblationValues, metric, unit_ablation
from tasks.metric import logit_difference

log = logging.getLogger(__name__)


def node_ranks(scores: torch.Tensor) -> torch.Tensor:
    """Step 2: rank of each node by |score|, 0 = most important.  # [n_nodes]"""
    order = torch.argsort(scores.abs().double(), descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(len(order))
    return ranks


def _keep(ranks: torch.Tensor, ks: torch.Tensor, faith: torch.Tensor) -> torch.Tensor:
    """Keep masks [masks, *ranks.shape]: rank < k for faithfulness, rank >= k otherwise."""
    shape = (-1, *([1] * ranks.dim()))
    inside = ranks.unsqueeze(0) < ks.view(shape)
    return torch.where(faith.view(shape), inside, ~inside)


def _same_as(mask: tuple[int, bool], lo: int, hi: int) -> tuple[int, bool]:
    """The first mask of the grid's form that keeps the same nodes as ``mask``, given the
    lowest and highest rank ``lo``, ``hi`` of the nodes a mask can ablate: keeping none is
    (0, True), keeping all is (hi + 1, True)."""
    k, faith = mask
    if k <= lo:
        return (0, True) if faith else (hi + 1, True)
    if k > hi:
        return (hi + 1, True) if faith else (0, True)
    return mask


def clean_prefix(handle: ModelHandle, test: dict[str, torch.Tensor]) -> PrefixCache | None:
    """Step 4's shared prefix of the test split's clean prompts, run once (None when the
    prompts share none): keys and values of the positions before the first differing token,
    and the whole-prompt forward's logits, which give m(M)."""
    start = shared_prefix(test["clean_ids"], test["cf_ids"])
    return PrefixCache(handle, test["clean_ids"], start) if start > 0 else None


@dataclass
class SweepMetrics:
    m_faith: np.ndarray  # [sizes, pairs]: m(C_k)
    m_comp: np.ndarray  # [sizes, pairs]: m(M∖C_k)
    m_full: np.ndarray  # [pairs]
    m_empty: np.ndarray  # [pairs]
    n_forwards: int  # forwards of the test batch this cost (one per distinct mask)
    m_nonzero: np.ndarray | None = None  # [pairs]: m of the circuit of all non-zero scores
    k_nonzero: int | None = None  # how many nodes have a non-zero score
    prefix_reused: int = 0  # leading positions run once rather than once per mask (step 4)


def evaluate(
    handle: ModelHandle,
    basis: Basis,
    test: dict[str, torch.Tensor],
    ranks: torch.Tensor,  # [n_nodes]: units (layers*pos*n) then error nodes if ablatable
    sizes: list[int],
    values: AblationValues,
    ablate_error: bool,
    masks_per_forward: int = RUN.masks_per_forward,
    progress: bool = False,
    k_nonzero: int | None = None,
    reuse_prefix: bool = False,
    workers: int | None = None,
    prefix: PrefixCache | None = None,
) -> SweepMetrics:
    """Steps 3-5: per-pair metrics of the full model, the empty circuit, every C_k and (with
    ``k_nonzero``, the number of nodes with a non-zero score) the consistency circuit.

    ``reuse_prefix``: the caller's promise that every node before the pairs' first differing
    token equals its ablation value (true of ``patch``, false of ``mean`` and ``zero``); the
    shared prefix then runs once and each mask only the suffix. The metrics are the same.
    ``prefix``: that prefix already run (:func:`clean_prefix` of ``test``; the same promise),
    so cells on one test split run it once.
    ``workers``: mask chunks run side by side on the CPU (:mod:`bench.model.replicas`; default
    the process's choice, :func:`bench.model.load.configure_workers`); the same metrics."""
    n_layers, seq, n_units = handle.sites.n_layers, test["clean_ids"].shape[1], basis.n_units()
    n_unit_nodes = n_layers * seq * n_units
    unit_ranks = ranks[:n_unit_nodes].view(n_layers, seq, n_units).to(handle.device)
    err_ranks = ranks[n_unit_nodes:].view(n_layers, seq).to(handle.device) if ablate_error else None
    args = (test["clean_answer_id"], test["cf_answer_id"])
    ablatable = [unit_ranks] + ([err_ranks] if err_ranks is not None else [])
    lo, hi = min(int(r.min()) for r in ablatable), max(int(r.max()) for r in ablatable)

    ids, start = test["clean_ids"], 0  # [pairs, seq]
    if prefix is None and reuse_prefix:
        prefix = clean_prefix(handle, test)
    if prefix is not None:  # masks and values from the first position that can differ
        start = prefix.length
        m_full = logit_difference(prefix.last_logits, *args)  # its whole-prompt forward's m(M)
        ids, unit_ranks = ids[:, start:], unit_ranks[:, start:]
        err_ranks = err_ranks[:, start:] if err_ranks is not None else None
        values = values.from_position(start)
    else:
        with torch.no_grad():
            m_full = metric(handle, test["clean_ids"], *args)

    # Each mask is (k, in_circuit_kept): faithfulness keeps rank < k, completeness rank >= k.
    masks = [(0, True)] + [(k, True) for k in sizes] + [(k, False) for k in sizes]
    if k_nonzero is not None:  # last, so the grid's masks batch exactly as without it
        masks.append((k_nonzero, True))
    # One forward per distinct mask: e.g. ablating the whole grid's last C_k is m(∅)'s mask.
    slot = {m: _same_as(m, lo, hi) for m in masks}
    distinct = list(dict.fromkeys(slot.values()))
    chunks = [
        distinct[i : i + masks_per_forward] for i in range(0, len(distinct), masks_per_forward)
    ]

    def run(h: ModelHandle, chunk: list[tuple[int, bool]]) -> torch.Tensor:  # [masks, pairs]
        ks = torch.tensor([k for k, _ in chunk], device=h.device)
        faith = torch.tensor([f for _, f in chunk], device=h.device)
        keep_err = _keep(err_ranks, ks, faith) if err_ranks is not None else None
        keep = _keep(unit_ranks, ks, faith)
        past = prefix.repeated(len(chunk)) if prefix is not None else None
        with torch.no_grad(), unit_ablation(h, basis, keep, keep_err, values):
            return metric(h, ids.repeat(len(chunk), 1), *args, past=past).view(len(chunk), -1)

    workers = configure_workers() if workers is None else workers
    with tqdm(total=len(chunks), desc="sweep", disable=not progress) as bar:
        results = parallel_map(handle, run, chunks, workers, on_done=bar.update)
    by_mask = dict(zip(distinct, torch.cat(results).double().cpu().numpy(), strict=True))
    m = np.stack([by_mask[slot[mask]] for mask in masks])  # [1 + 2*sizes (+1), pairs]
    n = len(sizes)
    return SweepMetrics(
        m_faith=m[1 : 1 + n],
        m_comp=m[1 + n : 1 + 2 * n],
        m_full=m_full.double().cpu().numpy(),
        m_empty=m[0],
        n_forwards=len(distinct) + 2,  # + the unablated forward + the counterfactual forward
        m_nonzero=m[1 + 2 * n] if k_nonzero is not None else None,
        k_nonzero=k_nonzero,
        prefix_reused=start,
    )
