"""Checking tasks against a model: tiny random models (fast) and SmolLM2 (slow)."""

from __future__ import annotations

import pytest
import torch

from bench import load_model
from bench.model.tiny import tiny_model, tiny_tokenizer
from tasks import Pair, get_task
from tasks.__main__ import main
from tasks.check import CheckResult, check_dataset, check_tasks, format_table
from tasks.validate import finalize

# Words of bench.model.tiny's default corpus, so the tiny-llama tokenizer has them as tokens.
PAIRS = [
    Pair("The parents", "The parent", " are", " is"),
    Pair("The parent", "The parents", " is", " are"),
    Pair("The authors", "The author", " were", " was"),
    Pair("The author", "The authors", " was", " were"),
    Pair("The dogs", "The dog", " have", " has"),
    Pair("The dog", "The dogs", " has", " have"),
]


@pytest.fixture(scope="module")
def tiny_llama():
    return load_model("tiny-llama")


def test_check_on_tiny_llama(tiny_llama):
    h = tiny_llama
    ds = finalize(PAIRS, h.tokenizer, n_train=0, n_test=4, seed=0, task="tiny", version="0")
    res = check_dataset(h.model, h.tokenizer, ds, batch_size=3)
    assert isinstance(res, CheckResult) and res.n == 4 and 0.0 <= res.accuracy <= 1.0
    assert res.accuracy <= min(res.clean_accuracy, res.cf_accuracy)
    # The logit difference matches a plain forward of each prompt.
    diffs = []
    for p in ds.test:
        logits = h.model(torch.tensor([h.tokenizer(p.clean_prompt).input_ids])).logits[0, -1]
        a = h.tokenizer(p.clean_answer, add_special_tokens=False).input_ids[0]
        b = h.tokenizer(p.counterfactual_answer, add_special_tokens=False).input_ids[0]
        diffs.append((logits[a] - logits[b]).item())
    assert res.logit_diff == pytest.approx(sum(diffs) / len(diffs), abs=1e-4)
    assert "tiny" in format_table([res])


def test_check_tasks_returns_per_task_numbers():
    names = ["capitals", "ioi", "sva_simple"]  # the quick ones; every task builds elsewhere
    corpus = [line for n in names for line in get_task(n).corpus(n=150)]
    tok = tiny_tokenizer(corpus, vocab_size=2048)
    model, tok = tiny_model("llama", tokenizer=tok)
    results = check_tasks(model.eval(), tok, names, n_test=8, batch_size=4)
    assert [r.task for r in results] == names
    assert all(r.n == 8 and 0.0 <= r.accuracy <= 1.0 for r in results)
    table = format_table(results, threshold=1.01)
    assert all(n in table for n in names) and "LOW (<101%)" in table


def test_empty_split_raises(tiny_llama):
    h = tiny_llama
    ds = finalize(PAIRS, h.tokenizer, n_train=3, n_test=0, seed=0, task="tiny", version="0")
    with pytest.raises(ValueError, match="test split is empty"):
        check_dataset(h.model, h.tokenizer, ds)


@pytest.mark.slow
def test_cli_check_on_smollm2(capsys):
    assert main(["check", "--model", "smollm2-135m", "--tasks", "sva_simple", "--n-test", "8"]) == 0
    out = capsys.readouterr().out
    assert "sva_simple" in out and "logit_diff" in out
