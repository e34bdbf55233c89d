"""Shared prefixes: the positions no intervention after them can change, computed once.

In a causal language model, position p depends only on positions ≤ p. When every intervention of
a forward leaves positions before P untouched (under the ``patch`` reference, a node before the
first token where a pair's prompts differ equals its reference, so ablating it or keeping it
gives the same value), those positions are the clean prompt's, whatever the mask. Steps:

1. :func:`shared_prefix`: P, the number of leading positions where every pair's clean and
   counterfactual token ids agree, leaving at least two positions to run (the metric reads the
   last; and the CPU attention kernel takes another path for a single query, whose bf16
   rounding differs from a whole-prompt forward's);
2. :class:`PrefixCache`: one plain forward of the whole clean prompts, keeping every layer's
   keys and values of the first P positions. The whole prompt, not its first P tokens: the
   CPU's attention kernel rounds a P-token causal forward differently from the first P rows of
   a longer one (bf16 logits moved by up to 0.6), while the rows after a cached prefix match a
   whole-prompt forward bit for bit;
3. :meth:`PrefixCache.repeated`: a fresh cache holding that prefix repeated S times (the batch
   order of ``ids.repeat(S, 1)``), for one forward of the suffix under S masks; each forward
   appends its own keys to its own copy, so the prefix is never changed.

The suffix forward then computes positions P..seq-1 only, with the prefix's keys and values
read from the cache: the attention and RoPE positions are those of the full prompt.
"""

from __future__ import annotations

import logging

import torch
from transformers import DynamicCache

from bench.model.handle import ModelHandle

log = logging.getLogger(__name__)


MIN_SUFFIX = 2  # positions always run per mask (see step 1)


def shared_prefix(clean_ids: torch.Tensor, cf_ids: torch.Tensor) -> int:
    """Step 1: leading positions equal in every pair, at most ``seq - MIN_SUFFIX`` (0 when the
    prompts are shorter).  # [n, seq] x2 -> P"""
    same = (clean_ids == cf_ids).all(dim=0)  # [seq]
    differ = (~same).nonzero()
    first = int(differ[0]) if len(differ) else same.shape[0]
    return max(0, min(first, same.shape[0] - MIN_SUFFIX))


class PrefixCache:
    """Step 2: keys and values of every layer for the first ``length`` positions of ``ids``."""

    def __init__(self, handle: ModelHandle, ids: torch.Tensor, length: int):  # ids [batch, seq]
        with torch.no_grad():
            out = handle.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        self._keep(handle, out.past_key_values, length)
        self.last_logits = out.logits[:, -1]  # [batch, vocab]: the plain model's, for m(M)

    @classmethod
    def of(cls, handle: ModelHandle, cache: DynamicCache, length: int) -> PrefixCache:
        """The first ``length`` positions of the cache a whole-prompt forward returned (with
        ``use_cache=True``; a gradient forward's too: the values are detached)."""
        self = cls.__new__(cls)
        self._keep(handle, cache, length)
        self.last_logits = None
        return self

    def _keep(self, handle: ModelHandle, cache: DynamicCache, length: int) -> None:
        self.handle = handle
        self.length = length
        # [batch, kv_heads, length, head_dim] per layer
        self.layers = [
            (layer.keys[:, :, :length].detach().clone(),
             layer.values[:, :, :length].detach().clone())
            for layer in cache.layers
        ]  # fmt: skip

    def repeated(self, times: int) -> DynamicCache:
        """Step 3: a new cache of the prefix repeated ``times`` (tile order, like
        ``Tensor.repeat``), so row s*batch + b holds pair b's prefix."""
        data = [(k.repeat(times, 1, 1, 1), v.repeat(times, 1, 1, 1)) for k, v in self.layers]
        return DynamicCache(data, config=self.handle.model.config)
