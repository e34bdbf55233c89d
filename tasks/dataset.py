"""The data a task produces: ``Pair`` and ``ContrastiveDataset`` (plain data, JSON-friendly).

A ``Pair`` is one contrastive example (see docs/METHOD.md): a clean prompt and a counterfactual
prompt of equal token length, each with a single-token answer. A ``ContrastiveDataset`` holds
the train and test pairs of one task, all sharing one token length, plus the metadata needed to
reproduce and audit it (task, version, seed, tokenizer, seq_len, pairs dropped per reason).

``tasks.encode(ds, tokenizer)`` (:func:`tasks.validate.encode`) gives the harness its token ids,
tokenized exactly as
validation did: prompts with ``tokenizer(prompt).input_ids`` (special tokens as the tokenizer
adds them by default) and answers with ``add_special_tokens=False``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SPLITS = ("train", "test")
PAIR_FIELDS = ("clean_prompt", "counterfactual_prompt", "clean_answer", "counterfactual_answer")
# Marks et al.'s JSONL keys, in the order of PAIR_FIELDS.
MARKS_FIELDS = ("clean_prefix", "patch_prefix", "clean_answer", "patch_answer")


@dataclass(frozen=True)
class Pair:
    """One contrastive example; answers are single tokens, prompts have equal token length."""

    clean_prompt: str
    counterfactual_prompt: str
    clean_answer: str
    counterfactual_answer: str

    def to_marks(self) -> dict[str, str]:
        """This pair as one record of Marks et al.'s JSONL format."""
        return dict(zip(MARKS_FIELDS, self.as_tuple(), strict=True))

    def as_tuple(self) -> tuple[str, str, str, str]:
        return (
            self.clean_prompt,
            self.counterfactual_prompt,
            self.clean_answer,
            self.counterfactual_answer,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pair:
        missing = [k for k in PAIR_FIELDS if k not in data]
        if missing:
            raise ValueError(f"pair is missing {', '.join(missing)}: {data!r}")
        bad = [k for k in PAIR_FIELDS if not isinstance(data[k], str)]
        if bad:
            raise ValueError(f"pair fields must be strings, got non-strings in {bad}: {data!r}")
        return cls(*(data[k] for k in PAIR_FIELDS))


@dataclass
class ContrastiveDataset:
    """Train and test pairs of one task, all of one token length ``seq_len``."""

    task: str
    version: str
    seed: int
    tokenizer: str
    seq_len: int
    train: list[Pair]
    test: list[Pair]
    dropped: dict[str, int] = field(default_factory=dict)
    n_candidates: int = 0

    def split(self, name: str) -> list[Pair]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; valid: {', '.join(SPLITS)}")
        return self.train if name == "train" else self.test

    # -- serialization ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "task": self.task,
            "version": self.version,
            "seed": self.seed,
            "tokenizer": self.tokenizer,
            "seq_len": self.seq_len,
            "dropped": dict(self.dropped),
            "n_candidates": self.n_candidates,
            "train": [asdict(p) for p in self.train],
            "test": [asdict(p) for p in self.test],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContrastiveDataset:
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"unsupported dataset format {data.get('format')!r}; expected {FORMAT_VERSION}"
            )
        required = ("task", "version", "seed", "tokenizer", "seq_len", "train", "test")
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"dataset dict is missing {', '.join(missing)}")
        return cls(
            task=data["task"],
            version=data["version"],
            seed=int(data["seed"]),
            tokenizer=data["tokenizer"],
            seq_len=int(data["seq_len"]),
            train=[Pair.from_dict(p) for p in data["train"]],
            test=[Pair.from_dict(p) for p in data["test"]],
            dropped={k: int(v) for k, v in data.get("dropped", {}).items()},
            n_candidates=int(data.get("n_candidates", 0)),
        )

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_json(cls, path: str | Path) -> ContrastiveDataset:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_jsonl(self, path: str | Path) -> None:
        """Write all pairs (train, then test) as Marks-style JSONL (see ``tasks.load_pairs``)."""
        with open(path, "w", encoding="utf-8") as f:
            for pair in [*self.train, *self.test]:
                f.write(json.dumps(pair.to_marks()) + "\n")
