"""The task metric m = logit[clean answer] − logit[counterfactual answer], on given logits.

Defined with the tasks (it is what a contrastive pair measures) and used by the harness
(:func:`bench.sweep.units.metric`) and ``python -m tasks check`` alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Below this accuracy on its test pairs (m > 0: the clean answer above the counterfactual one)
# a model cannot do the task, and a circuit for it is a circuit for noise: ``python -m tasks
# check`` flags such tasks and the suite's verdict gives none for them.
MIN_ACCURACY = 0.7


def logit_difference(
    logits: torch.Tensor,  # [batch, vocab]: the last position's logits
    clean_ans: torch.Tensor,  # [answers] token ids; batch is answers repeated reps times
    cf_ans: torch.Tensor,  # [answers]
) -> torch.Tensor:  # [batch]
    """m = logit[clean answer] − logit[counterfactual answer]: the one metric function
    (the sweep's, and ``python -m tasks check``'s)."""
    n = logits.shape[0]
    reps = n // clean_ans.shape[0]  # the batch may be the answers' batch repeated
    return (
        logits.gather(1, clean_ans.repeat(reps)[:, None])[:, 0]
        - logits.gather(1, cf_ans.repeat(reps)[:, None])[:, 0]
    )
