"""Validation: every bad-input kind is dropped and counted, and too few valid pairs raise."""

from __future__ import annotations

import pytest

from bench.model.tiny import tiny_tokenizer
from tasks import InsufficientPairsError, Pair
from tasks.numbers import split_at
from tasks.registry import WhitespaceTokenizer
from tasks.validate import finalize, validate_dataset

NOUNS = ["parent", "author", "pilot", "farmer", "doctor", "lawyer", "singer", "dancer"]
CORPUS = [f"The {n} is here. The {n}s are here. Our {n}s have left." for n in NOUNS] + [
    "The parent has a cat. The parents have a cat. xyzzy plugh"
]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer(CORPUS)


def good_pairs() -> list[Pair]:
    out = []
    for n in NOUNS:
        out.append(Pair(f"The {n}", f"The {n}s", " is", " are"))
        out.append(Pair(f"The {n}s", f"The {n}", " are", " is"))
    return out


def build(pairs, tok, n_train, n_test, seed=0):
    return finalize(pairs, tok, n_train, n_test, seed=seed, task="t", version="1")


def test_good_pairs_pass(tok):
    ds = build(good_pairs(), tok, 8, 4)
    assert ds.seq_len == 2 and set(ds.dropped) <= {"overlaps_test"}
    validate_dataset(ds, tok)
    test_keys = {frozenset((p.clean_prompt, p.counterfactual_prompt)) for p in ds.test}
    assert not any(
        frozenset((p.clean_prompt, p.counterfactual_prompt)) in test_keys for p in ds.train
    )


def test_multi_token_answer_is_dropped_and_reported(tok):
    assert len(tok(" xyzzyplughfoo", add_special_tokens=False).input_ids) > 1
    bad = [Pair("The parent", "The pilot", " xyzzyplughfoo", " are")]
    ds = build(good_pairs() + bad, tok, 8, 2)
    assert ds.dropped["answer_not_single_token"] == 1
    with pytest.raises(InsufficientPairsError, match="answer_not_single_token=1"):
        build(bad, tok, 1, 0)


def test_unequal_prompt_lengths_are_dropped(tok):
    bad = [Pair("The parent", "Our very many parents", " is", " are")]
    with pytest.raises(InsufficientPairsError, match="prompt_lengths_differ=1"):
        build(bad, tok, 1, 0)


def test_same_answer_and_duplicates_are_dropped(tok):
    pairs = good_pairs()
    same = Pair("The pilot", "The farmers", " is", " is")
    ds = build([*pairs, pairs[0], pairs[1], same], tok, 8, 2)
    assert ds.dropped["duplicate"] == 2 and ds.dropped["same_answer"] == 1


def test_answer_that_merges_with_the_prompt_is_dropped():
    ws = WhitespaceTokenizer()
    # "The parent" + "s" is one word, so "s" would not be the model's next token.
    bad = Pair("The parent", "The pilot", "s", " is")
    with pytest.raises(InsufficientPairsError, match="answer_splits_in_context=1"):
        build([bad], ws, 1, 0)


def test_most_common_length_wins(tok):
    longer = [Pair(f"Our own {n}s", f"Our own {n}", " have", " has") for n in NOUNS[:3]]
    assert len(tok("Our own parents").input_ids) > 2
    ds = build(good_pairs() + longer, tok, 10, 2)
    assert ds.seq_len == 2 and ds.dropped["off_common_length"] == 3
    lengths = {len(tok(p.clean_prompt).input_ids) for p in [*ds.train, *ds.test]}
    assert lengths == {2}


def test_too_few_pairs_raise_with_counts_per_reason(tok):
    pairs = [*good_pairs(), Pair("The parent", "The pilot", " xyzzyplughfoo", " are")]
    with pytest.raises(InsufficientPairsError) as err:
        build(pairs, tok, 300, 40)
    msg = str(err.value)
    assert "asked for 300 / 40" in msg and "answer_not_single_token=1" in msg
    assert "from 17 candidates" in msg


def test_negative_counts_raise(tok):
    with pytest.raises(ValueError, match="must be >= 0"):
        build(good_pairs(), tok, -1, 2)


def test_validate_dataset_reports_broken_invariants(tok):
    ds = build(good_pairs(), tok, 8, 2)
    ds.train.append(ds.test[0])
    ds.train.append(Pair("The parent", "The pilot", " xyzzyplughfoo", " are"))
    with pytest.raises(ValueError, match="answer_not_single_token") as err:
        validate_dataset(ds, tok)
    assert "also a test pair" in str(err.value)


def test_split_at_finds_the_first_unknown_token():
    ws = WhitespaceTokenizer()  # digits one by one, like SmolLM2 / Gemma
    text = "12 + 34 = 46"
    assert split_at(ws, text, target=text.index("46")) == ("12 + 34 =", " 4")
    chunky = tiny_tokenizer(["from 1732 to 1745 and 1745 1745 1745 12 + 34 = 46 46 46"])
    text = "to the year 1745"
    prompt, answer = split_at(chunky, text, target=len("to the year 17"))
    assert prompt + answer == text[: len(prompt + answer)]
    assert len(chunky(answer, add_special_tokens=False).input_ids) == 1
    assert len(prompt) <= len("to the year 17") < len(prompt + answer)
