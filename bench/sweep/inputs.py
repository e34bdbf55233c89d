"""What every cell swept on one test split computes alike: :class:`SweepInputs`, computed on
first use and then reused.

The cells of a dataset (every basis and method on one model's test split) differ in their
masks, never in these:

1. the clean prompts' shared prefix (:func:`bench.sweep.sweep.clean_prefix`): one plain
   forward, no basis, method or mask in it, whose logits also give m(M);
2. per basis and ablation reference, what each ablated node becomes
   (:meth:`bench.sweep.references.Reference.ablation`; for ``patch``, one forward of the
   counterfactual prompts): no method or mask in it.

A suite keeps one per dataset (:class:`bench.suite.state.Suite`); a lone cell makes its own.
Each cell gets the very tensors the first one computed, so the metrics are the same bit for
bit; the first cell's sweep time includes them, later cells' does not.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch

from bench.model.prefix import PrefixCache
from bench.sweep.references import Reference
from bench.sweep.sweep import clean_prefix
from bench.sweep.units import AblationValues

if TYPE_CHECKING:
    from bench.bases import Basis
    from bench.model.handle import ModelHandle


class SweepInputs:
    """Steps 1-2 of the module docstring for the test split ``test`` (clean_ids/cf_ids
    [pairs, seq], answer ids [pairs]) of ``handle``'s model."""

    def __init__(self, handle: ModelHandle, test: dict[str, torch.Tensor]):
        self.handle, self.test = handle, test
        self._values: dict[tuple, tuple[Basis, AblationValues]] = {}

    @functools.cached_property
    def prefix(self) -> PrefixCache | None:
        """Step 1: the clean prompts' shared prefix; None when they share none."""
        return clean_prefix(self.handle, self.test)

    def ablation(self, basis: Basis, reference: Reference) -> AblationValues:
        """Step 2 for ``basis`` (every position of the prompts)."""
        key = (id(basis), reference.name)
        if key not in self._values:  # the basis is kept with its values, so its id stays its own
            self._values[key] = (basis, reference.ablation(self.handle, basis, self.test))
        return self._values[key][1]
