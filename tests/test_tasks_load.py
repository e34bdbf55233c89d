"""Marks-style JSONL files: round trip, validation, and malformed lines named by number."""

from __future__ import annotations

import json

import pytest

from bench.model.tiny import tiny_tokenizer
from tasks import InsufficientPairsError, Pair, PairFileError, get_task, load_pairs, write_pairs
from tasks.validate import encode


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer(get_task("sva_across_pp").corpus())


@pytest.fixture(scope="module")
def ds(tok):
    return get_task("sva_across_pp").build(tok, n_train=60, n_test=20, seed=3)


def test_round_trip(tmp_path, tok, ds):
    path = tmp_path / "pairs.jsonl"
    ds.to_jsonl(path)
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first) == {"clean_prefix", "patch_prefix", "clean_answer", "patch_answer"}
    loaded = load_pairs(path, tok, n_train=60, n_test=20, seed=3)
    assert set(loaded.train + loaded.test) == set(ds.train + ds.test)
    assert not set(loaded.train) & set(loaded.test)
    assert (loaded.task, loaded.seq_len) == ("pairs", ds.seq_len)
    assert loaded.version.startswith("file.")
    assert load_pairs(path, tok, 60, 20, seed=3).to_dict() == loaded.to_dict()
    enc = encode(loaded, tok)
    assert enc["train"]["clean_ids"].shape == (60, ds.seq_len)


def test_extra_keys_and_blank_lines_are_fine(tmp_path, tok, ds):
    path = tmp_path / "extra.jsonl"
    lines = [json.dumps({**p.to_marks(), "case": "singular"}) for p in ds.test]
    path.write_text("\n" + "\n\n".join(lines) + "\n")
    loaded = load_pairs(path, tok, n_train=10, n_test=5, seed=0, task="mine")
    assert loaded.task == "mine" and len(loaded.train) == 10


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", r"bad\.jsonl:3: invalid JSON"),
        ("[1, 2]", r"bad\.jsonl:3: expected a JSON object, got list"),
        ('{"clean_prefix": "The man"}', r"bad\.jsonl:3: missing key\(s\) patch_prefix"),
        (
            '{"clean_prefix": "a", "patch_prefix": "b", "clean_answer": 1, "patch_answer": "c"}',
            r"bad\.jsonl:3: clean_answer must be a string, got int",
        ),
    ],
)
def test_malformed_line_names_its_number(tmp_path, tok, ds, line, message):
    path = tmp_path / "bad.jsonl"
    good = [json.dumps(p.to_marks()) for p in ds.test[:2]]
    path.write_text("\n".join([*good, line, *good]) + "\n")
    with pytest.raises(PairFileError, match=message):
        load_pairs(path, tok, 1, 1)


def test_invalid_pairs_in_a_file_are_counted(tmp_path, tok, ds):
    path = tmp_path / "few.jsonl"
    bad = Pair("The zqxv near the door", "The man", " is", " are")
    write_pairs(path, [*ds.test[:5], bad])
    with pytest.raises(InsufficientPairsError, match="prompt_lengths_differ=1"):
        load_pairs(path, tok, n_train=300, n_test=40)


def test_missing_and_empty_files(tmp_path, tok):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pairs(tmp_path / "nope.jsonl", tok)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(PairFileError, match="holds no pairs"):
        load_pairs(tmp_path / "empty.jsonl", tok)


def test_a_directory_or_an_oversized_pair_file_is_refused_before_reading(tmp_path, monkeypatch):
    """Issue: a directory as --task-file said 'no such file'; a 1-million-line file took 318 s
    and 7.3 GB to use 12 pairs, with nothing shown."""
    import tasks.load
    from bench.__main__ import main

    with pytest.raises(PairFileError, match="is a directory; give a JSONL file"):
        tasks.load.read_pairs(tmp_path)
    argv = ["sweep", "--model", "tiny-llama", "--task-file", str(tmp_path), "--out", "r.json"]
    assert main(argv) == 2
    big = tmp_path / "big.jsonl"
    big.write_text('{"clean_prefix": "a", "patch_prefix": "b", "clean_answer": " x", '
                   '"patch_answer": " y"}\n' * 100)  # fmt: skip
    monkeypatch.setattr(tasks.load, "MAX_PAIR_FILE_BYTES", 1024)
    with pytest.raises(PairFileError, match=r"over the 0 MiB a pair file may hold.*shuf -n"):
        tasks.load.read_pairs(big)
