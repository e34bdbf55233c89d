"""Units in the forward pass: the metric, unit capture with gradients, and unit ablation.

Everything the attribution and sweep stages do to a model goes through three context managers
built on :func:`bench.model.interventions.intervene`, applied at the basis's site on every layer:

1. :func:`unit_values` — record units (and error nodes) per layer, no gradients;
2. :func:`unit_leaves` — make units (and error nodes) leaves of the autograd graph without
   changing any value: the site's activation becomes ``x + (dec(u) - stopgrad(dec(u)))``
   (+ the same for the error), so ∂m/∂u is the gradient at the unit and upstream gradients are
   untouched (the direct, one-basis-at-a-time form; :mod:`bench.attribution` shares one site
   gradient across bases, and the tests hold the two equal);
3. :func:`unit_ablation` — run S circuit masks at once on a batch repeated S times; a unit
   outside its mask takes its ablation value (mean, zero, or counterfactual).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from bench.bases import Basis
from bench.core.finite import check_finite
from bench.model.handle import ModelHandle
from bench.model.interventions import intervene
from tasks.metric import logit_difference


def metric(
    handle: ModelHandle,
    ids: torch.Tensor,  # [batch, pos]: the whole prompts, or the suffix after ``past``
    clean_ans: torch.Tensor,
    cf_ans: torch.Tensor,
    past=None,  # a transformers Cache holding the keys and values of the positions before ids
):
    """m = logit[clean answer] − logit[counterfactual answer] at the last position.  # [batch]"""
    kw = {"past_key_values": past, "use_cache": True} if past is not None else {}
    logits = handle.model(input_ids=ids, logits_to_keep=1, **kw).logits[:, -1]  # [batch, vocab]
    return logit_difference(logits, clean_ans, cf_ans)


@contextlib.contextmanager
def _at_every_layer(handle: ModelHandle, basis: Basis, make) -> Iterator[None]:
    """Replace the basis's site on every layer with ``make(layer, read)``'s function.

    ``read(layer, x)`` is what the basis encodes: the site's own activation ``x``, or, for a
    basis that reads elsewhere (a transcoder reads ``mlp_in`` and writes ``mlp_out``), the
    activation captured at its ``read_site`` earlier in the same forward pass.
    """
    read_site = basis.read_site
    layers = range(handle.sites.n_layers)
    capture = [] if read_site == basis.site else [(read_site, layer) for layer in layers]
    holder: dict[str, dict] = {}

    def read(layer: int, x: torch.Tensor) -> torch.Tensor:
        return holder["acts"][(read_site, layer)].detach() if capture else x

    replace = {(basis.site, layer): make(layer, read) for layer in layers}
    with intervene(handle.sites, capture=capture, replace=replace) as acts:
        holder["acts"] = acts
        yield


@dataclass
class LayerUnits:
    units: torch.Tensor  # [batch, pos, n_units]
    error: torch.Tensor | None  # [batch, pos, width], dictionary bases only


@contextlib.contextmanager
def unit_values(handle: ModelHandle, basis: Basis) -> Iterator[dict[int, LayerUnits]]:
    """Fill a dict layer -> LayerUnits on each forward (no gradients)."""
    out: dict[int, LayerUnits] = {}

    def make(layer: int, read):
        def fn(x: torch.Tensor) -> torch.Tensor:
            x = x.detach()
            check_finite(x, f"{basis.site} layer {layer}")
            u = basis.encode(layer, read(layer, x))
            err = x - basis.decode(layer, u) if basis.has_error else None
            out[layer] = LayerUnits(u, err)
            return x

        return fn

    with _at_every_layer(handle, basis, make):
        yield out


@contextlib.contextmanager
def unit_leaves(handle: ModelHandle, basis: Basis) -> Iterator[dict[int, LayerUnits]]:
    """Fill a dict layer -> LayerUnits of leaf tensors (requires_grad) on each forward."""
    out: dict[int, LayerUnits] = {}

    def make(layer: int, read):
        def fn(x: torch.Tensor) -> torch.Tensor:
            check_finite(x, f"{basis.site} layer {layer}")
            xd = x.detach()
            u = basis.encode(layer, read(layer, xd)).detach().requires_grad_(True)
            new = basis.straight_through(layer, x, u)
            err = None
            if basis.has_error:
                err = (xd - basis.decode(layer, u.detach())).requires_grad_(True)
                new = new + (err - err.detach())
            out[layer] = LayerUnits(u, err)
            return new

        return fn

    with _at_every_layer(handle, basis, make):
        yield out


