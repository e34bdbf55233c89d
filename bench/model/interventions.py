"""Interventions: capture and replace activations at (site, layer) pairs.

One context manager, :func:`intervene`, does both:

1. validate every requested (site, layer) against the model's site table (unknown site or
   layer raises before any hook is registered);
2. register one hook per module: a forward pre-hook for sites that are a module's input,
   a forward hook for sites that are a module's output;
3. inside the hook, replace the activation (a tensor, or a function of the current value) and
   then record it, so a capture at a replaced site sees the value that flowed on;
4. with ``grad=True``, make captured activations part of an autograd graph even though the
   model's parameters do not require grad: the first captured activation that is not yet in a
   graph becomes a leaf (``detach().requires_grad_()``, same values); everything downstream
   then depends on it;
5. remove every hook on exit, also when the body raises.

Captured tensors stay in the autograd graph, so ``torch.autograd.grad(metric, captured)`` gives
gradients with respect to site activations without any parameter gradient being computed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Union

import torch

from bench.model.sites import SiteTable

SiteKey = tuple[str, int]  # (site, layer)
Replacement = Union[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]  # noqa: UP007


def _primary(value):
    """The activation inside a module output that may be a tuple (attention, old blocks)."""
    return value[0] if isinstance(value, tuple) else value


def _with_primary(value, new: torch.Tensor):
    return (new, *value[1:]) if isinstance(value, tuple) else new


def _apply(rep: Replacement | None, current: torch.Tensor) -> torch.Tensor:
    if rep is None:
        return current
    new = rep(current) if callable(rep) else rep
    if new.shape != current.shape:
        raise ValueError(
            f"replacement has shape {tuple(new.shape)}, site activation has {tuple(current.shape)}"
        )
    return new.to(dtype=current.dtype, device=current.device)


@contextlib.contextmanager
def intervene(
    sites: SiteTable,
    capture: Iterable[SiteKey] = (),
    replace: Mapping[SiteKey, Replacement] | None = None,
    grad: bool = False,
) -> Iterator[dict[SiteKey, torch.Tensor]]:
    """Capture and/or replace activations while the block runs.

    ``sites`` is a model's :class:`SiteTable` (``handle.sites``). ``capture`` lists
    (site, layer) pairs to record; ``replace`` maps (site, layer) to a tensor of the site's
    shape (``[batch, pos, width]``) or a function of the current activation. Yields a dict that
    fills with captured activations on each forward pass (the last pass wins).
    """
    capture = list(capture)
    replace = dict(replace or {})
    keys = list(dict.fromkeys([*capture, *replace]))
    for site, layer in keys:
        sites.site(site)
        sites.check_layer(layer)

    captured: dict[SiteKey, torch.Tensor] = {}
    want = set(capture)
    handles = []

    def make_hook(key: SiteKey, is_input: bool):
        rep = replace.get(key)
        to_leaf = grad and key in want

        def value(current: torch.Tensor) -> torch.Tensor:
            new = _apply(rep, current)
            if to_leaf and not new.requires_grad:
                new = new.detach().requires_grad_(True)
            if key in want:
                captured[key] = new
            return new

        def on_input(_module, args):
            new = value(args[0])
            return (new, *args[1:]) if new is not args[0] else None

        def on_output(_module, _args, output):
            current = _primary(output)
            new = value(current)
            return _with_primary(output, new) if new is not current else None

        return on_input if is_input else on_output

    try:
        for key in keys:
            site, layer = key
            module = sites.module(site, layer)
            if sites.site(site).tensor == "input":
                handles.append(module.register_forward_pre_hook(make_hook(key, True)))
            else:
                handles.append(module.register_forward_hook(make_hook(key, False)))
        yield captured
    finally:
        for h in handles:
            h.remove()
