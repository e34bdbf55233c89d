"""What ``atp`` and ``relp`` compute alike on one train split, kept for the other's pass.

Both methods score a node by (u(x) − r(x)) · ∂m/∂u (:mod:`bench.attribution.gradients`); they
differ only in the gradient. The first factor — per basis and batch, each unit's difference
from its reference and the error node's — costs the counterfactual forward and every encode
and decode of both prompts. :class:`Differences` holds it from the first method's pass to the
next one's on the same split:

1. a pass computes a batch's differences for a basis only if none are held under its key
   (:func:`key`: the basis, the reference, the batch size, the batch and its first position);
2. it offers them (:meth:`Differences.put`); they are kept while the store's byte budget
   allows, for ``uses - 1`` later passes (one per other method), and dropped after the last;
3. a later pass takes them (:meth:`Differences.take`) and runs only its gradient forward and
   backward. The tensors are the very ones the first pass multiplied, and the two methods'
   forward values are the same bit for bit (RelP changes the backward only), so the scores are
   the same as each method's own.

A suite keeps one per dataset when two or more such methods are selected
(:class:`bench.suite.state.Suite`); without one, each pass computes its own.
"""

from __future__ import annotations

import logging
import threading

import torch

log = logging.getLogger(__name__)

# per basis, per layer: ([batch, pos, n_units] unit differences, [batch, pos, width] error
# difference or None), positions from the batch's first differing token on
Entry = list[tuple[torch.Tensor, torch.Tensor | None]]

DEFAULT_BUDGET = 1 << 30  # bytes held at most (1 GiB); past it, a later pass recomputes


def key(basis, reference: str, batch_size: int, batch_index: int, start: int) -> tuple:
    """Step 1: what an entry's values depend on besides the split (one store per split)."""
    return (id(basis), reference, batch_size, batch_index, start)


class Differences:
    """Steps 2-3 for one train split, shared by ``uses`` passes (one per method)."""

    def __init__(self, uses: int, budget: int = DEFAULT_BUDGET):
        if uses < 2:
            raise ValueError(f"a store of differences serves 2 or more passes, got uses={uses}")
        self.uses, self.budget = uses, budget
        self.held = 0  # bytes
        self._entries: dict[tuple, list] = {}  # key -> [entry, bases kept alive, uses left]
        self._lock = threading.Lock()  # batches of a pass run side by side (bench.model.replicas)

    def put(self, k: tuple, basis, entry: Entry) -> bool:
        """Offer a pass's entry; whether it is kept (not when held already or over budget)."""
        size = sum(t.nbytes for pair in entry for t in pair if t is not None)
        with self._lock:
            if k in self._entries or self.held + size > self.budget:
                return False
            self._entries[k] = [entry, basis, self.uses - 1]  # the basis pins its id
            self.held += size
            return True

    def take(self, k: tuple) -> Entry | None:
        """The entry under ``k`` (None if none is held); dropped after its last use."""
        with self._lock:
            slot = self._entries.get(k)
            if slot is None:
                return None
            slot[2] -= 1
            if slot[2] == 0:
                del self._entries[k]
                self.held -= sum(t.nbytes for pair in slot[0] for t in pair if t is not None)
            return slot[0]
