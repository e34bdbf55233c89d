"""Pairs from Marks-style JSONL files (``clean_prefix``, ``patch_prefix``, ``clean_answer``,
``patch_answer``; other keys are ignored), validated exactly like a registered task's.

A malformed line (bad JSON, not an object, a missing key, a non-string value) raises
``PairFileError`` naming the file and line number; blank lines are skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tasks.dataset import MARKS_FIELDS, ContrastiveDataset, Pair
from tasks.validate import finalize

log = logging.getLogger(__name__)


class PairFileError(ValueError):
    """A malformed line in a pair file; the message names the file and line number."""


def read_pairs(path: str | Path) -> list[Pair]:
    """All pairs of a Marks-style JSONL file, in file order (no token-level validation)."""
    path = Path(path)
    pairs = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise PairFileError(f"{where}: invalid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise PairFileError(f"{where}: expected a JSON object, got {type(record).__name__}")
            missing = [k for k in MARKS_FIELDS if k not in record]
            if missing:
                raise PairFileError(
                    f"{where}: missing key(s) {', '.join(missing)}; "
                    f"each line needs {', '.join(MARKS_FIELDS)}"
                )
            for key in MARKS_FIELDS:
                if not isinstance(record[key], str):
                    raise PairFileError(
                        f"{where}: {key} must be a string, got {type(record[key]).__name__} "
                        f"({record[key]!r})"
                    )
            pairs.append(Pair(*(record[k] for k in MARKS_FIELDS)))
    return pairs


def write_pairs(path: str | Path, pairs: Iterable[Pair]) -> None:
    """Write pairs as Marks-style JSONL, one object per line."""
    with open(path, "w", encoding="utf-8") as f:
        for pair in pairs:
            f.write(json.dumps(pair.to_marks()) + "\n")


def load_pairs(
    path: str | Path,
    tokenizer: Any,
    n_train: int = 300,
    n_test: int = 40,
    seed: int = 0,
    task: str | None = None,
) -> ContrastiveDataset:
    """A validated ``ContrastiveDataset`` from a Marks-style JSONL file. Its task name is
    ``task`` or the file's stem; its version is ``file.<sha256 of the file, 8 hex>``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pair file {path} does not exist")
    pairs = read_pairs(path)
    if not pairs:
        raise PairFileError(f"{path}: holds no pairs")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    return finalize(
        pairs,
        tokenizer,
        n_train=n_train,
        n_test=n_test,
        seed=seed,
        task=task or path.stem,
        version=f"file.{digest}",
    )
