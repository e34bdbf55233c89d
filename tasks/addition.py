"""Two-digit addition: "Calculate: 12 + 34 =" -> the first token of " 46".

Operands are two-digit and sums stay below 100. The answer is the first token of the sum still
to be predicted, found by tokenizing (``tasks.numbers``): the tens digit "4" (after a prompt
ending in a space token) under digit-splitting tokenizers such as SmolLM2's and Gemma's, " 46"
under GPT-2's. The counterfactual changes one operand so that the sum's tens digit, and with
it the answer, changes (12 + 34 -> 12 + 54). Templates were written for this project.
"""

from __future__ import annotations

import logging
import random
import re
from typing import Any

from tasks.dataset import Pair
from tasks.numbers import split_at
from tasks.registry import Task, register

log = logging.getLogger(__name__)

# A short instruction before the sum helps small models: SmolLM2-135M gets ~75% of test pairs
# right with these, ~10% with a bare "{a} + {b} = ".
TEMPLATES = (
    "Calculate: {a} + {b} = {s}",
    "Compute: {a} + {b} = {s}",
    "Math: {a} + {b} = {s}",
)

LOW, HIGH = 10, 89  # operand range (inclusive); sums stay below 100


def _side(tokenizer: Any, template: str, a: int, b: int) -> tuple[str, str] | None:
    head = template.format(a=a, b=b, s="")
    return split_at(tokenizer, f"{head}{a + b}", target=len(head))


def _draw(rng: random.Random) -> tuple[str, tuple[int, int], tuple[int, int]] | None:
    template = rng.choice(TEMPLATES)
    a = rng.randint(LOW, HIGH - LOW)
    b = rng.randint(LOW, 99 - a)
    which = rng.randrange(2)
    other = (b, a)[which]
    choices = [v for v in range(LOW, 100 - other) if (v + other) // 10 != (a + b) // 10]
    if not choices:
        return None
    v = rng.choice(choices)
    cf = (v, b) if which == 0 else (a, v)
    return template, (a, b), cf


def gen_addition(tokenizer: Any, rng: random.Random, n: int) -> list[Pair]:
    out: dict[tuple[str, str], Pair] = {}
    cache: dict[tuple, tuple[str, str] | None] = {}
    tries = 0
    while len(out) < n and tries < 20 * n:
        tries += 1
        drawn = _draw(rng)
        if drawn is None:
            continue
        template, clean, cf = drawn
        sides = []
        for a, b in (clean, cf):
            if (template, a, b) not in cache:
                cache[(template, a, b)] = _side(tokenizer, template, a, b)
            sides.append(cache[(template, a, b)])
        if None in sides:
            continue
        (clean_prompt, clean_answer), (cf_prompt, cf_answer) = sides
        out.setdefault(
            (clean_prompt, cf_prompt), Pair(clean_prompt, cf_prompt, clean_answer, cf_answer)
        )
    return list(out.values())


def operands(prompt: str) -> tuple[int, int] | None:
    """(a, b) of an addition prompt ("Calculate: 12 + 34 =" -> (12, 34)), else None."""
    match = re.search(r"(\d+) \+ (\d+) =", prompt)
    return (int(match.group(1)), int(match.group(2))) if match else None


register(
    Task(
        name="addition",
        description='two-digit addition: "Calculate: 12 + 34 = " -> the first token of "46"',
        revision=1,
        data={"templates": TEMPLATES, "range": (LOW, HIGH)},
        generate=gen_addition,
    )
)
