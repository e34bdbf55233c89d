"""eai-sparsify's layout: skip transcoders (and SAEs) written by eai-sparsify's own save code.

``sparsify.SparseCoder.save_to_disk`` writes each folder (``layers.L.mlp``: ``cfg.json`` +
``sae.safetensors``), at tiny-llama shapes, with random weights; ``path:`` loads them with the
network off. Encode/decode are compared with the tensors read back raw and with sparsify's own
forward pass.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
from _tiny_data import dataset, tiny_handle
from safetensors.torch import load_file

from bench import run_sweep
from bench.bases import make_basis
from bench.model.interventions import intervene
from bench.sweep.units import unit_values
from bench.training.quality import measure_quality
from tasks import encode

os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
sparsify = pytest.importorskip("sparsify", reason="eai-sparsify is a test dependency")

D_SAE, K = 64, 6


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path / "cache"))


def write_sparsify(root: Path, h, transcode: bool = True, skip: bool = True) -> dict:
    """One random sparse coder per layer, saved by eai-sparsify (``save_to_disk``)."""
    from sparsify import SparseCoder, SparseCoderConfig

    d = h.sites.width("mlp_out")
    cfg = SparseCoderConfig(num_latents=D_SAE, k=K, transcode=transcode, skip_connection=skip)
    out = {}
    for layer in range(h.sites.n_layers):
        torch.manual_seed(layer)
        coder = SparseCoder(d, cfg)
        with torch.no_grad():
            for p in coder.parameters():
                p.copy_(0.3 * torch.randn_like(p))
        name = f"layers.{layer}.mlp" if transcode else f"layers.{layer}"  # hookpoints
        coder.save_to_disk(root / name)
        out[layer] = coder
    return out


def reference(folder: Path, x: torch.Tensor, transcode: bool = True):
    """sparsify's maths from the raw tensors (float64): (latents, decode, decode + skip)."""
    t = {k: v.double() for k, v in load_file(str(folder / "sae.safetensors")).items()}
    k = json.loads((folder / "cfg.json").read_text())["k"]
    x = x.double()
    x_enc = x if transcode else x - t["b_dec"]
    pre = torch.relu(x_enc @ t["encoder.weight"].T + t["encoder.bias"])  # [..., M]
    top = pre.topk(k, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
    dec = z @ t["W_dec"] + t["b_dec"]
    full = dec + x @ t["W_skip"].T if "W_skip" in t else dec
    return z, dec, full


def assert_rel(got: torch.Tensor, want: torch.Tensor, tol: float = 1e-5) -> None:
    err = (got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30)
    assert err <= tol, f"relative error {err:.2e} > {tol}"


@pytest.mark.parametrize("skip", [True, False])
def test_skip_transcoder_saved_by_sparsify_loads_offline(tmp_path, skip):
    h = tiny_handle("llama")
    coders = write_sparsify(tmp_path, h, skip=skip)
    basis = make_basis(h, "transcoder", "mlp_out", f"path:{tmp_path}")
    assert basis.n_units() == D_SAE and basis.read_site == "mlp_in"
    desc = basis.describe()
    assert desc["architecture"] == ("topk_skip_transcoder" if skip else "topk_transcoder")
    assert desc.get("skip_connection") == ("in the error node" if skip else None)
    x = torch.randn(2, 5, 32)
    for layer in range(h.sites.n_layers):
        z, dec, full = reference(tmp_path / f"layers.{layer}.mlp", x)
        u = basis.encode(layer, x)
        assert ((u != 0).sum(-1) <= K).all()
        assert_rel(u, z)
        assert_rel(basis.decode(layer, u), dec)
        assert_rel(basis.saes[layer](x), full)  # sae-lens's forward adds the skip term
        with torch.no_grad():  # and eai-sparsify's own forward agrees
            theirs = coders[layer](x.flatten(0, 1)).sae_out.view(2, 5, 32)
        assert_rel(basis.saes[layer](x), theirs)


def test_error_node_is_site_minus_decode_of_encode(tmp_path):
    h = tiny_handle("llama")
    write_sparsify(tmp_path, h)
    basis = make_basis(h, "transcoder", "mlp_out", f"path:{tmp_path}")
    ids = encode(dataset(), h.tokenizer)["train"]["clean_ids"][:3]
    keys = [(s, layer) for layer in range(2) for s in ("mlp_in", "mlp_out")]
    with intervene(h.sites, capture=keys) as acts, unit_values(h, basis) as units:
        h.model(input_ids=ids)
    for layer in range(2):
        x, x_in = acts[("mlp_out", layer)], acts[("mlp_in", layer)]
        want = x - basis.decode(layer, basis.encode(layer, x_in))
        torch.testing.assert_close(units[layer].error, want, rtol=1e-5, atol=1e-6)
        # the skip term is in the error node: x - (decode + skip) is what remains unexplained
        rest = x - basis.saes[layer](x_in)
        torch.testing.assert_close(units[layer].error - rest, x_in @ basis.saes[layer].W_skip.T)


def test_sweep_is_one_for_all_zero_for_none_and_carries_quality(tmp_path):
    h, ds = tiny_handle("llama"), dataset()
    write_sparsify(tmp_path, h)
    basis = make_basis(h, "transcoder", "mlp_out", f"path:{tmp_path}")
    windows = encode(ds, h.tokenizer)["train"]["clean_ids"]
    quality = measure_quality(h, "mlp_out", "mlp_in", dict(enumerate(basis.saes)), windows,
                              eval_tokens=64, ce_tokens=32, progress=False)  # fmt: skip
    assert quality["l0"] <= K and quality["architecture"] == "topk_skip_transcoder"
    (tmp_path / "quality.json").write_text(json.dumps(quality))  # as bench.training quality does
    for error_mode in ("ablate", "keep"):
        res = run_sweep(h, ds, basis="transcoder", site="mlp_out", dictionary=f"path:{tmp_path}",
                        method="atp", error_mode=error_mode, n_bootstrap=20,
                        bare_torch_timings=False)  # fmt: skip
        assert abs(res.faithfulness[-1] - 1) <= 1e-5  # F(all) = 1
        assert abs(res.completeness[-1]) <= 1e-5  # everything ablated = the empty circuit
        assert res.m_full != pytest.approx(res.m_empty)
        assert res.dictionary_quality == quality


def test_quality_counts_the_skip_term(tmp_path):
    """FVU of a skip transcoder is measured on decode + skip, as eai-sparsify reconstructs."""
    h = tiny_handle("llama")
    write_sparsify(tmp_path, h)
    basis = make_basis(h, "transcoder", "mlp_out", f"path:{tmp_path}")
    ids = encode(dataset(), h.tokenizer)["train"]["clean_ids"]
    keys = [("mlp_in", 0), ("mlp_out", 0)]
    with intervene(h.sites, capture=keys) as acts:
        h.model(input_ids=ids)
    x, x_in = acts[("mlp_out", 0)][:, 1:].flatten(0, 1), acts[("mlp_in", 0)][:, 1:].flatten(0, 1)
    x_hat = basis.saes[0](x_in)
    fvu = ((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item()
    q = measure_quality(h, "mlp_out", "mlp_in", {0: basis.saes[0]}, ids, eval_tokens=10_000,
                        ce_tokens=32, progress=False)  # fmt: skip
    assert q["per_layer"]["fvu"][0] == pytest.approx(fvu, rel=1e-4)


def test_sparsify_sae_loads_as_topk_sae(tmp_path):
    h = tiny_handle("llama")
    write_sparsify(tmp_path, h, transcode=False, skip=False)
    basis = make_basis(h, "sae", "resid", f"path:{tmp_path}")
    x = torch.randn(3, 32)
    z, dec, _ = reference(tmp_path / "layers.1", x, transcode=False)
    assert_rel(basis.encode(1, x), z)
    assert_rel(basis.decode(1, basis.encode(1, x)), dec)
    with pytest.raises(ValueError, match="is an SAE"):
        make_basis(h, "transcoder", "mlp_out", f"path:{tmp_path}")
