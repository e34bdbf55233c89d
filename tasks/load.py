"""Pairs from Marks-style JSONL files (``clean_prefix``, ``patch_prefix``, ``clean_answer``,
``patch_answer``; other keys are ignored), validated exactly like a registered task's.

A malformed line (bad JSON, not an object, a missing key, a non-string value) raises
``PairFileError`` naming the file and line number; blank lines are skipped. A file that is
JSON but not JSON lines (one JSON array of pairs, a pretty-printed object, or a sparsebench
dataset written by ``ContrastiveDataset.to_json``) is named as such, with the command that
converts it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tasks.dataset import MARKS_FIELDS, PAIR_FIELDS, ContrastiveDataset, Pair
from tasks.validate import finalize

log = logging.getLogger(__name__)


class PairFileError(ValueError):
    """A malformed line in a pair file; the message names the file and line number."""


def _whole_file_format(path: Path, text: str) -> str | None:
    """What a file that is not JSON lines is, with how to convert it; None if not JSON."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    expected = (
        "--task-file and load_pairs expect JSON lines (JSONL: one object with "
        f"{', '.join(MARKS_FIELDS)} per line)"
    )
    if isinstance(data, list):
        convert = (
            'python -c "import json, sys; [print(json.dumps(r)) for r in '
            f'json.load(open(sys.argv[1]))]" {path} > {path.with_suffix(".jsonl")}'
        )
        return (
            f"{path}: holds one JSON array of {len(data)} items, but {expected}; convert: {convert}"
        )
    if isinstance(data, dict) and {"train", "test"} <= data.keys():
        convert = (
            'python -c "from tasks import ContrastiveDataset as D; '
            f"D.from_json('{path}').to_jsonl('{path.with_suffix('.jsonl')}')\""
        )
        return (
            f"{path}: is a sparsebench dataset JSON (ContrastiveDataset.to_json), but {expected}; "
            f"convert: {convert}"
        )
    if isinstance(data, dict) and "\n" in text.strip():
        return f"{path}: holds one JSON object spread over several lines, but {expected}"
    return None


# a pair file is read whole; a run takes n_train + n_test pairs (hundreds) from it
MAX_PAIR_FILE_BYTES = 64 << 20


def read_pairs(path: str | Path) -> list[Pair]:
    """All pairs of a Marks-style JSONL file, in file order (no token-level validation)."""
    path = Path(path)
    if path.is_dir():
        raise PairFileError(f"{path}: is a directory; give a JSONL file of pairs (one per line)")
    if not path.is_file():
        raise PairFileError(f"{path}: no such file; give a JSONL file of pairs (one per line)")
    if (size := path.stat().st_size) > MAX_PAIR_FILE_BYTES:
        raise PairFileError(
            f"{path}: {size / 2**20:.0f} MiB of pairs, over the {MAX_PAIR_FILE_BYTES >> 20} MiB "
            "a pair file may hold (it is read whole, and a run uses a few hundred pairs); take "
            f"a sample first, e.g. shuf -n 20000 {path} > sample.jsonl"
        )
    pairs = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise PairFileError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None

    def fail(message: str) -> PairFileError:
        return PairFileError(_whole_file_format(path, text) or message)

    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise fail(f"{where}: invalid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise fail(f"{where}: expected a JSON object, got {type(record).__name__}")
        missing = [k for k in MARKS_FIELDS if k not in record]
        if missing:
            hint = ""
            if set(PAIR_FIELDS) <= record.keys():
                hint = (
                    f" (this line uses sparsebench's field names {', '.join(PAIR_FIELDS)}; a pair "
                    "file uses Marks et al.'s, in the same order)"
                )
            raise fail(
                f"{where}: missing key(s) {', '.join(missing)}; "
                f"each line needs {', '.join(MARKS_FIELDS)}{hint}"
            )
        for key in MARKS_FIELDS:
            if not isinstance(record[key], str):
                raise fail(
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
        group_shared_prompts=True,  # keep every distinct pair; prompt-sharing ones split together
    )
