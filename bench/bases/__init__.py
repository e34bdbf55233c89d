"""The basis stage: how a site's activation splits into units.

A :class:`Basis` lives at one site on every layer. It turns the site's activation into units
and back; the harness attributes to and ablates units, never raw activations. Nodes are
(layer, position, unit). One module per kind (the SAELens layout: one file per architecture
behind one entry point):

- :mod:`bench.bases.neurons`: ``neurons``, the site's raw coordinates; encode/decode are identity;
- :mod:`bench.bases.dictionary`: ``sae`` and ``transcoder``, one sae-lens dictionary per layer;
  units are latents, plus one *error node* per (layer, position) holding ``x - decode(encode(x))``
  (``has_error = True``; the harness treats the error as one more node per (layer, position));
- :mod:`bench.bases.loading`: where a dictionary comes from (``path:`` in :mod:`bench.bases.path`,
  ``release:`` in :mod:`bench.bases.releases`, ``local`` trained by :mod:`bench.training`);
- :mod:`bench.bases.hooks`: a dictionary's hook names mapped onto sites (module names come from
  :mod:`bench.model.sites` only).

This package's face imports no torch: :data:`BASIS_NAMES` is here, the rest loads on first
use (:mod:`bench.bases.basis`: the :class:`Basis` protocol and :func:`make_basis`). Steps of
:func:`make_basis`: resolve the basis name (unknown names raise listing the valid ones),
then build the neuron basis from the model's site table, or load and check the dictionaries.
"""

from __future__ import annotations

import importlib
from typing import Any

BASIS_NAMES = ("neurons", "sae", "transcoder")
# a transcoder reads the MLP input and writes the MLP output (its basis site)
TRANSCODER_WRITE_SITE, TRANSCODER_READ_SITE = "mlp_out", "mlp_in"
_LAZY = {"Basis": "bench.bases.basis", "make_basis": "bench.bases.basis",
         "NeuronBasis": "bench.bases.neurons"}  # fmt: skip
__all__ = [
    "BASIS_NAMES", "TRANSCODER_READ_SITE", "TRANSCODER_WRITE_SITE", "Basis", "NeuronBasis",
    "make_basis",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bench.bases' has no attribute {name!r}")
