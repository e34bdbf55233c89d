"""Gemma Scope 2 offline: the release's own file layout, via ``path:`` and via a local hub cache.

Random weights written in the published layout (``params.safetensors`` with ``w_enc``,
``w_dec``, ``b_enc``, ``b_dec``, ``threshold``, ``affine_skip_connection``; ``config.json`` with the
published keys), at tiny-gemma3 shapes (18 layers, as gemma-3-270m has) and, for encode/decode
only, at gemma-3-270m's real shapes for one layer. Every test runs with sockets refused.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from _tiny_data import dataset, tiny_handle
from safetensors.torch import save_file

from bench import run_sweep
from bench.bases import make_basis
from bench.bases.gemmascope import header_shapes, load_folder, read_folder
from bench.bases.releases import quality_path
from bench.model.handle import ModelHandle
from bench.model.interventions import intervene
from bench.model.sites import SiteTable
from bench.model.tiny import tiny_config
from bench.sweep.units import unit_values
from bench.training.quality import measure_quality
from tasks import encode

MLP_RELEASE = "gemma-scope-2-270m-pt-mlp-all"
TC_RELEASE = "gemma-scope-2-270m-pt-transcoders-all"
REPO = "google/gemma-scope-2-270m-pt"
N_LAYERS, D_SAE = 18, 48


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Any socket connection raises; the sparsebench cache is private to the test."""

    def refuse(*args, **kwargs):
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path / "cache"))


def _gemma_like(n_layers: int = N_LAYERS) -> ModelHandle:
    from transformers import AutoModelForCausalLM

    tiny = tiny_handle("gemma3")
    config = tiny_config("gemma3", vocab_size=len(tiny.tokenizer))
    config.num_hidden_layers = n_layers
    if getattr(config, "layer_types", None):  # one entry per layer, the pattern repeated
        config.layer_types = [config.layer_types[i % 2] for i in range(n_layers)]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    model.requires_grad_(False)
    return ModelHandle(model, tiny.tokenizer, "tiny-gemma3-18", "test", SiteTable.for_model(model))


def write_folder(folder: Path, d_in: int, d_out: int, d_sae: int, layer: int, kind: str,
                 affine: bool = False, config: bool = True, seed: int = 0) -> dict:  # fmt: skip
    """One Gemma Scope 2 folder with random weights (thresholds >= 0, as published)."""
    gen = torch.Generator().manual_seed(seed + layer)
    tensors = {
        "w_enc": torch.randn(d_in, d_sae, generator=gen) / d_in**0.5,  # [d_in, d_sae]
        "w_dec": torch.randn(d_sae, d_out, generator=gen) / d_sae**0.5,  # [d_sae, d_out]
        "b_enc": 0.1 * torch.randn(d_sae, generator=gen),
        "b_dec": 0.1 * torch.randn(d_out, generator=gen),
        "threshold": 0.2 * torch.rand(d_sae, generator=gen),
    }
    if affine:
        tensors["affine_skip_connection"] = 0.1 * torch.randn(d_in, d_out, generator=gen)
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "params.safetensors"))
    if config:
        pre = f"model.layers.{layer}"
        hf_in = f"{pre}.pre_feedforward_layernorm.output" if kind == "transcoder" else (
            f"{pre}.post_feedforward_layernorm.output"
        )  # fmt: skip
        cfg = {"width": d_sae, "model_name": "google/gemma-3-270m", "architecture": "jump_relu",
               "l0": 10, "affine_connection": affine, "type": kind, "hf_hook_point_in": hf_in,
               "hf_hook_point_out": f"{pre}.post_feedforward_layernorm.output" if
               kind == "transcoder" else hf_in}  # fmt: skip
        (folder / "config.json").write_text(json.dumps(cfg))
    return tensors


def write_release(root: Path, h, kind: str, affine: bool = False, config: bool = True) -> dict:
    """Every layer's folder as the release names it (``mlp_out_all/layer_L_width_16k_l0_small``)."""
    d = h.sites.width("mlp_out")
    parent = "transcoder_all" if kind == "transcoder" else "mlp_out_all"
    suffix = "_affine" if affine else ""
    return {
        layer: write_folder(
            root / parent / f"layer_{layer}_width_16k_l0_small{suffix}",
            *(d, d, D_SAE, layer, kind, affine, config),
        )
        for layer in range(h.sites.n_layers)
    }


