"""The Basis protocol and :func:`make_basis` (the steps are in :mod:`bench.bases`)."""

from __future__ import annotations

import difflib
import logging
from typing import TYPE_CHECKING, Any, Protocol

import torch

from bench.bases import BASIS_NAMES
from bench.bases.neurons import NeuronBasis

if TYPE_CHECKING:
    from bench.model.handle import ModelHandle

log = logging.getLogger(__name__)


class Basis(Protocol):
    name: str  # "neurons" | "sae" | "transcoder"
    site: str  # where units are written, e.g. "mlp_acts"
    read_site: str  # the site encode() reads: ``site``, or "mlp_in" for transcoders
    has_error: bool  # one error node per (layer, position)
    identity: bool  # encode/decode are the identity (the splice points below skip the decoder)

    def n_units(self) -> int: ...  # units per (layer, position), error node excluded

    def encode(self, layer: int, x: torch.Tensor) -> torch.Tensor: ...  # [..., width] -> [..., n]

    def decode(self, layer: int, units: torch.Tensor) -> torch.Tensor: ...  # [..., n] -> [..., w]

    # the linear part of decode (no bias): decode(u + d) = decode(u) + decode_delta(d), and
    # decode_delta(0) is exactly 0, which keeps F(all) = 1 exact for dictionary bases
    def decode_delta(self, layer: int, delta: torch.Tensor) -> torch.Tensor: ...

    # x [..., w] with the gradient routed to leaf units u [..., n]; its value stays x
    def straight_through(self, layer: int, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor: ...

    # x [..., w] with units old [..., n] replaced by new [..., n] (the error node unchanged)
    def splice(
        self, layer: int, x: torch.Tensor, new: torch.Tensor, old: torch.Tensor
    ) -> torch.Tensor: ...

    # ∂m/∂u [..., n] from the site gradient g [..., w]
    def pullback(self, layer: int, g: torch.Tensor, n_units: int) -> torch.Tensor: ...

    def quality(self) -> dict[str, Any] | None: ...  # dictionary quality, None for neurons

    def describe(self) -> dict[str, Any]: ...  # identifies the basis in results


def make_basis(handle: ModelHandle, basis: str, site: str, dictionary: str | None = None) -> Basis:
    """Resolve a basis name for this model; unknown names raise listing the valid ones."""
    if basis == "neurons":
        if dictionary is not None:
            raise ValueError("basis 'neurons' takes no dictionary; pass dictionary=None")
        return NeuronBasis(handle.sites, site)
    if basis in ("sae", "transcoder"):
        from bench.bases.loading import make_dictionary_basis

        return make_dictionary_basis(handle, basis, site, dictionary)
    close = difflib.get_close_matches(basis, BASIS_NAMES, n=2)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(f"unknown basis {basis!r}{hint}; valid bases: {', '.join(BASIS_NAMES)}")
