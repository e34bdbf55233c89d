"""Local SAE training on tiny random models: corpus, end to end, resume, on-demand use, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from _tiny_data import corpus as tiny_text
from _tiny_data import dataset, tiny_handle

from bench import load_model, run_sweep
from bench.bases.loading import make_dictionary_basis
from bench.training import local as _local_source  # noqa: F401 (registers dictionary="local")
from bench.training import train as training
from bench.training.corpus import Corpus, clean_wikitext, parse_dump

TINY = training.TrainConfig(
    width=64, k=4, n_tokens=1024, epochs=4, ctx=9, batch_tokens=128, windows_per_forward=8,
    n_checkpoints=2, forward_dtype="float32", autocast=False,
    eval_tokens=256, ce_tokens=128, dead_tokens=1024,
)  # fmt: skip
STEPS_AT_SECOND_CHECKPOINT = 22  # thresholds at 1366 and 2732 samples: after steps 11 and 22


def tiny_corpus() -> Corpus:
    return Corpus("tiny", tuple(tiny_text() * 5))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(training, "DEFAULT_CONFIG", TINY)
    monkeypatch.setattr(training, "default_corpus", tiny_corpus)
    return tmp_path / "cache"


def _weights(entry):
    from safetensors.torch import load_file

    return {p.parent.name: load_file(p) for p in sorted(entry.glob("*/sae_weights.safetensors"))}


# -- corpus ---------------------------------------------------------------------------------------

WIKITEXT = """{{Infobox person|name=A {{nested|x}} b}}
'''Ada Lovelace''' was an [[England|English]] mathematician and [[writer]], chiefly known for her
work on the [[Analytical Engine]].<ref name="x">A citation</ref> She was the first to see it.
[[File:Ada.jpg|thumb|A [[portrait]] of her]]
== Early life ==
* a list item that should go away because lists are not prose here at all
{| class="wikitable"
| a table cell with enough words to count as a paragraph if kept
|}
Her father was <!-- hidden --> the poet [http://example.org Lord Byron], and she had no other kids.
[[Category:Mathematicians]]
"""


def test_wikitext_is_cleaned_to_prose_paragraphs():
    assert clean_wikitext(WIKITEXT) == [
        "Ada Lovelace was an English mathematician and writer, chiefly known for her",
        "work on the Analytical Engine. She was the first to see it.",
        "Her father was the poet Lord Byron, and she had no other kids.",
    ]
    page = "<page><title>T</title><ns>0</ns><revision><text>{}</text></revision></page>"
    redirect = "<page><ns>0</ns><redirect title='x'/><text>{}</text></page>"
    talk = "<page><ns>1</ns><text>{}</text></page>"
    xml = "".join(p.format(WIKITEXT.replace("<", "&lt;")) for p in (page, redirect, talk))
    assert len(parse_dump(xml)) == 3  # only the article page counts


def test_windows_start_at_paragraphs_and_hold_out_every_twentieth():
    h = tiny_handle("llama")
    corpus = tiny_corpus()
    train, held = corpus.windows(h.tokenizer, 8)
    assert train.shape[1] == held.shape[1] == 8
    assert len(held) == (len(train) + len(held)) // 20
    first = h.tokenizer(corpus.paragraphs[0], add_special_tokens=False).input_ids[:8]
    assert train[0].tolist() == first
    assert corpus.sha256 != Corpus("tiny", corpus.paragraphs[1:]).sha256


# -- training -------------------------------------------------------------------------------------


def test_training_runs_end_to_end_and_resumes_after_an_interruption(tmp_path, monkeypatch):
    h = tiny_handle("llama")
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path / "a"))
    whole = training.train_local(h, "mlp_out", None, TINY, tiny_corpus())
    quality = json.loads((whole / "quality.json").read_text())
    assert quality["layers"] == [0, 1] and quality["width"] == 64
    assert quality["l0"] == pytest.approx(4.0)  # TopK: exactly k latents per token
    for key in ("fvu", "ce_loss_recovered", "dead_fraction"):
        assert len(quality["per_layer"][key]) == 2
    assert quality["training"]["tokens"] == 1024 and quality["training"]["samples"] == 4096
    assert quality["training"]["resumed_from"] is None
    trained = quality["training"]  # the SAE steps' threads: child processes run one each
    assert trained["threads"] == (1 if trained["processes"] > 1 else torch.get_num_threads())

    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path / "b"))
    stop_at = STEPS_AT_SECOND_CHECKPOINT + 3

    def crash(batch: int) -> None:
        if batch == stop_at:
            raise KeyboardInterrupt("simulated interruption")

    with pytest.raises(KeyboardInterrupt):
        training.train_local(h, "mlp_out", None, TINY, tiny_corpus(), on_batch=crash)
    entry, partial = training.entry_dirs(h.model, "mlp_out", [0, 1], TINY, tiny_corpus())
    assert entry.name == whole.name  # same key in the other cache
    assert not entry.exists() and not training.is_finished(entry)  # nothing half-finished shows
    checkpoints = sorted((partial / "group-0" / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == [str(STEPS_AT_SECOND_CHECKPOINT * 128)]
    assert (checkpoints[0] / training.DONE).exists()
    assert not (partial / "final").exists()

    resumed = training.train_local(h, "mlp_out", None, TINY, tiny_corpus())
    assert resumed == entry and training.is_finished(entry) and not partial.exists()
    info = json.loads((entry / "quality.json").read_text())["training"]
    assert info["resumed_from"] == STEPS_AT_SECOND_CHECKPOINT * 128
    a, b = _weights(whole), _weights(entry)
    assert a.keys() == b.keys() == {"blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"}
    for hook in a:
        for name in a[hook]:
            torch.testing.assert_close(a[hook][name], b[hook][name], atol=1e-5, rtol=1e-4)


def test_an_unreadable_checkpoint_trains_from_the_start_without_collecting_again(
    tmp_path, monkeypatch
):
    from bench.training import activations

    h = tiny_handle("llama")
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path / "a"))
    whole = training.train_local(h, "mlp_out", None, TINY, tiny_corpus())
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path / "b"))

    def crash(batch: int) -> None:
        if batch == STEPS_AT_SECOND_CHECKPOINT + 3:
            raise KeyboardInterrupt("simulated interruption")

    with pytest.raises(KeyboardInterrupt):
        training.train_local(h, "mlp_out", None, TINY, tiny_corpus(), on_batch=crash)
    _, partial = training.entry_dirs(h.model, "mlp_out", [0, 1], TINY, tiny_corpus())
    (checkpoint,) = (partial / "group-0" / "checkpoints").iterdir()
    for f in checkpoint.rglob("*.safetensors"):
        f.write_bytes(b"not a checkpoint")
    collected = []

    def counted(*args, **kwargs):
        collected.append(1)
        return activations.collect(*args, **kwargs)

    monkeypatch.setattr(training, "collect", counted)
    entry = training.train_local(h, "mlp_out", None, TINY, tiny_corpus())
    assert collected == [1]  # the activations are collected once, not again for the restart
    assert json.loads((entry / "quality.json").read_text())["training"]["resumed_from"] is None
    a, b = _weights(whole), _weights(entry)
    assert a.keys() == b.keys() and a
    for hook in a:
        for name in a[hook]:
            torch.testing.assert_close(a[hook][name], b[hook][name], atol=1e-5, rtol=1e-4)


def test_local_dictionary_trains_on_first_use_and_is_reused(tmp_path, cache, monkeypatch):
    h = tiny_handle("llama")
    h.model.save_pretrained(tmp_path / "model")
    h.tokenizer.save_pretrained(tmp_path / "model")
    saved = load_model(tmp_path / "model")
    res = run_sweep(saved, dataset(), basis="sae", site="mlp_out", dictionary="local",
                    method="atp", n_bootstrap=50, bare_torch_timings=False)  # fmt: skip
    assert abs(res.faithfulness[-1] - 1) <= 1e-5 and abs(res.completeness[-1]) <= 1e-5
    quality = res.dictionary_quality
    assert quality["l0"] == pytest.approx(4.0) and quality["width"] == 64
    assert set(quality["per_layer"]) >= {"l0", "fvu", "ce_loss_recovered", "dead_fraction"}

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(training, "_build", no_training)  # what trains, under the entry's lock
    again = make_dictionary_basis(saved, "sae", "mlp_out", "local")
    assert again.quality() == quality and again.describe()["source"].startswith("local:")


def test_local_transcoders_train_and_replace_the_mlp(tmp_path, cache):
    """A local transcoder reads mlp_in and writes mlp_out; its CE-loss recovered splices it in
    place of the MLP, and its sweep holds F(all) = 1."""
    from sae_lens import SAE

    from bench.bases.topk_transcoder import TopKTranscoder

    h = tiny_handle("llama")
    tc = make_dictionary_basis(h, "transcoder", "mlp_out", "local")
    assert tc.read_site == "mlp_in" and tc.describe()["source"].startswith("local:")
    assert all(isinstance(t, TopKTranscoder) for t in tc.saes)
    quality = tc.quality()
    assert quality["architecture"] == "topk_transcoder" and quality["l0"] == pytest.approx(4.0)
    assert all(0 < f < 0.9 for f in quality["per_layer"]["fvu"])  # predicts the MLP's output
    entry = training.local_dictionary_dir(h, "transcoder", "mlp_out")
    assert entry.name.startswith("transcoder-mlp_out-w64-k4")
    saved = SAE.load_from_disk(next(entry.glob("*/cfg.json")).parent)
    assert type(saved) is TopKTranscoder
    assert saved.cfg.metadata.hook_name.endswith("ln2.hook_normalized")
    res = run_sweep(h, dataset(), basis="transcoder", site="mlp_out", dictionary="local",
                    method="atp", n_bootstrap=50, bare_torch_timings=False)  # fmt: skip
    assert abs(res.faithfulness[-1] - 1) <= 1e-5 and abs(res.completeness[-1]) <= 1e-5


def test_cli_trains_and_prints_the_quality_table(cache, capsys):
    from bench.training.__main__ import main

    assert main(["train", "--model", "tiny-llama", "--layers", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "layer" in out and "CE rec." in out and "mean" in out
    assert "1 SAEs (width 64, k 4) at mlp_out" in out
    assert main(["train", "--model", "tiny-llama", "--site", "mlp", "--quiet"]) == 2
    assert "unknown site 'mlp'" in capsys.readouterr().err


@pytest.mark.slow
def test_the_wikipedia_corpus_installs_from_pypi_and_is_pinned():
    from bench.training.corpus import wikipedia_corpus

    corpus = wikipedia_corpus()  # pip download gensim==4.4.0 on first use, sha256 verified
    assert len(corpus.paragraphs) > 4000
    assert sum(len(p) for p in corpus.paragraphs) > 2_000_000
    assert any("anarchism" in p.lower() for p in corpus.paragraphs[:200])


def test_cli_measures_and_stores_the_quality_of_a_path_dictionary(cache, tmp_path, capsys):
    from test_bases import write_dictionary

    from bench.model.load import load_model as load
    from bench.training.__main__ import main

    h = load("tiny-llama")
    write_dictionary(tmp_path / "tc", h, basis="transcoder")
    args = ["quality", "--model", "tiny-llama", "--basis", "transcoder", "--site", "mlp_out"]
    args += ["--dictionary", f"path:{tmp_path / 'tc'}", "--ctx", "9", "--quiet"]
    assert main([*args, "--eval-tokens", "64", "--ce-tokens", "32"]) == 0
    assert "mean" in capsys.readouterr().out
    stored = json.loads((tmp_path / "tc" / "quality.json").read_text())
    assert stored["layers"] == [0, 1] and stored["eval_tokens"] == 64
    assert all(0 <= d <= 1 for d in stored["per_layer"]["dead_fraction"])
    basis = make_dictionary_basis(h, "transcoder", "mlp_out", f"path:{tmp_path / 'tc'}")
    assert basis.quality() == stored


def test_loading_or_finishing_an_entry_leaves_no_empty_partial_folders(tmp_path, monkeypatch):
    """Issue: empty saes/.partial/<model>/ folders stayed in the cache."""
    h = tiny_handle("llama")
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path))
    entry = training.train_local(h, "mlp_out", None, TINY, tiny_corpus())
    assert training.is_finished(entry) and not (tmp_path / "saes" / ".partial").exists()
    assert training.train_local(h, "mlp_out", None, TINY, tiny_corpus()) == entry  # a load
    assert not (tmp_path / "saes" / ".partial").exists()


def test_a_published_dictionary_gets_its_quality_measured_once_and_cached(tmp_path, monkeypatch):
    """Issue 20: every loaded dictionary's measured quality is in its results (a release's
    nominal L0 is a name): the suite measures it on first use and caches it beside the files,
    or in the cache when the directory is not writable."""
    import dataclasses

    from test_bases import write_dictionary

    import bench.training.local as local
    from bench.bases import make_basis

    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(training, "default_corpus", tiny_corpus)
    monkeypatch.setattr(local, "DEFAULT_CONFIG", dataclasses.replace(TINY))
    h = tiny_handle("llama")
    directory = write_dictionary(tmp_path / "gs", h)
    basis = make_basis(h, "sae", "mlp_out", f"path:{directory}")
    assert basis.quality() is None  # loading alone measures nothing
    local.ensure_quality(h, basis)
    q = basis.quality()
    assert {"l0", "fvu", "ce_loss_recovered"} <= set(q)
    assert (directory / "quality.json").exists()
    again = make_basis(h, "sae", "mlp_out", f"path:{directory}")
    assert again.quality() == q  # read back, not measured again
    (directory / "quality.json").unlink()
    monkeypatch.setattr(local, "_probe_writable", lambda d: "Read-only file system")
    third = make_basis(h, "sae", "mlp_out", f"path:{directory}")
    local.ensure_quality(h, third)
    assert third.quality()["fvu"] == q["fvu"] and not (directory / "quality.json").exists()
    assert list((tmp_path / "cache" / "saes" / "releases").rglob("*.quality.json"))


def test_the_training_bar_is_one_short_line_and_the_losses_go_to_the_log(
    tmp_path, monkeypatch, capsys, caplog
):
    """sae-lens's own bar carries every layer's loss in its description; ours names the layers,
    counts tokens and shows the mean loss, and the per-layer losses reach the log at the end."""
    import dataclasses
    import logging

    h = tiny_handle("llama")
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("TQDM_MININTERVAL", "0")  # draw every update, so the last one is seen
    cfg = dataclasses.replace(TINY, batch_tokens=8, n_tokens=512, epochs=2)  # 128 steps
    with caplog.at_level(logging.INFO, logger="bench.training.train"):
        training.train_local(h, "mlp_out", None, cfg, tiny_corpus(), progress=True)
    bars = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines()
            if "training saes" in line]  # fmt: skip
    assert bars, "no training bar was drawn"
    for line in bars:
        assert line.startswith("training saes, layers 0-1:"), line
        assert "blocks.0" not in line and "hook_mlp_out" not in line  # no per-layer losses
        assert "tok" in line and len(line) < 140, line
    assert any("mean loss" in line for line in bars)
    assert any("100%" in line for line in bars), bars[-3:]  # counted to the end, step by step
    logged = [r.getMessage() for r in caplog.records if "last loss per dictionary" in r.message]
    assert len(logged) == 1
    assert "blocks.0.hook_mlp_out" in logged[0] and "blocks.1.hook_mlp_out" in logged[0]


def test_a_cli_sweep_records_a_published_dictionarys_measured_quality(
    tmp_path, monkeypatch, capsys
):
    """``python -m bench sweep --dictionary path:...`` measures the dictionary (once) and records
    L0, FVU and CE-loss recovered in the result, as the suite does."""
    import dataclasses

    from test_bases import write_dictionary

    import bench.training.local as local
    from bench.__main__ import main
    from bench.results.result import SweepResult

    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(training, "default_corpus", tiny_corpus)
    monkeypatch.setattr(local, "DEFAULT_CONFIG", dataclasses.replace(TINY))
    directory = write_dictionary(tmp_path / "gs", load_model("tiny-llama"))
    out = tmp_path / "r.json"
    argv = ["sweep", "--model", "tiny-llama", "--task", "sva_simple", "--n-train", "8",
            "--n-test", "4", "--basis", "sae", "--site", "mlp_out", "--method", "atp",
            "--dictionary", f"path:{directory}", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr()
    quality = SweepResult.from_json(out).dictionary_quality
    assert {"l0", "fvu", "ce_loss_recovered"} <= set(quality)
    assert quality == json.loads((directory / "quality.json").read_text())


def test_a_float32_handle_trains_the_same_saes_as_a_bf16_one(tmp_path, monkeypatch):
    """The forwards run on a bf16 copy of a float32 model; the copy must be the model a bf16
    load gives (RoPE's inv_freq stays float32), or the same cache key holds different SAEs
    depending on how the model was loaded (the training CLI loads float32, the suite bf16)."""
    import dataclasses

    from bench.model.handle import ModelHandle
    from bench.model.sites import SiteTable

    h32 = tiny_handle("llama")
    h32.model.save_pretrained(tmp_path / "m")
    from transformers import AutoModelForCausalLM

    attn = h32.model.config._attn_implementation  # as the tiny model was built
    bf16 = AutoModelForCausalLM.from_pretrained(
        tmp_path / "m", dtype=torch.bfloat16, attn_implementation=attn
    )
    copy = training.forward_copy(h32.model, torch.bfloat16)
    assert {b.dtype for _, b in bf16.named_buffers()} == {torch.float32}  # inv_freq
    for (name, a), (_, b) in zip(bf16.named_buffers(), copy.named_buffers(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    for (name, a), (_, b) in zip(bf16.named_parameters(), copy.named_parameters(), strict=True):
        assert a.dtype == b.dtype == torch.bfloat16 and torch.equal(a, b), name
    assert h32.model.dtype == torch.float32  # the handle's own model is left as it was
    ids = torch.arange(1, 9).view(1, -1)
    with torch.no_grad():
        assert torch.equal(bf16(ids).logits, copy(ids).logits)

    cfg = dataclasses.replace(TINY, forward_dtype="bfloat16")
    h16 = ModelHandle(bf16.eval().requires_grad_(False), h32.tokenizer, "tiny-llama", "test",
                      SiteTable.for_model(bf16))  # fmt: skip
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path / "a"))
    a = _weights(training.train_local(h32, "mlp_out", None, cfg, tiny_corpus(), progress=False))
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path / "b"))
    b = _weights(training.train_local(h16, "mlp_out", None, cfg, tiny_corpus(), progress=False))
    for hook in a:
        for name in a[hook]:
            assert torch.equal(a[hook][name], b[hook][name]), (hook, name)


def test_the_training_scale_has_the_same_bits_whatever_the_threads():
    """The factor that scales every training row is reduced on fixed threads: on 1 thread ATen
    sums 65,536 row norms in another order than on 2, and a busy machine (1 thread) trained
    other SAEs than an idle one (2), which moved every local-SAE curve of the suite."""
    from bench.training.activations import mean_and_scale

    g = torch.Generator().manual_seed(0)
    rows = (torch.randn(65_536, 128, generator=g) * 3 + 1).bfloat16()  # [n_tokens, d]
    before = torch.get_num_threads()
    got = {}
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            got[n] = mean_and_scale(rows)
            assert torch.get_num_threads() == n  # the process's count is restored
    finally:
        torch.set_num_threads(before)
    for n in (1, 3):
        assert torch.equal(got[n][0], got[2][0])
        assert got[n][1] == got[2][1]


def test_the_cli_threads_option_is_the_choice_the_model_load_makes(monkeypatch):
    """``--threads N`` used to set torch's count only, and load_model's thread choice (the free
    cores) undid it: ``--threads 1`` on an idle 2-core machine trained on 2 threads."""
    from bench.core.env import choose_threads, choose_workers
    from bench.training.__main__ import _use_threads

    monkeypatch.delenv("SPARSEBENCH_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        _use_threads(2)
        assert choose_threads() == (2, "SPARSEBENCH_THREADS=2") and choose_workers() == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