def hub_cache(monkeypatch, tmp_path: Path, h, kind: str, affine: bool = False, config=True):
    """The release's files in Hugging Face's own cache layout; the hub set offline."""
    import huggingface_hub.constants as hf_constants

    repo = tmp_path / "hub" / f"models--{REPO.replace('/', '--')}"
    commit = "1" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    tensors = write_release(repo / "snapshots" / commit, h, kind, affine, config)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    parent = "transcoder_all" if kind == "transcoder" else "mlp_out_all"
    return tensors, repo / "snapshots" / commit / parent


def reference(t: dict, x: torch.Tensor, x_in: torch.Tensor | None = None):
    """The published maths from the raw tensors (float64): (latents, decode, decode + skip)."""
    t = {k: v.double() for k, v in t.items()}
    x = x.double()
    pre = x @ t["w_enc"] + t["b_enc"]
    z = pre * (pre > t["threshold"])
    dec = z @ t["w_dec"] + t["b_dec"]
    skip = dec + x @ t["affine_skip_connection"] if "affine_skip_connection" in t else dec
    return z, dec, skip


def assert_rel(got: torch.Tensor, want: torch.Tensor, tol: float = 1e-5) -> None:
    err = (got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30)
    assert err <= tol, f"relative error {err:.2e} > {tol}"


def error_nodes_match(h, basis) -> None:
    """Each error node equals x - decode(encode(x)) at the site the model computed."""
    ids = encode(dataset(), h.tokenizer)["train"]["clean_ids"][:3]
    keys = [(s, layer) for layer in range(h.sites.n_layers) for s in {basis.site, basis.read_site}]
    with intervene(h.sites, capture=keys) as acts, unit_values(h, basis) as units:
        h.model(input_ids=ids)
    for layer in range(h.sites.n_layers):
        x, x_in = acts[(basis.site, layer)], acts[(basis.read_site, layer)]
        want = x - basis.decode(layer, basis.encode(layer, x_in))
        torch.testing.assert_close(units[layer].error, want, rtol=1e-5, atol=1e-6)


# -- path: and release: on the same files ----------------------------------------------------------


@pytest.mark.parametrize(
    "kind,affine,config",
    [("mlp_out", False, True), ("mlp_out", False, False), ("transcoder", False, True),
     ("transcoder", True, True), ("transcoder", True, False)],
)  # fmt: skip
def test_release_and_path_load_identically_offline(monkeypatch, tmp_path, kind, affine, config):
    h = _gemma_like()
    tensors, folder = hub_cache(monkeypatch, tmp_path, h, kind, affine, config)
    basis_name = "transcoder" if kind == "transcoder" else "sae"
    release = TC_RELEASE if kind == "transcoder" else MLP_RELEASE
    template = "layer_{layer}_width_16k_l0_small" + ("_affine" if affine else "")
    via_release = make_basis(h, basis_name, "mlp_out", f"release:{release}:{template}")
    via_path = make_basis(h, basis_name, "mlp_out", f"path:{folder}")
    assert via_release.fingerprint == via_path.fingerprint
    assert via_release.n_units() == D_SAE and via_release.read_site == (
        "mlp_in" if kind == "transcoder" else "mlp_out"
    )
    desc = via_release.describe()
    assert desc["sae_ids"] == [template.format(layer=i) for i in range(N_LAYERS)]
    want_arch = {"mlp_out": "jumprelu", "transcoder": "jumprelu_transcoder"}[kind]
    assert desc["architecture"] == ("jumprelu_skip_transcoder" if affine else want_arch)
    x = torch.randn(2, 5, 32)
    for layer in (0, 7, 17):
        z, dec, full = reference(tensors[layer], x)
        for b in (via_release, via_path):
            u = b.encode(layer, x)
            assert_rel(u, z)
            assert_rel(b.decode(layer, u), dec)
            assert_rel(b.saes[layer](x), full)  # sae-lens's forward adds the skip term
    error_nodes_match(h, via_release)


