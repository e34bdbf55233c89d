"""A tiny contrastive dataset whose words are single tokens of a tokenizer trained on it."""

from __future__ import annotations

import itertools

from bench.model.tiny import tiny_model, tiny_tokenizer
from tasks.dataset import ContrastiveDataset, Pair

NOUNS = [("dog", "dogs"), ("cat", "cats"), ("parent", "parents"), ("author", "authors"),
         ("pilot", "pilots"), ("doctor", "doctors")]  # fmt: skip
PLACES = ["car", "house", "tree", "road"]


def _pairs() -> list[Pair]:
    out = []
    for (sg, pl), place in itertools.product(NOUNS, PLACES):
        # Clean and counterfactual differ only in the subject's number (position 1).
        out.append(Pair(f"The {pl} near the {place}", f"The {sg} near the {place}", " are", " is"))
        out.append(Pair(f"The {sg} near the {place}", f"The {pl} near the {place}", " is", " are"))
    return out


def _last_token_pairs() -> list[Pair]:
    # Differ only at the last position: every earlier position must get exactly zero score.
    return [
        Pair(f"The {sg} near the {pl}", f"The {sg} near the {sg}", " is", " are")
        for sg, pl in NOUNS
    ]


def corpus() -> list[str]:
    words = [w for pair in NOUNS for w in pair] + PLACES + ["The", "near", "the", "is", "are"]
    return [" ".join(words)] * 20 + [p.clean_prompt + p.clean_answer for p in _pairs()]


def tiny_handle(arch: str = "llama", seed: int = 0):
    from bench.model.handle import ModelHandle
    from bench.model.sites import SiteTable

    model, tok = tiny_model(arch, tiny_tokenizer(corpus()), seed=seed)
    model.eval().requires_grad_(False)
    return ModelHandle(model, tok, f"tiny-{arch}", "test", SiteTable.for_model(model))


def dataset(n_train: int = 16, n_test: int = 8, last_token: bool = False) -> ContrastiveDataset:
    pairs = _last_token_pairs() if last_token else _pairs()
    train, test = pairs[:n_train], pairs[n_train : n_train + n_test]
    if last_token:
        train, test = pairs, pairs[:2]
    return ContrastiveDataset(
        task="tiny_sva", version="test", seed=0, tokenizer="tiny-bpe", seq_len=5,
        train=train, test=test,
    )  # fmt: skip
