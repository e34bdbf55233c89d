"""r(x) for each reference (patch, mean, zero): one registry, used by attribution and sweep.

A :class:`Reference` is registered once (:func:`register_reference`) and computes, for a basis,

1. :meth:`Reference.split_means`: what it needs from a whole split first (``mean``: the
   per-position mean of every unit and error node over the split's counterfactual prompts —
   the train split for attribution, the test split for the sweep); None for the others;
2. :meth:`Reference.batch`: r(x) of every unit and error node for one batch of pairs, shaped
   like the batch's own units (attribution);
3. :meth:`Reference.ablation`: what each ablated node becomes on the test split (the sweep):
   [batch, pos, n] for ``patch``, [pos, n] for ``mean`` and ``zero``.

:func:`get_reference` is the one place an unknown reference name is refused. The protocol
(:mod:`bench.protocol`) names which reference each stage uses.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

import torch

from bench.cell import RUN
from bench.protocol import REFERENCES
from bench.sweep.units import AblationValues, LayerUnits, unit_values

if TYPE_CHECKING:
    from bench.bases import Basis
    from bench.model.handle import ModelHandle


def mean_units(
    handle: ModelHandle, basis: Basis, ids: torch.Tensor, batch_size: int = RUN.batch_size
) -> list[LayerUnits]:
    """Step 2: per layer, each unit's (and error node's) mean over the prompts ``ids``, per
    position: units [pos, n], error [pos, width]. Accumulated in float64, batch by batch, so a
    node with the same value on every prompt has exactly that value as its mean."""
    sums: list[LayerUnits] = []
    for start in range(0, ids.shape[0], batch_size):
        with torch.no_grad(), unit_values(handle, basis) as vals:
            handle.model(input_ids=ids[start : start + batch_size], logits_to_keep=1)
        for layer in range(handle.sites.n_layers):
            u = vals[layer].units.double().sum(0)  # [pos, n]
            e = vals[layer].error.double().sum(0) if vals[layer].error is not None else None
            if len(sums) <= layer:
                sums.append(LayerUnits(u, e))
            else:
                sums[layer].units += u
                if e is not None:
                    sums[layer].error += e
    n = ids.shape[0]
    dtype = handle.dtype
    return [
        LayerUnits(
            s.units.div(n).to(dtype), s.error.div(n).to(dtype) if s.error is not None else None
        )
        for s in sums
    ]


def _counterfactual_units(handle, basis, ids: torch.Tensor) -> dict[int, LayerUnits]:
    with torch.no_grad(), unit_values(handle, basis) as vals:
        handle.model(input_ids=ids, logits_to_keep=1)
    return dict(vals)


class Reference:
    """One reference value r(x); subclasses define it (see the module docstring)."""

    name: str = ""
    needs_means = False  # split_means gives something batch() and ablation() need
    from_counterfactual = False  # r(x) = a(x′): one forward on the pair's counterfactual
    # every node before the pairs' first differing token equals its reference, so no ablation
    # changes those positions (the sweep may run them once: bench.model.prefix)
    fixes_shared_prefix = False

    def split_means(self, handle, basis, ids: torch.Tensor, batch_size: int = RUN.batch_size):
        return None

    def batch(self, handle, basis, batch, clean, means=None) -> dict[int, LayerUnits]:
        raise NotImplementedError

    def ablation(self, handle, basis, test: dict[str, torch.Tensor]) -> AblationValues:
        raise NotImplementedError


REFERENCE_REGISTRY: dict[str, Reference] = {}


def register_reference(cls: type[Reference]) -> type[Reference]:
    if cls.name not in REFERENCES:
        raise ValueError(f"reference {cls.name!r} is not among {', '.join(REFERENCES)}")
    REFERENCE_REGISTRY[cls.name] = cls()
    return cls


def get_reference(name: str) -> Reference:
    """The registered reference ``name``; unknown names raise naming the valid ones."""
    if name in REFERENCE_REGISTRY:
        return REFERENCE_REGISTRY[name]
    close = difflib.get_close_matches(str(name), list(REFERENCE_REGISTRY), n=2)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(f"unknown reference {name!r}{hint}; valid: {', '.join(REFERENCES)}")


def _per_layer(per_layer: list[LayerUnits], has_error: bool) -> AblationValues:
    units = [lu.units for lu in per_layer]
    return AblationValues(units, [lu.error for lu in per_layer] if has_error else None)


@register_reference
class Patch(Reference):
    """r(x) = a(x′), the pair's own counterfactual (MIB's standard; the default)."""

    name = "patch"
    from_counterfactual = True
    fixes_shared_prefix = True  # a causal LM's a(x′) = a(x) before the first differing token

    def batch(self, handle, basis, batch, clean, means=None):
        return _counterfactual_units(handle, basis, batch["cf_ids"])

    def ablation(self, handle, basis, test):
        cf = _counterfactual_units(handle, basis, test["cf_ids"])
        return _per_layer([cf[layer] for layer in range(handle.sites.n_layers)], basis.has_error)


@register_reference
class Mean(Reference):
    """r = the per-position mean over a split's counterfactual prompts."""

    name = "mean"
    needs_means = True

    def split_means(self, handle, basis, ids, batch_size=RUN.batch_size):
        return mean_units(handle, basis, ids, batch_size)

    def batch(self, handle, basis, batch, clean, means=None):
        assert means is not None, "the mean reference needs split_means of the split"
        out = {}
        for layer, lu in clean.items():
            m = means[layer]
            err = m.error.expand_as(lu.error) if lu.error is not None else None
            out[layer] = LayerUnits(m.units.expand_as(lu.units), err)
        return out

    def ablation(self, handle, basis, test):
        n = test["cf_ids"].shape[0]
        return _per_layer(mean_units(handle, basis, test["cf_ids"], batch_size=n), basis.has_error)


@register_reference
class Zero(Reference):
    """r = 0."""

    name = "zero"

    def batch(self, handle, basis, batch, clean, means=None):
        out = {}
        for layer, lu in clean.items():
            err = torch.zeros_like(lu.error) if lu.error is not None else None
            out[layer] = LayerUnits(torch.zeros_like(lu.units), err)
        return out

    def ablation(self, handle, basis, test):  # no forward needed: only the shapes
        pos = test["cf_ids"].shape[1]
        kw = {"dtype": handle.dtype, "device": handle.device}
        err = (pos, handle.sites.width(basis.site))
        per_layer = [
            LayerUnits(
                torch.zeros((pos, basis.n_units()), **kw),
                torch.zeros(err, **kw) if basis.has_error else None,
            )
            for _ in range(handle.sites.n_layers)
        ]
        return _per_layer(per_layer, basis.has_error)


def batch_reference(
    handle: ModelHandle,
    basis: Basis,
    batch: dict[str, torch.Tensor],
    kind: str,
    clean: dict[int, LayerUnits],
    means: list[LayerUnits] | None = None,
) -> dict[int, LayerUnits]:
    """r(x) of every unit and error node for ``batch``, shaped like ``clean``."""
    return get_reference(kind).batch(handle, basis, batch, clean, means)


def ablation_values(
    handle: ModelHandle, basis: Basis, test: dict[str, torch.Tensor], reference: str
) -> AblationValues:
    """What each ablated unit (and error node) becomes on the test split, per layer."""
    return get_reference(reference).ablation(handle, basis, test)