def test_sweep_is_one_for_all_zero_for_none_and_carries_quality(monkeypatch, tmp_path):
    h, ds = _gemma_like(), dataset()
    _, folder = hub_cache(monkeypatch, tmp_path, h, "transcoder", affine=True)
    spec = f"release:{TC_RELEASE}:layer_{{layer}}_width_16k_l0_small_affine"
    for dictionary in (spec, f"path:{folder}"):
        basis = make_basis(h, "transcoder", "mlp_out", dictionary)
        windows = encode(dataset(), h.tokenizer)["train"]["clean_ids"]  # [n, 5]
        quality = measure_quality(h, "mlp_out", "mlp_in", dict(enumerate(basis.saes)), windows,
                                  eval_tokens=64, ce_tokens=32, progress=False)  # fmt: skip
        assert 0 < quality["l0"] <= D_SAE and quality["fvu"] > 0
        if dictionary.startswith("release:"):  # where python -m bench.training quality writes
            target = quality_path(TC_RELEASE, spec.split(":", 2)[2], "transcoder", "mlp_out")
        else:
            target = folder / "quality.json"
        target.write_text(json.dumps(quality))
        res = run_sweep(h, ds, basis="transcoder", site="mlp_out", dictionary=dictionary,
                        method="atp", n_bootstrap=20, bare_torch_timings=False)  # fmt: skip
        assert abs(res.faithfulness[-1] - 1) <= 1e-5  # F(all) = 1
        assert abs(res.completeness[-1]) <= 1e-5  # everything ablated = the empty circuit
        assert res.m_full != pytest.approx(res.m_empty)
        assert res.dictionary_quality == json.loads(target.read_text())


def test_sae_sweep_f_all_and_f_none(monkeypatch, tmp_path):
    h, ds = _gemma_like(), dataset()
    _, folder = hub_cache(monkeypatch, tmp_path, h, "mlp_out")
    res = run_sweep(h, ds, basis="sae", site="mlp_out", dictionary=f"path:{folder}",
                    method="atp", n_bootstrap=20, bare_torch_timings=False)  # fmt: skip
    assert abs(res.faithfulness[-1] - 1) <= 1e-5 and abs(res.completeness[-1]) <= 1e-5
    assert res.dictionary_quality is None  # nothing measured yet: no nominal l0 stands in


# -- refusals --------------------------------------------------------------------------------------


def test_missing_cache_file_and_wrong_kind_are_refused(monkeypatch, tmp_path):
    h = _gemma_like()
    _, folder = hub_cache(monkeypatch, tmp_path, h, "mlp_out")
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
        make_basis(h, "sae", "mlp_out", f"release:{MLP_RELEASE}:layer_{{layer}}_width_16k_l0_big")
    with pytest.raises(ValueError, match="is an SAE"):
        make_basis(h, "transcoder", "mlp_out", f"path:{folder}")
    small = _gemma_like(n_layers=2)
    with pytest.raises(ValueError, match=r"layer \d+ out of range"):
        make_basis(small, "sae", "mlp_out", f"path:{folder}")


def test_negative_threshold_is_refused(tmp_path):
    t = write_folder(tmp_path / "mlp_out_all" / "layer_0_width_16k_l0_small", 8, 8, 4, 0,
                     "mlp_out")  # fmt: skip
    t["threshold"][0] = -0.1
    params = tmp_path / "mlp_out_all" / "layer_0_width_16k_l0_small" / "params.safetensors"
    save_file(t, str(params))
    cfg = read_folder("mlp_out_all/layer_0_width_16k_l0_small", params, None)
    with pytest.raises(ValueError, match="negative JumpReLU thresholds"):
        load_folder(cfg, params, "test")


# -- gemma-3-270m's real shapes, one layer ---------------------------------------------------------


@pytest.mark.parametrize("kind,affine", [("mlp_out", False), ("transcoder", True)])
def test_real_shapes_one_layer_encode_decode(tmp_path, kind, affine):
    parent = "transcoder_all" if kind == "transcoder" else "mlp_out_all"
    label = f"{parent}/layer_5_width_16k_l0_small" + ("_affine" if affine else "")
    folder = tmp_path / label
    t = write_folder(folder, 640, 640, 16384, 5, kind, affine, config=False)
    params = folder / "params.safetensors"
    assert header_shapes(params)["w_enc"] == [640, 16384]
    cfg = read_folder(label, params, None)
    assert (cfg["d_in"], cfg["d_sae"]) == (640, 16384)
    assert cfg["metadata"]["hf_hook_name"] == (
        "model.layers.5.pre_feedforward_layernorm.output" if kind == "transcoder"
        else "model.layers.5.post_feedforward_layernorm.output"
    )  # fmt: skip
    sae = load_folder(cfg, params, label).eval()
    x = torch.randn(4, 640, generator=torch.Generator().manual_seed(1))
    z, dec, full = reference(t, x)
    with torch.no_grad():
        u = sae.encode(x)
        assert (u != 0).any() and (u == 0).any()
        assert_rel(u, z)
        assert_rel(sae.decode(u), dec)
        assert_rel(sae(x), full)
