"""Task registry and the eight task families: determinism, invariants, semantics, tokenizers."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from bench.model.tiny import tiny_tokenizer
from tasks import (
    ContrastiveDataset,
    DuplicateTaskError,
    Task,
    UnknownTaskError,
    get_task,
    list_tasks,
    register,
)
from tasks import registry as registry_module
from tasks.__main__ import main
from tasks.capitals import CITIES, STATES
from tasks.validate import encode, validate_dataset

REPO = Path(__file__).resolve().parents[1]
NAMES = [
    "addition",
    "capitals",
    "greater_than",
    "ioi",
    "sva_across_pp",
    "sva_across_rc",
    "sva_simple",
    "sva_within_rc",
]
_TOKENIZERS: dict[str, object] = {}
_BUILT: dict[tuple[str, int], ContrastiveDataset] = {}


def task_tokenizer(name: str):
    """A tiny BPE trained on the task's own text, so its words are single tokens."""
    if name not in _TOKENIZERS:
        _TOKENIZERS[name] = tiny_tokenizer(get_task(name).corpus())
    return _TOKENIZERS[name]


def built(name: str, seed: int = 0) -> ContrastiveDataset:
    """The task's 300/40 dataset under its tiny tokenizer (built once per test session)."""
    if (name, seed) not in _BUILT:
        _BUILT[name, seed] = get_task(name).build(task_tokenizer(name), 300, 40, seed=seed)
    return _BUILT[name, seed]


# -- registry ------------------------------------------------------------------------------------


def test_registry_lists_the_eight_tasks():
    tasks = list_tasks()
    assert [t.name for t in tasks] == NAMES
    for t in tasks:
        assert re.fullmatch(r"\d+\.[0-9a-f]{8}", t.version)
        assert t.description and "\n" not in t.description


