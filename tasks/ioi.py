"""Indirect object identification (IOI), after Wang et al. (2022).

"When Mary and John went to the store, John gave a drink to" -> " Mary": two names are
introduced, one (the subject) is repeated, and the answer is the other one (the indirect
object). The counterfactual repeats the other name instead — "..., Mary gave a drink to" ->
" John" — so the two prompts differ in one token and the answers swap. Both name orders
(ABBA and BABA) occur. Templates, names, places and objects were written for this project.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from tasks.dataset import Pair
from tasks.registry import Task, register

log = logging.getLogger(__name__)

# {A} and {B} are introduced in this order; {S} is the repeated name (the subject).
TEMPLATES = (
    "When {A} and {B} went to the {place}, {S} gave a {object} to",
    "When {A} and {B} got a {object} at the {place}, {S} decided to give it to",
    "Then, {A} and {B} went to the {place}. {S} gave a {object} to",
    "While {A} and {B} were working at the {place}, {S} gave a {object} to",
    "After {A} and {B} went to the {place}, {S} handed a {object} to",
)

NAMES = (
    "Mary", "John", "Alice", "Bob", "James", "Sarah", "Michael", "Emma", "David", "Anna",
    "Robert", "Laura", "Daniel", "Kate", "Thomas", "Lisa", "Paul", "Rachel", "Mark", "Susan",
    "Peter", "Karen", "Steven", "Helen", "Kevin", "Linda", "Brian", "Jessica", "Jason", "Amy",
    "Eric", "Julia", "Adam", "Grace", "Ryan", "Emily", "Scott", "Sophie", "Tom", "Jane",
    "Andrew", "Claire", "Richard", "Kelly", "Frank", "Alex", "George", "Anne", "Henry", "Lucy",
)  # fmt: skip

PLACES = (
    "store", "park", "school", "hospital", "office", "garden", "restaurant", "station",
    "library", "beach", "house", "museum", "market",
)  # fmt: skip

OBJECTS = (
    "drink", "ring", "book", "bone", "computer", "necklace", "snack", "letter", "gift", "ball",
    "flower", "key", "hat", "pen", "cake", "card",
)  # fmt: skip


def gen_ioi(tokenizer: Any, rng: random.Random, n: int) -> list[Pair]:
    out: dict[tuple[str, str], Pair] = {}
    tries = 0
    while len(out) < n and tries < 20 * n:
        tries += 1
        template = rng.choice(TEMPLATES)
        io, s = rng.sample(NAMES, 2)
        first, second = (io, s) if rng.random() < 0.5 else (s, io)  # ABBA or BABA
        fill = {"A": first, "B": second, "place": rng.choice(PLACES), "object": rng.choice(OBJECTS)}
        pair = Pair(
            clean_prompt=template.format(S=s, **fill),
            counterfactual_prompt=template.format(S=io, **fill),
            clean_answer=" " + io,
            counterfactual_answer=" " + s,
        )
        out.setdefault((pair.clean_prompt, pair.counterfactual_prompt), pair)
    return list(out.values())


register(
    Task(
        name="ioi",
        description='indirect object: "When Mary and John went to the store, John gave a drink to"'
        ' -> " Mary"',
        revision=1,
        data={"templates": TEMPLATES, "names": NAMES, "places": PLACES, "objects": OBJECTS},
        generate=gen_ioi,
    )
)
