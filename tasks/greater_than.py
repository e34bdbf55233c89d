"""Greater-than, after Hanna et al. (2023).

"The war lasted from the year 1732 to the year 17" -> an end year after 1732. The answer is
the first token of the end year still to be predicted (found by tokenizing; see
``tasks.numbers``): the tens digit "4" under digit-splitting tokenizers (SmolLM2, Gemma), a
two-digit chunk like "45" under GPT-2's. The clean end year lies in the decade after the start
year's (1732 -> 174x). The counterfactual prompt moves the start year at least two decades
earlier (1732 -> 1712) and its answer is again the next decade (172x): a year *below* 1732,
which is wrong for the clean prompt, while the clean answer is still possible but further
away for the counterfactual one. Templates and nouns were written for this project.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from tasks.dataset import Pair
from tasks.numbers import split_at
from tasks.registry import Task, register

log = logging.getLogger(__name__)

TEMPLATES = (
    "The {noun} lasted from the year {start} to the year {end}",
    "The {noun} started in the year {start} and ended in the year {end}",
    "The {noun} went on from the year {start} until the year {end}",
)

NOUNS = (
    "war", "expedition", "siege", "occupation", "reign", "dynasty", "conflict", "drought",
    "famine", "trial", "voyage", "pilgrimage", "campaign", "rebellion", "strike", "boycott",
    "blockade", "embargo", "crisis", "truce", "alliance", "treaty", "plague", "revolution",
)  # fmt: skip

CENTURIES = tuple(range(11, 20))  # the years' first two digits


def _side(tokenizer: Any, template: str, noun: str, century: int, start: int, end: int):
    """(prompt, answer) for one side, cut before the end year's tens digit."""
    head = template.format(noun=noun, start=f"{century}{start:02d}", end="")
    text = f"{head}{century}{end:02d}"
    return split_at(tokenizer, text, target=len(head) + 2)


def gen_greater_than(tokenizer: Any, rng: random.Random, n: int) -> list[Pair]:
    out: dict[tuple[str, str], Pair] = {}
    cache: dict[tuple, tuple[str, str] | None] = {}
    tries = 0
    while len(out) < n and tries < 20 * n:
        tries += 1
        template, noun, century = rng.choice(TEMPLATES), rng.choice(NOUNS), rng.choice(CENTURIES)
        tens = rng.randint(2, 8)  # clean start decade; the clean answer decade is tens + 1
        cf_tens = rng.randint(0, tens - 2)  # counterfactual answer decade cf_tens + 1 < tens
        years = (
            (10 * tens + rng.randrange(10), 10 * (tens + 1) + rng.randrange(10)),
            (10 * cf_tens + rng.randrange(10), 10 * (cf_tens + 1) + rng.randrange(10)),
        )
        if years[1][0] == 0:  # "..00" reads as a century start; avoid it
            continue
        sides = []
        for start, end in years:
            key = (template, noun, century, start, end)
            if key not in cache:
                cache[key] = _side(tokenizer, template, noun, century, start, end)
            sides.append(cache[key])
        if None in sides:
            continue
        (clean_prompt, clean_answer), (cf_prompt, cf_answer) = sides
        pair = Pair(clean_prompt, cf_prompt, clean_answer, cf_answer)
        out.setdefault((clean_prompt, cf_prompt), pair)
    return list(out.values())


register(
    Task(
        name="greater_than",
        description='year comparison: "...from the year 1732 to the year 17" -> a year after 1732'
        " vs one before",
        revision=1,
        data={"templates": TEMPLATES, "nouns": NOUNS, "centuries": CENTURIES},
        generate=gen_greater_than,
    )
)