def test_cli_list(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == NAMES
    assert all(get_task(line.split()[0]).version == line.split()[1] for line in lines)


def test_unknown_task_names_close_matches():
    with pytest.raises(UnknownTaskError, match="Did you mean sva_simple"):
        get_task("sva_simpel")
    with pytest.raises(UnknownTaskError, match="Registered tasks: addition"):
        get_task("zzz")


def test_cli_unknown_task_fails_before_loading_a_model(capsys):
    assert main(["check", "--model", "no-such-model", "--tasks", "greater_then"]) == 2
    assert "Did you mean greater_than" in capsys.readouterr().err


def test_registering_a_name_twice_raises(monkeypatch):
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    with pytest.raises(DuplicateTaskError, match="'ioi' is already registered"):
        register(get_task("ioi"))
    fresh = Task("fresh", "a test task", 1, {}, generate=lambda tok, rng, n: [])
    register(fresh)
    with pytest.raises(DuplicateTaskError, match="fresh"):
        register(fresh)


def test_version_follows_the_data():
    def gen(tok, rng, n):
        return []

    a = Task("x", "d", 1, {"words": ["a", "b"]}, generate=gen)
    assert Task("x", "d", 1, {"words": ["a", "b"]}, generate=gen).version == a.version
    assert Task("x", "d", 1, {"words": ["a", "c"]}, generate=gen).version != a.version
    assert Task("x", "d", 2, {"words": ["a", "b"]}, generate=gen).version != a.version


def test_tasks_do_not_import_bench():
    code = (
        "import sys, tasks, tasks.check, tasks.__main__; "
        "assert not [m for m in sys.modules if m.split('.')[0] == 'bench'], 'bench imported'"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


# -- every task under a tiny tokenizer -------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_builds_with_tiny_tokenizer(name):
    tok = task_tokenizer(name)
    ds = built(name)
    assert (len(ds.train), len(ds.test)) == (300, 40)
    assert (ds.task, ds.version, ds.seed) == (name, get_task(name).version, 0)
    validate_dataset(ds, tok)  # single-token answers, one length, no duplicates, disjoint
    enc = encode(ds, tok)
    for split, n in (("train", 300), ("test", 40)):
        e = enc[split]
        assert e["clean_ids"].shape == e["cf_ids"].shape == (n, ds.seq_len)
        assert e["clean_answer_id"].shape == e["cf_answer_id"].shape == (n,)
        assert all(t.dtype == torch.long for t in e.values())
        assert (e["clean_answer_id"] != e["cf_answer_id"]).all()
    pair = ds.test[0]
    assert enc["test"]["clean_ids"][0].tolist() == tok(pair.clean_prompt).input_ids


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_pairs_other_seed_other_pairs(name):
    ds = built(name)
    again = get_task(name).build(task_tokenizer(name), 300, 40, seed=0)
    assert again.to_dict() == ds.to_dict()
    other = built(name, seed=1)
    assert other.test != ds.test and other.train != ds.train


def test_test_split_does_not_depend_on_n_train():
    tok = task_tokenizer("ioi")
    assert get_task("ioi").build(tok, 0, 40, seed=0).test == built("ioi").test


def test_dataset_dict_round_trip(tmp_path):
    ds = built("sva_simple")
    assert ContrastiveDataset.from_dict(ds.to_dict()) == ds
    ds.to_json(tmp_path / "ds.json")
    assert ContrastiveDataset.from_json(tmp_path / "ds.json") == ds
    with pytest.raises(ValueError, match="unsupported dataset format"):
        ContrastiveDataset.from_dict({**ds.to_dict(), "format": 99})


def test_encode_rejects_another_tokenizer():
    ds = built("capitals")
    with pytest.raises(ValueError, match="was the dataset built with tokenizer"):
        encode(ds, tiny_tokenizer())  # default corpus: city names split into pieces


# -- task semantics ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("sva")])
def test_sva_flips_one_noun_and_balances_numbers(name):
    ds = built(name)
    for split in (ds.train, ds.test):
        numbers = Counter(p.clean_answer in {" are", " have", " do", " were"} for p in split)
        assert abs(numbers[True] - numbers[False]) <= 1
    for p in ds.test:
        clean, cf = p.clean_prompt.split(), p.counterfactual_prompt.split()
        assert len(clean) == len(cf) and sum(a != b for a, b in zip(clean, cf, strict=True)) == 1
        assert {p.clean_answer, p.counterfactual_answer} in [
            {" is", " are"},
            {" has", " have"},
            {" does", " do"},
            {" was", " were"},
        ]


def test_ioi_answer_is_the_name_not_repeated():
    for p in built("ioi").test:
        for prompt, answer, other in (
            (p.clean_prompt, p.clean_answer, p.counterfactual_answer),
            (p.counterfactual_prompt, p.counterfactual_answer, p.clean_answer),
        ):
            count = Counter(re.findall(r"[A-Z][a-z]+", prompt))
            assert count[answer.strip()] == 1 and count[other.strip()] == 2


def test_capitals_table():
    assert len(STATES) == 50
    capitals = [cap for cap, _ in STATES.values()]
    assert len(set(capitals)) == 50
    cities = [c for c, _ in CITIES]
    assert len(set(cities)) == len(cities), "a city is listed twice"
    assert not set(cities) & set(capitals) and not set(cities) & set(STATES)
    assert STATES["Texas"][0] == "Austin" and "Dallas" in STATES["Texas"][1]
    where = dict(CITIES)
    for p in built("capitals").test:
        city = p.clean_prompt.split("city of ")[1].split(" has")[0]
        cf_city = p.counterfactual_prompt.split("city of ")[1].split(" has")[0]
        assert p.clean_answer == " " + STATES[where[city]][0]
        assert p.counterfactual_answer == " " + STATES[where[cf_city]][0]
        assert where[city] != where[cf_city]


def _number_after(text: str, marker: str) -> str:
    return text.rsplit(marker, 1)[1].strip()


def check_greater_than(ds: ContrastiveDataset) -> None:
    for p in [*ds.train, *ds.test]:
        clean_start = int(re.search(r"year (\d{4})", p.clean_prompt).group(1))
        cf_start = int(re.search(r"year (\d{4})", p.counterfactual_prompt).group(1))
        for prompt, answer, start in (
            (p.clean_prompt, p.clean_answer, clean_start),
            (p.counterfactual_prompt, p.counterfactual_answer, cf_start),
        ):
            digits = _number_after(prompt + answer, "the year")
            decade = str(start // 10 + 1)  # the answer lies in the next decade
            assert digits[:3] == decade[: len(digits)], (prompt, answer)
            assert len(digits) >= 3, "the answer must reach the tens digit"
        assert cf_start // 10 + 1 < clean_start // 10  # cf answer is below the clean start


def check_addition(ds: ContrastiveDataset) -> None:
    for p in [*ds.train, *ds.test]:
        sums = []
        for prompt, answer in (
            (p.clean_prompt, p.clean_answer),
            (p.counterfactual_prompt, p.counterfactual_answer),
        ):
            a, b = map(int, re.search(r"(\d+) \+ (\d+) =", prompt).groups())
            digits = _number_after(prompt + answer, "=")
            assert digits and str(a + b).startswith(digits), (prompt, answer)
            sums.append(a + b)
        assert sums[0] // 10 != sums[1] // 10


def test_number_tasks_answer_the_first_unknown_token():
    check_greater_than(built("greater_than"))
    check_addition(built("addition"))


# -- real tokenizers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from bench.model.load import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.mark.parametrize("name", NAMES)
def test_builds_for_smollm2(name, smollm2_tokenizer):
    ds = get_task(name).build(smollm2_tokenizer, n_train=300, n_test=40, seed=0)
    assert (len(ds.train), len(ds.test)) == (300, 40)
    validate_dataset(ds, smollm2_tokenizer)
    if name == "greater_than":  # digits are single tokens: the answer is the tens digit
        check_greater_than(ds)
        assert all(re.fullmatch(r"\d", p.clean_answer) for p in ds.test)
        assert all(re.search(r"year \d\d$", p.clean_prompt) for p in ds.test)
    if name == "addition":
        check_addition(ds)
        assert all(re.fullmatch(r"\d", p.clean_answer) for p in ds.test)


@pytest.mark.slow
def test_builds_for_gemma3():
    from bench.model.load import load_tokenizer

    tok = load_tokenizer("gemma-3-270m")
    for name in NAMES:
        ds = get_task(name).build(tok, n_train=300, n_test=40, seed=0)
        assert (len(ds.train), len(ds.test)) == (300, 40)
        validate_dataset(ds, tok)
        assert encode(ds, tok)["test"]["clean_ids"][:, 0].eq(tok.bos_token_id).all()
    check_greater_than(get_task("greater_than").build(tok, 300, 40, seed=0))
    check_addition(get_task("addition").build(tok, 300, 40, seed=0))
