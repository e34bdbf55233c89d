"""``random``: a seeded random score per node, the floor of every plot."""

from __future__ import annotations

import torch

from bench.attribution.nodes import NodeScores
from bench.attribution.registry import MethodArgs, register_method
from bench.bases import Basis
from bench.model.handle import ModelHandle


@register_method("random", joint=False)
def _random(handle: ModelHandle, bases: list[Basis], train, args: MethodArgs) -> list[NodeScores]:
    out = []
    for basis in bases:  # each basis from its own generator seeded with args.seed
        n_layers, seq = handle.sites.n_layers, train["clean_ids"].shape[1]
        shape = (n_layers, seq, basis.n_units())
        gen = torch.Generator().manual_seed(args.seed)
        err = torch.rand((n_layers, seq), generator=gen) if basis.has_error else None
        out.append(NodeScores(torch.rand(shape, generator=gen), err, "random"))
    return out
