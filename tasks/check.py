"""Check tasks against a model: does it do the task?

For each test pair, the logit difference m = logit[clean answer] - logit[counterfactual answer]
at the last position is taken on the clean prompt and on the counterfactual prompt. A pair
counts as correct when the clean prompt prefers its answer (m > 0) *and* the counterfactual
prompt prefers its own (m < 0). Tasks under ``threshold`` accuracy are flagged; they still
build (a weak model is a finding, not an error).

Forwards are batched without padding (a dataset's pairs share one token length) under
``torch.no_grad``. m is computed by the sweep's own metric function
(:func:`tasks.metric.logit_difference`); the CLI loads the model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tasks.dataset import ContrastiveDataset
from tasks.metric import MIN_ACCURACY, logit_difference
from tasks.registry import get_task
from tasks.validate import encode

log = logging.getLogger(__name__)

THRESHOLD = MIN_ACCURACY


@dataclass
class CheckResult:
    """How a model does on one dataset's split."""

    task: str
    version: str
    n: int
    seq_len: int
    accuracy: float  # both prompts prefer their own answer
    clean_accuracy: float  # the clean prompt prefers the clean answer
    cf_accuracy: float  # the counterfactual prompt prefers the counterfactual answer
    logit_diff: float  # mean m on clean prompts
    cf_logit_diff: float  # mean m on counterfactual prompts (negative when right)

    def flagged(self, threshold: float = THRESHOLD) -> bool:
        return self.accuracy < threshold


@torch.no_grad()
def _last_logits(model: Any, ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    device = next(model.parameters()).device
    chunks = []
    for i in range(0, ids.shape[0], batch_size):
        batch = ids[i : i + batch_size].to(device)
        try:  # only the last position's logits are needed (saves the unembedding elsewhere)
            logits = model(input_ids=batch, logits_to_keep=1).logits
        except TypeError:  # a model without logits_to_keep
            logits = model(input_ids=batch).logits
        chunks.append(logits[:, -1].float().cpu())
    return torch.cat(chunks) if chunks else torch.empty(0)


def logit_diffs(
    model: Any, tokenizer: Any, ds: ContrastiveDataset, split: str = "test", batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """m on the clean prompts and m on the counterfactual prompts, one value per pair."""
    enc = encode(ds, tokenizer)[split]
    if enc["clean_ids"].shape[0] == 0:
        return torch.empty(0), torch.empty(0)
    clean = _last_logits(model, enc["clean_ids"], batch_size)
    cf = _last_logits(model, enc["cf_ids"], batch_size)
    a, b = enc["clean_answer_id"], enc["cf_answer_id"]  # [pairs]
    return logit_difference(clean, a, b), logit_difference(cf, a, b)


def check_dataset(
    model: Any, tokenizer: Any, ds: ContrastiveDataset, split: str = "test", batch_size: int = 32
) -> CheckResult:
    """Accuracy and mean logit difference of ``model`` on one split of ``ds``."""
    m_clean, m_cf = logit_diffs(model, tokenizer, ds, split, batch_size)
    n = int(m_clean.numel())
    if n == 0:
        raise ValueError(f"{ds.task}: the {split} split is empty; nothing to check")
    return CheckResult(
        task=ds.task,
        version=ds.version,
        n=n,
        seq_len=ds.seq_len,
        accuracy=((m_clean > 0) & (m_cf < 0)).float().mean().item(),
        clean_accuracy=(m_clean > 0).float().mean().item(),
        cf_accuracy=(m_cf < 0).float().mean().item(),
        logit_diff=m_clean.mean().item(),
        cf_logit_diff=m_cf.mean().item(),
    )


def check_tasks(
    model: Any,
    tokenizer: Any,
    names: Sequence[str],
    n_test: int = 40,
    seed: int = 0,
    batch_size: int = 32,
) -> list[CheckResult]:
    """Build each task's test split (``n_train=0``; the test split does not depend on it) under
    ``tokenizer`` and check ``model`` on it."""
    results = []
    for name in names:
        ds = get_task(name).build(tokenizer, n_train=0, n_test=n_test, seed=seed)
        result = check_dataset(model, tokenizer, ds, "test", batch_size)
        log.info("%s: accuracy %.3f, logit diff %.3f", name, result.accuracy, result.logit_diff)
        results.append(result)
    return results


def format_table(results: Sequence[CheckResult], threshold: float = THRESHOLD) -> str:
    """A plain-text table of check results; tasks under ``threshold`` are flagged LOW."""
    header = (
        f"{'task':<15} {'version':<11} {'n':>4} {'len':>4} {'acc':>6} {'clean':>6} "
        f"{'cf':>6} {'logit_diff':>10} {'cf_diff':>8}  flag"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        flag = f"LOW (<{threshold:.0%})" if r.flagged(threshold) else ""
        lines.append(
            f"{r.task:<15} {r.version:<11} {r.n:>4} {r.seq_len:>4} {r.accuracy:>6.3f} "
            f"{r.clean_accuracy:>6.3f} {r.cf_accuracy:>6.3f} {r.logit_diff:>10.3f} "
            f"{r.cf_logit_diff:>8.3f}  {flag}".rstrip()
        )
    return "\n".join(lines)
