"""Subject-verb agreement (SVA), four tasks after Marks et al. (2024) / Finlayson et al. (2021).

Each prompt ends just before a verb that must agree in number with one noun; the answer is
the agreeing form of a verb pair (is/are, has/have, does/do, was/were) and the counterfactual
answer the other form. The counterfactual prompt flips that noun's number, nothing else.

- ``sva_simple``: "The parents" -> " are" / "The parent" -> " is".
- ``sva_within_rc``: "The athlete that the managers" -> " are" (agrees with the embedded noun).
- ``sva_across_rc``: "The athlete that the managers like" -> " is" (agrees with the head noun).
- ``sva_across_pp``: "The secretaries near the cars" -> " are" (agrees with the head noun).

The agreeing noun is singular in half the pairs and plural in the other half (both splits are
balanced). Word lists were written for this project.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from tasks.dataset import Pair
from tasks.registry import Task, register

log = logging.getLogger(__name__)

VERBS = (("is", "are"), ("has", "have"), ("does", "do"), ("was", "were"))

# (singular, plural): people, as subjects and as embedded nouns.
PEOPLE = (
    ("author", "authors"), ("pilot", "pilots"), ("surgeon", "surgeons"),
    ("farmer", "farmers"), ("manager", "managers"), ("customer", "customers"),
    ("officer", "officers"), ("teacher", "teachers"), ("senator", "senators"),
    ("athlete", "athletes"), ("dancer", "dancers"), ("guard", "guards"),
    ("doctor", "doctors"), ("lawyer", "lawyers"), ("student", "students"),
    ("parent", "parents"), ("child", "children"), ("woman", "women"), ("man", "men"),
    ("nurse", "nurses"), ("driver", "drivers"), ("writer", "writers"), ("singer", "singers"),
    ("player", "players"), ("painter", "painters"), ("soldier", "soldiers"),
    ("worker", "workers"), ("friend", "friends"), ("neighbor", "neighbors"),
    ("engineer", "engineers"), ("scientist", "scientists"), ("professor", "professors"),
    ("secretary", "secretaries"), ("baker", "bakers"), ("chef", "chefs"), ("judge", "judges"),
    ("minister", "ministers"), ("architect", "architects"), ("consultant", "consultants"),
    ("clerk", "clerks"), ("king", "kings"), ("queen", "queens"), ("actor", "actors"),
    ("artist", "artists"), ("banker", "bankers"), ("reporter", "reporters"),
    ("editor", "editors"), ("director", "directors"), ("lord", "lords"),
    ("sister", "sisters"), ("brother", "brothers"), ("boy", "boys"), ("girl", "girls"),
)  # fmt: skip

# (singular, plural): things and places, as objects of a preposition.
THINGS = (
    ("car", "cars"), ("house", "houses"), ("tree", "trees"), ("desk", "desks"),
    ("door", "doors"), ("window", "windows"), ("table", "tables"), ("building", "buildings"),
    ("bench", "benches"), ("fence", "fences"), ("tower", "towers"), ("truck", "trucks"),
    ("church", "churches"), ("school", "schools"), ("bridge", "bridges"), ("lake", "lakes"),
    ("river", "rivers"), ("garden", "gardens"), ("shop", "shops"), ("wall", "walls"),
    ("machine", "machines"), ("computer", "computers"), ("horse", "horses"), ("boat", "boats"),
)  # fmt: skip

PREPOSITIONS = ("near", "behind", "beside", "next to", "in front of", "across from")

# (agrees with a singular subject, agrees with a plural subject): transitive verbs.
TRANSITIVE = (
    ("likes", "like"), ("loves", "love"), ("hates", "hate"), ("admires", "admire"),
    ("knows", "know"), ("sees", "see"), ("helps", "help"), ("trusts", "trust"),
    ("hires", "hire"), ("meets", "meet"), ("calls", "call"), ("visits", "visit"),
)  # fmt: skip

DETERMINERS = ("The", "My", "Our", "Your", "Their", "His", "Her")

_SG, _PL = 0, 1


def number_of(pair: Pair) -> str:
    """'singular' or 'plural': the number the clean answer agrees with (the balance key)."""
    plural_forms = {f" {pl}" for _, pl in VERBS}
    return "plural" if pair.clean_answer in plural_forms else "singular"


def _pair(prompts: tuple[str, str], number: int, rng: random.Random) -> Pair:
    """prompts[k] has the agreeing noun in number k; the clean side has ``number``."""
    verb = rng.choice(VERBS)
    return Pair(
        clean_prompt=prompts[number],
        counterfactual_prompt=prompts[1 - number],
        clean_answer=" " + verb[number],
        counterfactual_answer=" " + verb[1 - number],
    )


def _sample(rng: random.Random, n: int, draw) -> list[Pair]:
    """Up to ``n`` distinct pairs from ``draw(rng, number)``, numbers alternating."""
    out: dict[tuple[str, str], Pair] = {}
    tries = 0
    while len(out) < n and tries < 20 * n:
        pair = draw(rng, tries % 2)
        out.setdefault((pair.clean_prompt, pair.counterfactual_prompt), pair)
        tries += 1
    return list(out.values())


def gen_simple(tokenizer: Any, rng: random.Random, n: int) -> list[Pair]:
    def draw(rng: random.Random, number: int) -> Pair:
        det, noun = rng.choice(DETERMINERS), rng.choice(PEOPLE)
        return _pair((f"{det} {noun[_SG]}", f"{det} {noun[_PL]}"), number, rng)

    return _sample(rng, n, draw)


def gen_within_rc(tokenizer: Any, rng: random.Random, n: int) -> list[Pair]:
    def draw(rng: random.Random, number: int) -> Pair:
        head, emb = rng.sample(PEOPLE, 2)
        head_form = head[rng.randrange(2)]
        prompts = (f"The {head_form} that the {emb[_SG]}", f"The {head_form} that the {emb[_PL]}")
        return _pair(prompts, number, rng)

    return _sample(rng, n, draw)


def gen_across_rc(tokenizer: Any, rng: random.Random, n: int) -> list[Pair]:
    def draw(rng: random.Random, number: int) -> Pair:
        head, emb = rng.sample(PEOPLE, 2)
        k = rng.randrange(2)
        tail = f"that the {emb[k]} {rng.choice(TRANSITIVE)[k]}"
        return _pair((f"The {head[_SG]} {tail}", f"The {head[_PL]} {tail}"), number, rng)

    return _sample(rng, n, draw)


def gen_across_pp(tokenizer: Any, rng: random.Random, n: int) -> list[Pair]:
    def draw(rng: random.Random, number: int) -> Pair:
        head, thing = rng.choice(PEOPLE), rng.choice(THINGS)
        tail = f"{rng.choice(PREPOSITIONS)} the {thing[rng.randrange(2)]}"
        return _pair((f"The {head[_SG]} {tail}", f"The {head[_PL]} {tail}"), number, rng)

    return _sample(rng, n, draw)


_DATA = {"verbs": VERBS, "people": PEOPLE}

for _name, _gen, _desc, _extra in (
    (
        "sva_simple",
        gen_simple,
        'subject-verb agreement: "The parents" -> " are" vs " is"',
        {"determiners": DETERMINERS},
    ),
    (
        "sva_within_rc",
        gen_within_rc,
        'agreement with the embedded noun: "The athlete that the managers" -> " are"',
        {},
    ),
    (
        "sva_across_rc",
        gen_across_rc,
        'agreement across a relative clause: "The athlete that the managers like" -> " is"',
        {"transitive": TRANSITIVE},
    ),
    (
        "sva_across_pp",
        gen_across_pp,
        'agreement across a PP: "The secretaries near the cars" -> " are"',
        {"things": THINGS, "prepositions": PREPOSITIONS},
    ),
):
    register(
        Task(
            name=_name,
            description=_desc,
            revision=1,
            data={**_DATA, **_extra},
            generate=_gen,
            balance_key=number_of,
        )
    )
