"""Two-hop capitals: "The state containing the city of Dallas has its capital in" -> " Austin".

The model must recall the state a city is in (Dallas -> Texas) and then that state's capital.
The counterfactual uses a city in another state (with another capital) and its answer is that
state's capital. The table covers all 50 US states: each state's capital and a few of its
other well-known cities. Cities whose name is shared with a notable place in another US state
(Portland, Springfield, Kansas City, Charleston SC, Columbus GA, Aurora, Arlington,
Rochester, Wilmington, Jackson WY, ...) are left out so that every fact is unambiguous; no city
listed is a capital. Answers that are not one token under a tokenizer are dropped by
validation.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from tasks.dataset import Pair
from tasks.registry import Task, register

log = logging.getLogger(__name__)

# state: (capital, (other cities in that state, no capitals, no names shared across states))
STATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "Alabama": ("Montgomery", ("Birmingham", "Mobile", "Tuscaloosa", "Dothan")),
    "Alaska": ("Juneau", ("Anchorage", "Fairbanks", "Sitka", "Nome")),
    "Arizona": (
        "Phoenix",
        ("Tucson", "Flagstaff", "Scottsdale", "Tempe", "Mesa", "Yuma", "Sedona"),
    ),
    "Arkansas": ("Little Rock", ("Fort Smith", "Jonesboro")),
    "California": (
        "Sacramento",
        (
            "Los Angeles",
            "San Francisco",
            "San Diego",
            "San Jose",
            "Oakland",
            "Fresno",
            "Berkeley",
            "Malibu",
            "Bakersfield",
            "Anaheim",
            "Palo Alto",
        ),
    ),
    "Colorado": (
        "Denver",
        ("Boulder", "Colorado Springs", "Pueblo", "Aspen", "Vail", "Fort Collins"),
    ),
    "Connecticut": ("Hartford", ("New Haven", "Bridgeport", "Stamford", "Waterbury", "Danbury")),
    "Delaware": ("Dover", ("Rehoboth Beach",)),
    "Florida": ("Tallahassee", ("Miami", "Orlando", "Tampa", "Fort Lauderdale", "Key West")),
    "Georgia": ("Atlanta", ("Savannah", "Macon", "Valdosta")),
    "Hawaii": ("Honolulu", ("Hilo", "Lahaina", "Pearl City")),
    "Idaho": ("Boise", ("Pocatello", "Nampa")),
    "Illinois": ("Springfield", ("Chicago", "Naperville", "Rockford", "Joliet", "Champaign")),
    "Indiana": ("Indianapolis", ("Fort Wayne", "Evansville", "South Bend", "Gary", "Muncie")),
    "Iowa": ("Des Moines", ("Cedar Rapids", "Dubuque")),
    "Kansas": ("Topeka", ("Wichita", "Overland Park", "Dodge City")),
    "Kentucky": ("Frankfort", ("Louisville", "Paducah", "Owensboro")),
    "Louisiana": ("Baton Rouge", ("New Orleans", "Shreveport", "Lake Charles")),
    "Maine": ("Augusta", ("Bangor", "Bar Harbor", "Biddeford")),
    "Maryland": ("Annapolis", ("Baltimore", "Bethesda")),
    "Massachusetts": ("Boston", ("Worcester", "Lowell", "Fall River", "New Bedford", "Nantucket")),
    "Michigan": ("Lansing", ("Detroit", "Grand Rapids", "Ann Arbor", "Flint", "Kalamazoo")),
    "Minnesota": ("Saint Paul", ("Minneapolis", "Duluth")),
    "Mississippi": ("Jackson", ("Gulfport", "Biloxi", "Hattiesburg", "Tupelo", "Vicksburg")),
    "Missouri": ("Jefferson City", ("St. Louis", "Branson")),
    "Montana": ("Helena", ("Billings", "Missoula", "Bozeman", "Butte", "Great Falls")),
    "Nebraska": ("Lincoln", ("Omaha", "Kearney", "Grand Island")),
    "Nevada": ("Carson City", ("Las Vegas", "Reno")),
    "New Hampshire": ("Concord", ("Nashua", "Keene")),
    "New Jersey": ("Trenton", ("Newark", "Jersey City", "Hoboken", "Atlantic City")),
    "New Mexico": ("Santa Fe", ("Albuquerque", "Las Cruces")),
    "New York": ("Albany", ("Buffalo", "Syracuse", "Yonkers", "Ithaca", "Utica", "Binghamton")),
    "North Carolina": (
        "Raleigh",
        ("Charlotte", "Greensboro", "Asheville", "Durham", "Chapel Hill"),
    ),
    "North Dakota": ("Bismarck", ("Fargo", "Grand Forks", "Minot")),
    "Ohio": ("Columbus", ("Cleveland", "Cincinnati", "Toledo", "Akron", "Dayton", "Youngstown")),
    "Oklahoma": ("Oklahoma City", ("Tulsa", "Lawton")),
    "Oregon": ("Salem", ("Eugene", "Bend", "Corvallis", "Beaverton")),
    "Pennsylvania": ("Harrisburg", ("Philadelphia", "Pittsburgh", "Allentown", "Scranton")),
    "Rhode Island": ("Providence", ("Cranston", "Pawtucket", "Warwick", "Woonsocket")),
    "South Carolina": ("Columbia", ("Myrtle Beach", "Spartanburg", "Rock Hill", "Hilton Head")),
    "South Dakota": ("Pierre", ("Sioux Falls", "Rapid City", "Deadwood", "Brookings")),
    "Tennessee": (
        "Nashville",
        ("Memphis", "Knoxville", "Chattanooga", "Murfreesboro", "Gatlinburg"),
    ),
    "Texas": (
        "Austin",
        (
            "Dallas",
            "Houston",
            "San Antonio",
            "El Paso",
            "Fort Worth",
            "Lubbock",
            "Galveston",
            "Amarillo",
            "Corpus Christi",
            "Laredo",
            "Waco",
            "Plano",
        ),
    ),
    "Utah": ("Salt Lake City", ("Provo", "Ogden", "Moab")),
    "Vermont": ("Montpelier", ("Rutland", "Brattleboro")),
    "Virginia": ("Richmond", ("Norfolk", "Roanoke", "Charlottesville", "Lynchburg", "Chesapeake")),
    "Washington": ("Olympia", ("Seattle", "Spokane", "Tacoma", "Bellingham", "Yakima")),
    "West Virginia": ("Charleston", ("Morgantown", "Wheeling", "Parkersburg")),
    "Wisconsin": (
        "Madison",
        ("Milwaukee", "Green Bay", "Kenosha", "Racine", "Oshkosh", "Eau Claire"),
    ),
    "Wyoming": ("Cheyenne", ("Casper", "Laramie")),
}

# Worded so the model's next token is the capital. (SmolLM2-135M gets 82% of test pairs right
# with this wording; 62% with "The capital of the state containing {city} is".)
TEMPLATES = ("The state containing the city of {city} has its capital in",)

# (city, its state) for every listed city.
CITIES = tuple((city, state) for state, (_, cities) in STATES.items() for city in cities)


def _n_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def gen_capitals(tokenizer: Any, rng: random.Random, n: int) -> list[Pair]:
    """Pairs of cities in different states whose capitals are single tokens, the two cities of
    a pair being of equal token length (so few candidates are wasted); all such pairs when
    there are at most ``3 * n``, else a sample of ``n``."""
    single = {s for s, (cap, _) in STATES.items() if _n_tokens(tokenizer, " " + cap) == 1}
    by_length: dict[int, list[tuple[str, str]]] = {}
    for city, state in CITIES:
        if state in single:
            by_length.setdefault(_n_tokens(tokenizer, " " + city), []).append((city, state))
    space = [
        (template, a, b)
        for template in TEMPLATES
        for group in by_length.values()
        for a in group
        for b in group
        if a[1] != b[1]
    ]
    rng.shuffle(space)
    if len(space) > 3 * n:
        space = space[:n]
    return [
        Pair(
            clean_prompt=template.format(city=city),
            counterfactual_prompt=template.format(city=cf_city),
            clean_answer=" " + STATES[state][0],
            counterfactual_answer=" " + STATES[cf_state][0],
        )
        for template, (city, state), (cf_city, cf_state) in space
    ]


def state_of(prompt: str) -> str | None:
    """The intermediate state of a capitals prompt (the hop between city and capital), as the
    model would write it next (" Texas"); None for a prompt not of this task."""
    for template in TEMPLATES:
        head, _, tail = template.partition("{city}")
        if prompt.startswith(head) and prompt.endswith(tail):
            city = prompt[len(head) : len(prompt) - len(tail)]
            state = dict(CITIES).get(city)
            return None if state is None else " " + state
    return None


register(
    Task(
        name="capitals",
        description='two-hop recall: "The state containing the city of Dallas has its capital in"'
        ' -> " Austin"',
        revision=1,
        data={"states": STATES, "templates": TEMPLATES},
        generate=gen_capitals,
    )
)
