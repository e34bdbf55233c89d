"""Where a number's answer token starts, found by tokenizing (never by tokenizer name).

Tokenizers differ on numbers: SmolLM2 and Gemma split them into single digits (``" 46"`` is
``" "``, ``"4"``, ``"6"``), GPT-2 keeps chunks (``" 46"`` is one token, ``"1745"`` is
``"17"``, ``"45"``). ``split_at`` cuts a text just before the token that covers a given
character, so the prompt ends where the model must first predict something unknown (the tens
digit of a sum or of an end year) and the answer is that token.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def split_at(tokenizer: Any, text: str, target: int, window: int = 12) -> tuple[str, str] | None:
    """``(prompt, answer)`` with ``prompt + answer`` a prefix of ``text``, where ``answer`` is
    the single token that ``text``'s own tokenization has at character ``target``, and
    ``prompt`` tokenizes as the tokens before it. None if no such cut exists."""
    full = _ids(tokenizer, text)
    for start in range(target, max(-1, target - window), -1):
        prefix = _ids(tokenizer, text[:start])
        if len(full) <= len(prefix) or full[: len(prefix)] != prefix:
            continue
        token = full[len(prefix)]
        for end in range(target + 1, min(len(text), target + window) + 1):
            got = _ids(tokenizer, text[:end])
            if got == [*prefix, token]:
                answer = text[start:end]
                if _ids(tokenizer, answer) == [token]:
                    return text[:start], answer
                break
    return None
