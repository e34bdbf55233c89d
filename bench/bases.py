"""Bases: how a site's activation splits into units.

A :class:`Basis` lives at one site on every layer. It turns the site's activation into units
and back; the harness attributes to and ablates units, never raw activations. Nodes are
(layer, position, unit). Two kinds of basis exist:

- :class:`NeuronBasis` (``neurons``): the site's raw coordinates; encode/decode are identity.
- dictionary bases (``sae``, ``transcoder``; see ``baselines``): units are latents, plus one
  *error node* per (layer, position) holding ``x - decode(encode(x))``; they set
  ``has_error = True`` and the harness treats the error as one more node per (layer, position).

:func:`make_basis` is the one place basis names are resolved.
"""

from __future__ import annotations

import difflib
from typing import Any, Protocol

import torch

from bench.sites import SiteTable

BASIS_NAMES = ("neurons", "sae", "transcoder")


class Basis(Protocol):
    name: str  # "neurons" | "sae" | "transcoder"
    site: str  # where units are written (and read, unless read_site is set), e.g. "mlp_acts"
    # optional attribute ``read_site``: the site encode() reads, e.g. "mlp_in" for transcoders
    has_error: bool  # one error node per (layer, position)
    identity: bool  # encode/decode are the identity (lets the harness skip them)

    def n_units(self) -> int: ...  # units per (layer, position), error node excluded

    def encode(self, layer: int, x: torch.Tensor) -> torch.Tensor: ...  # [..., width] -> [..., n]

    def decode(self, layer: int, units: torch.Tensor) -> torch.Tensor: ...  # [..., n] -> [..., w]

    # the linear part of decode (no bias): decode(u + d) = decode(u) + decode_delta(d), and
    # decode_delta(0) is exactly 0, which keeps F(all) = 1 exact for dictionary bases
    def decode_delta(self, layer: int, delta: torch.Tensor) -> torch.Tensor: ...

    def quality(self) -> dict[str, Any] | None: ...  # dictionary quality, None for neurons

    def describe(self) -> dict[str, Any]: ...  # identifies the basis in results


class NeuronBasis:
    """A site's raw coordinates: at ``mlp_acts`` these are the MLP neurons."""

    name = "neurons"
    has_error = False
    identity = True

    def __init__(self, sites: SiteTable, site: str):
        sites.site(site)  # raises on an unknown site, naming the valid ones
        self.site = site
        self._width = sites.width(site)

    def n_units(self) -> int:
        return self._width

    def encode(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        return x

    def decode(self, layer: int, units: torch.Tensor) -> torch.Tensor:
        return units

    def decode_delta(self, layer: int, delta: torch.Tensor) -> torch.Tensor:
        return delta

    def quality(self) -> dict[str, Any] | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"basis": self.name, "site": self.site, "dictionary": None}


def make_basis(sites: SiteTable, basis: str, site: str, dictionary: str | None = None) -> Basis:
    """Resolve a basis name; unknown names raise listing the valid ones."""
    if basis == "neurons":
        if dictionary is not None:
            raise ValueError("basis 'neurons' takes no dictionary; pass dictionary=None")
        return NeuronBasis(sites, site)
    if basis in ("sae", "transcoder"):
        try:
            from baselines.dictionaries import make_dictionary_basis
        except ImportError as err:
            raise NotImplementedError(
                f"basis {basis!r} needs the baselines package's dictionaries, not installed here"
            ) from err
        return make_dictionary_basis(sites, basis, site, dictionary)
    close = difflib.get_close_matches(basis, BASIS_NAMES, n=2)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(f"unknown basis {basis!r}{hint}; valid bases: {', '.join(BASIS_NAMES)}")
