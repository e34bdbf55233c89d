"""Validation of contrastive pairs, in one place, for every task and for loaded files.

``finalize`` turns candidate pairs into a ``ContrastiveDataset``. A pair is dropped, and
counted under its reason, when:

- ``duplicate``: the same pair (both prompts and both answers) already occurred; pairs that
  share prompts but differ in an answer (is/are and has/have on one prefix) are distinct;
- ``identical_prompts``: its clean and counterfactual prompts are the same text (no contrast:
  the metric cannot tell clean from counterfactual, and faithfulness is undefined);
- ``answer_not_single_token``: an answer is not exactly one token
  (``tokenizer(answer, add_special_tokens=False).input_ids``);
- ``answer_splits_in_context``: ``tokenizer(prompt + answer)`` is not the prompt's tokens
  followed by the answer token (the answer would not be the model's next token);
- ``prompt_lengths_differ``: its two prompts have different token lengths
  (``tokenizer(prompt).input_ids``, as the harness tokenizes);
- ``same_answer``: its clean and counterfactual answers are the same token;
- ``off_common_length``: its prompts are not of the most common length among valid pairs
  (a dataset's pairs share one length so that positions align);
- ``overlaps_test``: it would go to train but a test pair has the same two prompts (in either
  order; a pair and its mirror image count as the same example).

The test split is drawn first from a seeded shuffle, so it does not depend on ``n_train``.
An optional balance key (e.g. the subject's number) interleaves groups so both splits are
balanced. If fewer valid pairs remain than requested, ``InsufficientPairsError`` says how many
were dropped for each reason and how many are available.

``group_shared_prompts=True`` (pairs read from a file, ``tasks.load_pairs``): every distinct
pair is kept. Pairs that share their two prompts (in either order: answer variants such as
is/are and has/have on one prefix, and mirror images) form a group, and each group goes whole to
one split, so nothing leaks between train and test and nothing is dropped as ``overlaps_test``
unless no set of whole groups makes exactly ``n_test`` pairs. Registered tasks generate each
prompt pair once and keep the per-pair rule above (their committed reference splits).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from tasks.dataset import SPLITS, ContrastiveDataset, Pair

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

REASONS = (
    "duplicate",
    "identical_prompts",
    "answer_not_single_token",
    "answer_splits_in_context",
    "prompt_lengths_differ",
    "same_answer",
    "off_common_length",
    "overlaps_test",
)


class InsufficientPairsError(ValueError):
    """Fewer valid pairs than requested; the message gives the drop counts per reason."""


class Tokenized:
    """Token ids of every string in a set of pairs, tokenized in batches once."""

    def __init__(self, tokenizer: Any, pairs: Sequence[Pair]) -> None:
        prompts = sorted({s for p in pairs for s in (p.clean_prompt, p.counterfactual_prompt)})
        answers = sorted({s for p in pairs for s in (p.clean_answer, p.counterfactual_answer)})
        contexts = sorted(
            {p.clean_prompt + p.clean_answer for p in pairs}
            | {p.counterfactual_prompt + p.counterfactual_answer for p in pairs}
        )
        self._prompt = _batch(tokenizer, prompts, special=True)
        self._answer = _batch(tokenizer, answers, special=False)
        self._context = _batch(tokenizer, contexts, special=True)

    def prompt(self, text: str) -> list[int]:
        return self._prompt[text]

    def answer(self, text: str) -> list[int]:
        return self._answer[text]

    def context(self, prompt: str, answer: str) -> list[int]:
        return self._context[prompt + answer]


def _batch(tokenizer: Any, texts: list[str], special: bool) -> dict[str, list[int]]:
    if not texts:
        return {}
    ids = tokenizer(texts, add_special_tokens=special)["input_ids"]
    return {t: list(i) for t, i in zip(texts, ids, strict=True)}


def tokenize_pairs(pairs: Sequence[Pair], tokenizer: Any) -> Tokenized:
    return Tokenized(tokenizer, pairs)


def check_pair(pair: Pair, toks: Tokenized) -> str | None:
    """The first reason this pair is invalid on its own, or None."""
    sides = (
        (pair.clean_prompt, pair.clean_answer),
        (pair.counterfactual_prompt, pair.counterfactual_answer),
    )
    if pair.clean_prompt == pair.counterfactual_prompt:
        return "identical_prompts"
    if any(len(toks.answer(a)) != 1 for _, a in sides):
        return "answer_not_single_token"
    if any(toks.context(p, a) != toks.prompt(p) + toks.answer(a) for p, a in sides):
        return "answer_splits_in_context"
    if len(toks.prompt(pair.clean_prompt)) != len(toks.prompt(pair.counterfactual_prompt)):
        return "prompt_lengths_differ"
    if toks.answer(pair.clean_answer) == toks.answer(pair.counterfactual_answer):
        return "same_answer"
    return None


def _unordered(pair: Pair) -> frozenset[str]:
    return frozenset((pair.clean_prompt, pair.counterfactual_prompt))


def _interleave(pairs: list, key: Callable[[Any], str] | None) -> list:
    if key is None or not pairs:
        return pairs
    groups: dict[str, list[Pair]] = {}
    for p in pairs:
        groups.setdefault(key(p), []).append(p)
    ordered = [groups[k] for k in sorted(groups)]
    out = []
    for i in range(max(len(g) for g in ordered)):
        out.extend(g[i] for g in ordered if i < len(g))
    return out


def _best_fill(sizes: list[int], n: int) -> list[int]:
    """Indices of items whose sizes sum to the most that fits in ``n`` (exactly ``n`` when
    some subset does), taking earlier items first."""
    chosen, total = [], 0
    for i, size in enumerate(sizes):  # greedy in order: exact in the common case
        if total + size <= n:
            chosen.append(i)
            total += size
    if total == n:
        return chosen
    mask = (1 << (n + 1)) - 1
    reach = [0] * (len(sizes) + 1)  # reach[i]: bit s set if some of sizes[i:] sum to s
    reach[-1] = 1
    for i in range(len(sizes) - 1, -1, -1):
        reach[i] = (reach[i + 1] | (reach[i + 1] << sizes[i])) & mask
    left = reach[0].bit_length() - 1  # the largest reachable sum <= n
    chosen = []
    for i, size in enumerate(sizes):
        if left >= size and (reach[i + 1] >> (left - size)) & 1:
            chosen.append(i)
            left -= size
    return chosen


def _grouped_split(
    pool: list[Pair], n_train: int, n_test: int, key: Callable[[Pair], str] | None
) -> tuple[list[Pair], list[Pair], int]:
    """(train, test, dropped): whole groups of prompt-sharing pairs to one split each. When no
    set of whole groups makes exactly ``n_test``, part of the smallest other group fills the
    test split and its other members (sharing prompts with test pairs) are dropped."""
    groups: dict[frozenset[str], list[Pair]] = {}
    for p in pool:
        groups.setdefault(_unordered(p), []).append(p)
    ordered = _interleave(list(groups.values()), (lambda g: key(g[0])) if key else None)
    picked = set(_best_fill([len(g) for g in ordered], n_test))
    test = [p for i, g in enumerate(ordered) if i in picked for p in g]
    rest = [g for i, g in enumerate(ordered) if i not in picked]
    dropped = 0
    if len(test) < n_test and rest:
        part = min(rest, key=len)
        rest.remove(part)
        gap = n_test - len(test)
        test += part[:gap]
        dropped = len(part) - gap
    train = [p for g in rest for p in g][:n_train]
    return train, test, dropped


def _describe(dropped: dict[str, int]) -> str:
    parts = [f"{r}={dropped[r]}" for r in REASONS if dropped.get(r)]
    return ", ".join(parts) if parts else "none"


def finalize(
    candidates: Iterable[Pair],
    tokenizer: Any,
    n_train: int,
    n_test: int,
    seed: int,
    task: str,
    version: str,
    balance_key: Callable[[Pair], str] | None = None,
    group_shared_prompts: bool = False,
) -> ContrastiveDataset:
    """Validate candidate pairs and split them into a ``ContrastiveDataset``."""
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}={value!r}: must be >= 0 and an integer")
    candidates = list(candidates)
    dropped: Counter[str] = Counter()
    unique: list[Pair] = []
    seen: set[tuple[str, str, str, str]] = set()
    for pair in candidates:
        key = pair.as_tuple()  # a duplicate only when prompts and answers are all equal
        if key in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(key)
        unique.append(pair)

    toks = tokenize_pairs(unique, tokenizer)
    valid: list[Pair] = []
    for pair in unique:
        reason = check_pair(pair, toks)
        if reason is None:
            valid.append(pair)
        else:
            dropped[reason] += 1

    lengths = Counter(len(toks.prompt(p.clean_prompt)) for p in valid)
    seq_len = min(lengths, key=lambda n: (-lengths[n], n)) if lengths else 0
    dropped["off_common_length"] += sum(c for n, c in lengths.items() if n != seq_len)
    pool = [p for p in valid if len(toks.prompt(p.clean_prompt)) == seq_len]

    rng = random.Random(f"split/{task}/{seed}")
    rng.shuffle(pool)
    if group_shared_prompts:
        train, test, overlaps = _grouped_split(pool, n_train, n_test, balance_key)
        dropped["overlaps_test"] += overlaps
        available = len(pool) - overlaps
    else:
        test = _interleave(pool, balance_key)[:n_test]
        test_keys = {_unordered(p) for p in test}
        rest = [p for p in pool if _unordered(p) not in test_keys]
        dropped["overlaps_test"] += len(pool) - len(test) - len(rest)
        train = _interleave(rest, balance_key)[:n_train]
        available = len(test) + len(rest)
    counts = {r: dropped[r] for r in REASONS if dropped[r]}

    if len(test) < n_test or len(train) < n_train:
        raise InsufficientPairsError(
            f"task {task!r}: too few valid pairs under tokenizer "
            f"{getattr(tokenizer, 'name_or_path', '?')!r}: got {len(train)} train / {len(test)} "
            f"test, asked for {n_train} / {n_test}, from {len(candidates)} candidates "
            f"(common prompt length {seq_len} tokens; {available} valid pairs available for "
            f"both splits, so n_train + n_test may be at most {available}). "
            f"Dropped: {_describe(counts)}"
        )
    log.info(
        "%s: %d train / %d test pairs of %d tokens from %d candidates; dropped: %s",
        task, len(train), len(test), seq_len, len(candidates), _describe(counts),
    )  # fmt: skip
    return ContrastiveDataset(
        task=task,
        version=version,
        seed=seed,
        tokenizer=str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__),
        seq_len=seq_len,
        train=train,
        test=test,
        dropped=counts,
        n_candidates=len(candidates),
    )


def validate_dataset(ds: ContrastiveDataset, tokenizer: Any) -> None:
    """Raise ``ValueError`` listing every broken invariant of an existing dataset."""
    problems = []
    toks = tokenize_pairs([*ds.train, *ds.test], tokenizer)
    seen: set[tuple[str, str, str, str]] = set()
    for split in ("train", "test"):
        for i, pair in enumerate(ds.split(split)):
            reason = check_pair(pair, toks)
            if reason is None and len(toks.prompt(pair.clean_prompt)) != ds.seq_len:
                reason = f"prompt length is not the dataset's seq_len {ds.seq_len}"
            key = pair.as_tuple()
            if reason is None and key in seen:
                reason = "duplicate"
            seen.add(key)
            if reason is not None:
                problems.append(f"{split}[{i}]: {reason}")
    test_keys = {_unordered(p) for p in ds.test}
    for i, pair in enumerate(ds.train):
        if _unordered(pair) in test_keys:
            problems.append(f"train[{i}]: its prompts are also a test pair's")
    if problems:
        shown = "; ".join(problems[:10]) + (" ..." if len(problems) > 10 else "")
        raise ValueError(f"dataset {ds.task!r} is invalid ({len(problems)} problems): {shown}")


def encode(ds: ContrastiveDataset, tokenizer: Any) -> dict[str, dict[str, torch.Tensor]]:
    """The harness's token ids per split of ``ds``: ``clean_ids``/``cf_ids`` [n, seq_len],
    ``clean_answer_id``/
    ``cf_answer_id`` [n] (LongTensors). Raises if the tokenizer breaks an invariant
    (a multi-token answer, a prompt not of length ``seq_len``), e.g. a different tokenizer
    from the one the dataset was built with."""
    import torch

    out: dict[str, dict[str, torch.Tensor]] = {}
    for name in SPLITS:
        pairs = ds.split(name)
        toks = tokenize_pairs(pairs, tokenizer)
        rows: dict[str, list] = {"clean_ids": [], "cf_ids": [], "clean_a": [], "cf_a": []}
        for i, pair in enumerate(pairs):
            reason = check_pair(pair, toks)
            if reason is None and len(toks.prompt(pair.clean_prompt)) != ds.seq_len:
                reason = "prompt_length_differs_from_dataset"
            if reason is not None:
                raise ValueError(
                    f"{ds.task} {name} pair {i} fails validation under tokenizer "
                    f"{getattr(tokenizer, 'name_or_path', '?')!r} ({reason}): {pair}; "
                    f"was the dataset built with tokenizer {ds.tokenizer!r}?"
                )
            rows["clean_ids"].append(toks.prompt(pair.clean_prompt))
            rows["cf_ids"].append(toks.prompt(pair.counterfactual_prompt))
            rows["clean_a"].append(toks.answer(pair.clean_answer)[0])
            rows["cf_a"].append(toks.answer(pair.counterfactual_answer)[0])
        seq = (len(pairs), ds.seq_len)
        out[name] = {
            "clean_ids": torch.tensor(rows["clean_ids"], dtype=torch.long).reshape(seq),
            "cf_ids": torch.tensor(rows["cf_ids"], dtype=torch.long).reshape(seq),
            "clean_answer_id": torch.tensor(rows["clean_a"], dtype=torch.long),
            "cf_answer_id": torch.tensor(rows["cf_a"], dtype=torch.long),
        }
    return out
