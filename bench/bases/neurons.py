"""The ``neurons`` basis: a site's raw coordinates (at ``mlp_acts``, the MLP neurons).

encode/decode are the identity, there is no error node, and the harness's splice points
(:meth:`NeuronBasis.straight_through`, :meth:`NeuronBasis.splice`, :meth:`NeuronBasis.pullback`)
return the units themselves, skipping the decoder arithmetic a dictionary needs.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from bench.model.sites import SiteTable

log = logging.getLogger(__name__)


class NeuronBasis:
    """A site's raw coordinates: at ``mlp_acts`` these are the MLP neurons."""

    name = "neurons"
    has_error = False
    identity = True

    def __init__(self, sites: SiteTable, site: str):
        sites.site(site)  # raises on an unknown site, naming the valid ones
        self.site = site
        self.read_site = site
        self._width = sites.width(site)

    def n_units(self) -> int:
        return self._width

    def encode(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        return x

    def decode(self, layer: int, units: torch.Tensor) -> torch.Tensor:
        return units

    def decode_delta(self, layer: int, delta: torch.Tensor) -> torch.Tensor:
        return delta

    def straight_through(self, layer: int, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """x with the gradient routed to the leaf units u (the value stays x)."""
        return x + (u - u.detach())  # [..., width]

    def splice(
        self, layer: int, x: torch.Tensor, new: torch.Tensor, old: torch.Tensor
    ) -> torch.Tensor:
        """The site's value with its units ``old`` replaced by ``new``: ``new`` itself."""
        return new  # [..., width]

    def pullback(self, layer: int, g: torch.Tensor, n_units: int) -> torch.Tensor:
        """∂m/∂u from the site gradient g: g itself."""
        return g

    def quality(self) -> dict[str, Any] | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"basis": self.name, "site": self.site, "dictionary": None}
