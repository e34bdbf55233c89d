"""The task registry: ``register``, ``get_task``, ``list_tasks``.

A task is declared once, in its family's module, as a ``Task``: a name, a one-line description,
a revision, the declarative data its prompts come from (templates, word lists) and a generator
of candidate pairs. Its ``version`` is ``"<revision>.<hash of the data>"``: editing a word list
or template changes it automatically; a change to a generator's logic must bump the revision.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import random
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tasks.dataset import ContrastiveDataset, Pair
from tasks.validate import finalize

log = logging.getLogger(__name__)

# generate(tokenizer, rng, n) -> about n candidate pairs (distinct where the space allows).
Generator = Callable[[Any, random.Random, int], list[Pair]]

# Candidates generated: max(MIN_CANDIDATES, OVERSAMPLE * (n_train + n_test)). Up to 400 pairs the
# count is fixed, so the test split (drawn first) is the same whatever n_train is.
OVERSAMPLE = 6
MIN_CANDIDATES = 2400


class UnknownTaskError(ValueError):
    pass


class DuplicateTaskError(ValueError):
    pass


def fingerprint(data: Any) -> str:
    """A short stable hash of JSON-serializable data."""
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Task:
    """A registered task family member; ``build`` makes its seeded ``ContrastiveDataset``."""

    name: str
    description: str
    revision: int
    data: dict[str, Any]
    generate: Generator = field(repr=False)
    balance_key: Callable[[Pair], str] | None = field(default=None, repr=False)

    @property
    def version(self) -> str:
        return f"{self.revision}.{fingerprint(self.data)}"

    def candidates(self, tokenizer: Any, seed: int, n: int) -> list[Pair]:
        """About ``n`` seeded candidate pairs, before validation."""
        return self.generate(tokenizer, random.Random(f"{self.name}/{seed}"), n)

    def build(
        self, tokenizer: Any, n_train: int = 300, n_test: int = 40, seed: int = 0
    ) -> ContrastiveDataset:
        """Validated train/test pairs under ``tokenizer`` (see ``tasks.validate``)."""
        n = max(MIN_CANDIDATES, OVERSAMPLE * (n_train + n_test))
        return finalize(
            self.candidates(tokenizer, seed, n),
            tokenizer,
            n_train=n_train,
            n_test=n_test,
            seed=seed,
            task=self.name,
            version=self.version,
            balance_key=self.balance_key,
        )

    def corpus(self, n: int = 400, seed: int = 0) -> list[str]:
        """Lines of this task's text (prompts followed by answers), e.g. to train a tiny
        tokenizer in tests; uses a whitespace tokenizer stand-in."""
        lines = []
        for p in self.generate(WhitespaceTokenizer(), random.Random(f"corpus/{seed}"), n):
            lines.append(p.clean_prompt + p.clean_answer)
            lines.append(p.counterfactual_prompt + p.counterfactual_answer)
        return lines


class WhitespaceTokenizer:
    """A throwaway tokenizer (one token per whitespace-led word, digits one by one)."""

    name_or_path = "whitespace"

    def __call__(self, text: str | list[str], add_special_tokens: bool = True) -> dict:
        def ids(s: str) -> list[int]:
            return [zlib.crc32(t.encode()) for t in re.findall(r" ?[^\s\d]+| ?\d|\s", s)]

        if isinstance(text, str):
            return {"input_ids": ids(text)}
        return {"input_ids": [ids(t) for t in text]}


_REGISTRY: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add a task; a name registered twice raises ``DuplicateTaskError``."""
    if task.name in _REGISTRY:
        raise DuplicateTaskError(f"task {task.name!r} is already registered")
    _REGISTRY[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The registered task called ``name``; unknown names raise naming close matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownTaskError(
            f"unknown task {name!r}.{hint} Registered tasks: {', '.join(sorted(_REGISTRY))}"
        ) from None


def list_tasks() -> list[Task]:
    """All registered tasks, sorted by name."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]
