"""sparsebench harness, one folder per stage: core → model → bases → training → sweep →
attribution → pipeline → results → suite, cli (docs/METHOD.md, "Layout").

Public surface (docs/METHOD.md): ``load_model``, ``run_sweep``, ``SweepResult``; plus the pieces
they are built from (``intervene``, ``SiteTable``). Names load lazily, so reading results
(``bench.results.result``) does not import torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "ARCHITECTURES": "bench.model.sites",
    "SiteTable": "bench.model.sites",
    "ModelHandle": "bench.model.handle",
    "load_model": "bench.model.load",
    "Cell": "bench.cell",
    "intervene": "bench.model.interventions",
    "SweepResult": "bench.results.result",
    "run_sweep": "bench.pipeline",
}
__all__ = [
    "ARCHITECTURES",
    "Cell",
    "ModelHandle",
    "SiteTable",
    "SweepResult",
    "intervene",
    "load_model",
    "run_sweep",
]

if TYPE_CHECKING:
    from bench.cell import Cell
    from bench.model.handle import ModelHandle
    from bench.model.interventions import intervene
    from bench.model.load import load_model
    from bench.model.sites import ARCHITECTURES, SiteTable
    from bench.pipeline import run_sweep
    from bench.results.result import SweepResult


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
