"""The records handed from stage to stage of one cell: :class:`Prepared` (after step 2 of
:mod:`bench.pipeline`) and :class:`Measured` (after step 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.cell import Cell, RunSettings

if TYPE_CHECKING:  # annotations only: this leaf imports no stage
    import torch

    from bench.attribution.nodes import NodeScores
    from bench.bases import Basis
    from bench.model.handle import ModelHandle
    from bench.sweep.sweep import SweepMetrics


@dataclass
class Prepared:
    handle: ModelHandle
    ds: Any  # tasks.ContrastiveDataset
    cell: Cell
    basis: Basis
    train: dict[str, torch.Tensor]  # clean_ids/cf_ids [n, seq], answer ids [n]
    test: dict[str, torch.Tensor]
    settings: RunSettings = field(default_factory=RunSettings)


@dataclass
class Measured:
    scores: NodeScores
    metrics: SweepMetrics
    sizes: list[int]
    n_nodes: int
    attribution_s: float
    sweep_s: float
    attribution_cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
