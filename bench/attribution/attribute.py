"""Attribution: one score per node (layer, position, unit), averaged over the train split.

Every method scores a node against its reference value r(x) (:mod:`bench.sweep.references`:
the pair's counterfactual u(x′) for ``patch``, the train split's per-position mean ū for
``mean``, 0 for ``zero``), the same reference the sweep ablates to. Methods (docs/METHOD.md,
"Attribution"), each in its own module and registered there
(:mod:`bench.attribution.registry`): ``atp`` and ``relp``
(:mod:`~bench.attribution.gradients`), ``ig`` (:mod:`~bench.attribution.ig`), ``exact``
(:mod:`~bench.attribution.exact`), ``random`` (:mod:`~bench.attribution.random`).

Steps of :func:`attribute` / :func:`attribute_many`: (1) check the method and reference names
and the split; (2) dispatch to the registered method, which for ``mean`` first takes the
reference means over the train split's counterfactual prompts, then per batch captures the
sites the bases use, pulls the gradient back to the units and accumulates the per-node
products; (3) divide by the number of pairs. No parameter gradient is ever computed (the
model's parameters have requires_grad=False).
"""

from __future__ import annotations

import torch

from bench.attribution.nodes import NodeScores
from bench.attribution.registry import MethodArgs, get_method
from bench.bases import Basis
from bench.cell import CELL, RUN
from bench.model.handle import ModelHandle
from bench.sweep.references import get_reference


def attribute(
    handle: ModelHandle,
    basis: Basis,
    train: dict[str, torch.Tensor],
    method: str,
    batch_size: int = RUN.batch_size,
    ig_steps: int = CELL.ig_steps,
    seed: int = 0,
    progress: bool = False,
    reference: str = CELL.ablation,
) -> NodeScores:
    """Scores for every node of ``basis`` against ``reference``, averaged over ``train``."""
    return attribute_many(
        handle, [basis], train, method, batch_size, ig_steps, seed, progress, reference
    )[0]


def attribute_many(
    handle: ModelHandle,
    bases: list[Basis],
    train: dict[str, torch.Tensor],
    method: str,
    batch_size: int = RUN.batch_size,
    ig_steps: int = CELL.ig_steps,
    seed: int = 0,
    progress: bool = False,
    reference: str = CELL.ablation,
    shared=None,
) -> list[NodeScores]:
    """Scores for several bases on one split; ``atp``/``relp`` share one backward per batch.
    ``shared``: a :class:`~bench.attribution.differences.Differences` store of this split, in
    which ``atp``/``relp`` passes leave u(x) − r(x) for each other (the same scores)."""
    entry = get_method(method)
    get_reference(reference)  # raises naming the valid references
    if train["clean_ids"].shape[0] == 0:
        raise ValueError(
            "cannot attribute on an empty train split; build the task with n_train > 0"
        )
    args = MethodArgs(batch_size, ig_steps, seed, progress, reference, shared)
    return entry.fn(handle, bases, train, args)
