"""sparsebench harness: models, sites, bases, attribution, sweeps and results.

Public surface (docs/METHOD.md): ``load_model``, ``run_sweep``, ``SweepResult``; plus the pieces
they are built from (``intervene``, ``SiteTable``). Names load lazily, so reading results
(``bench.result``) does not import torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "ARCHITECTURES": "bench.sites",
    "SiteTable": "bench.sites",
    "ModelHandle": "bench.models",
    "load_model": "bench.models",
    "intervene": "bench.interventions",
    "SweepResult": "bench.result",
    "run_sweep": "bench.run",
}
__all__ = [
    "ARCHITECTURES",
    "ModelHandle",
    "SiteTable",
    "SweepResult",
    "intervene",
    "load_model",
    "run_sweep",
]

if TYPE_CHECKING:
    from bench.interventions import intervene
    from bench.models import ModelHandle, load_model
    from bench.result import SweepResult
    from bench.run import run_sweep
    from bench.sites import ARCHITECTURES, SiteTable


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
