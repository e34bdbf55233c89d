"""Forwards that start at a block: the blocks below it are not run again.

When many forwards differ only from block L on (one dictionary spliced at layer L, say), the
blocks below L compute the same values in every one of them. Steps:

1. :func:`block_inputs`: one forward capturing the input of every requested block,
   ``[batch, pos, d_model]`` each (the residual stream entering it);
2. :func:`start_at`: inside it, the model's own forward runs with every block below L swapped
   for a pass-through, and block L's input replaced by the captured one. Embeddings, masks and
   position encodings are still computed by the model's forward, exactly as in a full forward,
   so block L and everything above it see the same inputs and compute the same values, bit for
   bit (the tests compare against full forwards on every architecture). The blocks are put back
   on exit, also when the body raises.

The blocks come from the site table (:meth:`~bench.model.sites.SiteTable.blocks`); no module
path is named here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from bench.model.sites import SiteTable


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    """A block's residual-stream input: its first positional argument, or ``hidden_states``."""
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args: tuple, kwargs: dict, new: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (new, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": new}


@contextlib.contextmanager
def block_inputs(sites: SiteTable, layers: list[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Step 1: ``{layer: [batch, pos, d_model]}``, filled by the forwards run inside (the last
    wins); detached, so nothing holds a graph."""
    for layer in layers:
        sites.check_layer(layer)
    got: dict[int, torch.Tensor] = {}

    def hook_for(layer: int):
        def hook(_module, args, kwargs):
            got[layer] = _hidden(args, kwargs).detach()

        return hook

    handles = [
        sites.layer_module(layer).register_forward_pre_hook(hook_for(layer), with_kwargs=True)
        for layer in layers
    ]
    try:
        yield got
    finally:
        for h in handles:
            h.remove()


class _PassThrough(nn.Module):
    """Stands in for a block below the start: returns the residual stream unchanged."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


@contextlib.contextmanager
def start_at(sites: SiteTable, layer: int, hidden: torch.Tensor) -> Iterator[None]:
    """Step 2: forwards inside run blocks ``layer``.. only, block ``layer`` reading ``hidden``
    (``[batch, pos, d_model]``, captured by :func:`block_inputs` on the same input ids)."""
    sites.check_layer(layer)
    if layer == 0:  # nothing to skip; the embeddings are recomputed bit for bit anyway
        yield
        return
    container = sites.blocks()
    saved = [container[i] for i in range(layer)]

    def replace_input(_module, args, kwargs):
        if _hidden(args, kwargs).shape != hidden.shape:
            raise ValueError(
                f"start_at(layer {layer}): the forward's residual stream has shape "
                f"{tuple(_hidden(args, kwargs).shape)}, the captured input {tuple(hidden.shape)}; "
                "capture it from the same input ids"
            )
        return _with_hidden(args, kwargs, hidden)

    handle = container[layer].register_forward_pre_hook(replace_input, with_kwargs=True)
    try:
        for i in range(layer):
            container[i] = _PassThrough()
        yield
    finally:
        for i, block in enumerate(saved):
            container[i] = block
        handle.remove()