@dataclass
class AblationValues:
    """What an ablated unit becomes, per layer: [pos, n] (mean/zero) or [batch, pos, n] (patch)."""

    units: list[torch.Tensor]
    error: list[torch.Tensor] | None  # same, for error nodes (dictionary bases)

    def from_position(self, start: int) -> AblationValues:
        """The values of positions ``start`` onwards (a suffix run after a shared prefix)."""
        error = [e[..., start:, :] for e in self.error] if self.error is not None else None
        return AblationValues([u[..., start:, :] for u in self.units], error)


@contextlib.contextmanager
def unit_ablation(
    handle: ModelHandle,
    basis: Basis,
    keep: torch.Tensor,  # [S, layers, pos, n_units] bool: True = in the kept set
    keep_error: torch.Tensor | None,  # [S, layers, pos] bool, None = never ablate errors
    values: AblationValues,
) -> Iterator[None]:
    """Run S masks at once: the batch fed to the model must be the base batch repeated S times.

    A dictionary's encoder and decoders run only on the rows (mask, pair, position) where some
    node is ablated: elsewhere the site keeps its value exactly (splicing equal latents adds
    exactly nothing), and each row's encode and decode do not depend on the others, so the
    result is the same as running every row."""
    n_masks = keep.shape[0]
    ablate_error = keep_error is not None and values.error is not None

    def make(layer: int, read):
        keep_l = keep[:, layer, None]  # [S, 1, pos, n]
        keep_err = keep_error[:, layer, None, :, None] if ablate_error else None  # [S, 1, pos, 1]
        abl = values.units[layer]
        err_ref = values.error[layer] if ablate_error else None
        touched = ~keep_l.all(-1)  # [S, 1, pos]: rows where some latent is ablated
        if keep_err is not None:
            touched = touched | ~keep_err[..., 0]
        every_row = basis.identity or bool(touched.all())

        def fn(x: torch.Tensor) -> torch.Tensor:  # [S*B, pos, width]
            sb, pos, _ = x.shape
            if every_row:
                shaped = (n_masks, sb // n_masks, pos, -1)  # [S, B, pos, .]: broadcasts masks
                out = _ablated(basis, layer, x.view(shaped), read(layer, x).view(shaped),
                               keep_l, abl, keep_err, err_ref)  # fmt: skip
                return out.view_as(x)
            rows = touched.expand(n_masks, sb // n_masks, pos).reshape(-1).nonzero()[:, 0]  # [R]
            s_i, b_i, p_i = rows // (sb // n_masks * pos), rows // pos % (sb // n_masks), rows % pos

            def at(ref: torch.Tensor) -> torch.Tensor:  # [B, pos, .] or [pos, .] -> [R, .]
                return ref[b_i, p_i] if ref.dim() == 3 else ref[p_i]

            out = x.reshape(sb * pos, -1).clone()  # [S*B*pos, width]
            out[rows] = _ablated(
                basis, layer, out[rows], read(layer, x).reshape(sb * pos, -1)[rows],
                keep[s_i, layer, p_i], at(abl),
                keep_error[s_i, layer, p_i, None] if ablate_error else None,
                at(err_ref) if ablate_error else None,
            )  # fmt: skip
            return out.view_as(x)

        return fn

    with _at_every_layer(handle, basis, make):
        yield


def _ablated(basis, layer, x, src, keep, abl, keep_err, err_ref) -> torch.Tensor:
    """The site's value with each latent outside ``keep`` set to ``abl`` and (``keep_err`` not
    None) each error node outside ``keep_err`` set to ``err_ref``; any matching leading shape
    (``[S, B, pos, .]`` with broadcast masks, or rows ``[R, .]``)."""
    u = basis.encode(layer, src)  # [..., n]
    new = torch.where(keep, u, abl.to(u.dtype))
    out = basis.splice(layer, x, new, u)  # [..., width]
    if keep_err is not None and not bool(keep_err.all()):  # all kept: out + 0, decode skipped
        err = x - basis.decode(layer, u)
        out = out + torch.where(keep_err, torch.zeros_like(err), err_ref - err)
    return out


@contextlib.contextmanager
def unit_scaling(
    handle: ModelHandle,
    basis: Basis,
    scale: torch.Tensor,  # [layers, pos, n_units]: each unit's multiplier (1 = untouched)
) -> Iterator[None]:
    """Multiply each unit's value by ``scale`` at its (layer, position), and nowhere else; the
    error node is unchanged. A scale of 1 everywhere leaves every activation as it was
    (``splice`` of equal units adds exactly nothing)."""

    def make(layer: int, read):
        s = scale[layer]  # [pos, n]

        def fn(x: torch.Tensor) -> torch.Tensor:  # [batch, pos, width]
            u = basis.encode(layer, read(layer, x))  # [batch, pos, n]
            return basis.splice(layer, x, u * s.to(u.dtype), u)

        return fn

    with _at_every_layer(handle, basis, make):
        yield
