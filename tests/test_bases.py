"""Dictionary bases on tiny random models: loading (path:, release:), checks, sweeps, gradients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _tiny_data import dataset, tiny_handle

from bench import intervene, run_sweep
from bench.bases import make_basis
from bench.bases.dictionary import parse_dictionary
from bench.bases.hooks import resolve_hook
from bench.bases.loading import make_dictionary_basis
from bench.bases.releases import release_ids
from bench.model.handle import ModelHandle
from bench.model.sites import SiteTable
from bench.model.tiny import tiny_config
from bench.sweep.units import metric, unit_leaves
from tasks.validate import encode


def write_dictionary(
    root: Path,
    h,
    basis: str = "sae",
    site: str = "mlp_out",
    d_sae: int = 48,
    seed: int = 0,
    hook: str | None = None,
    d_in: int | None = None,
    rescale: bool = False,
    layers: list[int] | None = None,
) -> Path:
    """One random sae-lens dictionary per layer, saved with sae-lens's own save_model."""
    from sae_lens import TopKSAE, TopKSAEConfig, Transcoder, TranscoderConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(seed)
    for layer in layers if layers is not None else range(h.sites.n_layers):
        if basis == "sae":
            name = hook or h.sites.hook_name(site, layer)
            cfg = TopKSAEConfig(
                d_in=d_in or h.sites.width(site),
                d_sae=d_sae,
                k=6,
                rescale_acts_by_decoder_norm=rescale,
                metadata=SAEMetadata(hook_name=name, model_name=h.name),
            )
            sae = TopKSAE(cfg)
        else:
            name = h.sites.hook_name("mlp_in", layer)
            cfg = TranscoderConfig(
                d_in=d_in or h.sites.width("mlp_in"),
                d_out=h.sites.width("mlp_out"),
                d_sae=d_sae,
                apply_b_dec_to_input=False,
                metadata=SAEMetadata(
                    hook_name=name, hook_name_out=h.sites.hook_name("mlp_out", layer)
                ),
            )
            sae = Transcoder(cfg)
        with torch.no_grad():
            for p in sae.parameters():
                p.add_(0.1 * torch.randn_like(p))  # non-zero biases: exercise the affine parts
        sae.save_model(root / name)
    return root


def tiny_basis(root: Path, h, basis: str, site: str):
    """``basis@site`` on ``h``: neurons, or a random dictionary written under ``root``."""
    if basis == "neurons":
        return make_basis(h, basis, site)
    write_dictionary(root, h, basis=basis, site=site)
    return make_basis(h, basis, site, f"path:{root}")


# -- path: ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rescale", [False, True])
def test_sae_saved_by_sae_lens_loads_via_path(tmp_path, rescale):
    from sae_lens import SAE

    h = tiny_handle("llama")
    write_dictionary(tmp_path, h, rescale=rescale)
    basis = make_basis(h, "sae", "mlp_out", f"path:{tmp_path}")
    assert basis.n_units() == 48 and basis.has_error and not basis.identity
    assert basis.site == basis.read_site == "mlp_out"
    ref = SAE.load_from_disk(tmp_path / "blocks.1.hook_mlp_out")
    x = torch.randn(2, 5, 32)
    u = basis.encode(1, x)
    assert u.shape == (2, 5, 48) and ((u != 0).sum(-1) <= 6).all()
    torch.testing.assert_close(u, ref.encode(x))
    torch.testing.assert_close(basis.decode(1, u), ref.decode(u))
    assert torch.equal(basis.decode_delta(1, torch.zeros_like(u)), torch.zeros(2, 5, 32))
    d = torch.randn_like(u)
    torch.testing.assert_close(
        basis.decode(1, u + d), basis.decode(1, u) + basis.decode_delta(1, d)
    )
    desc = basis.describe()
    assert desc["dictionary"] == f"path:{tmp_path}" and len(desc["weights_sha256"]) == 64
    assert basis.quality() is None
    (tmp_path / "quality.json").write_text(json.dumps({"fvu": 0.25}))
    assert make_basis(h, "sae", "mlp_out", f"path:{tmp_path}").quality() == {"fvu": 0.25}


def test_path_needs_every_layer_once(tmp_path):
    h = tiny_handle("llama")
    write_dictionary(tmp_path / "a", h, layers=[0])
    with pytest.raises(ValueError, match=r"missing: \[1\]"):
        make_dictionary_basis(h, "sae", "mlp_out", f"path:{tmp_path / 'a'}")
    write_dictionary(tmp_path / "b", h)
    write_dictionary(tmp_path / "b" / "extra", h, layers=[0])
    (tmp_path / "b" / "extra" / "blocks.0.hook_mlp_out").rename(tmp_path / "b" / "again")
    with pytest.raises(ValueError, match="2 dictionaries for layer 0"):
        make_dictionary_basis(h, "sae", "mlp_out", f"path:{tmp_path / 'b'}")
    with pytest.raises(FileNotFoundError, match="holds no SAEs"):
        make_dictionary_basis(h, "sae", "mlp_out", f"path:{tmp_path / 'b' / 'extra'}")


# -- refusing mismatches --------------------------------------------------------------------------


def test_wrong_width_is_refused_naming_both_shapes(tmp_path):
    h = tiny_handle("llama")
    write_dictionary(tmp_path, h, d_in=16)
    with pytest.raises(ValueError, match=r"d_in 16 \(input shape \[\.\.\., 16\]\).*width 32"):
        make_dictionary_basis(h, "sae", "mlp_out", f"path:{tmp_path}")


@pytest.mark.parametrize(
    "hook,message",
    [
        (
            "blocks.0.hook_resid_post",
            r"reads site 'resid'.*needs a dictionary reading site 'mlp_out'",
        ),
        ("blocks.0.hook_resid_pre", r"matches no site of this llama model"),
        ("blocks.7.hook_mlp_out", r"layer 7 out of range"),
        ("blocks.0.hook_mlp_in", r"pre-norm residual"),
    ],
)
def test_another_sites_or_models_hook_is_refused(tmp_path, hook, message):
    h = tiny_handle("llama")
    write_dictionary(tmp_path, h, hook=hook, layers=[0])
    with pytest.raises(ValueError, match=message):
        make_dictionary_basis(h, "sae", "mlp_out", f"path:{tmp_path}")


def test_sae_and_transcoder_are_not_interchangeable(tmp_path):
    h = tiny_handle("llama")
    write_dictionary(tmp_path / "tc", h, basis="transcoder")
    write_dictionary(tmp_path / "sae", h)
    with pytest.raises(ValueError, match="is a transcoder.*use basis 'transcoder'"):
        make_dictionary_basis(h, "sae", "mlp_out", f"path:{tmp_path / 'tc'}")
    with pytest.raises(ValueError, match="not a transcoder"):
        make_dictionary_basis(h, "transcoder", "mlp_out", f"path:{tmp_path / 'sae'}")
    with pytest.raises(ValueError, match="writes site 'mlp_out'.*not 'resid'"):
        make_dictionary_basis(h, "transcoder", "resid", f"path:{tmp_path / 'tc'}")


@pytest.mark.parametrize(
    "spec,message",
    [
        (None, "need a dictionary"),
        ("sae.pt", "unknown dictionary 'sae.pt'"),
        ("local:width=x", "bad local dictionary option"),
        ("release:gemma-scope-2-270m-pt-mlp-al", "did you mean gemma-scope-2-270m-pt-mlp-all"),
    ],
)
def test_bad_dictionary_strings_raise(spec, message):
    h = tiny_handle("llama")
    with pytest.raises(ValueError, match=message):
        make_dictionary_basis(h, "sae", "mlp_out", spec)


def test_parse_dictionary():
    assert parse_dictionary("local:width=64,k=4").options == {"width": 64, "k": 4}
    spec = parse_dictionary("release:r:layer_{layer}_x")
    assert (spec.kind, spec.target, spec.selector) == ("release", "r", "layer_{layer}_x")


def test_hook_names_resolve_through_hf_names_and_aliases():
    h = tiny_handle("gemma3")
    s = h.sites
    assert resolve_hook(s, None, "model.layers.1.pre_feedforward_layernorm.output") == ("mlp_in", 1)
    assert resolve_hook(s, None, "model.layers.1.post_feedforward_layernorm.output") == (
        "mlp_out",
        1,
    )
    assert resolve_hook(s, None, "model.layers.0.output") == ("resid", 0)
    gemma_scope = ("blocks.1.hook_mlp_in", "model.layers.1.pre_feedforward_layernorm.output")
    assert resolve_hook(s, *gemma_scope) == ("mlp_in", 1)
    assert resolve_hook(s, "blocks.0.mlp.hook_in", None) == ("mlp_in", 0)
    with pytest.raises(ValueError, match="refusing to guess"):
        resolve_hook(s, "blocks.0.hook_mlp_out", "model.layers.1.post_feedforward_layernorm.output")
    llama = tiny_handle("llama").sites
    assert resolve_hook(llama, None, "model.layers.1.post_attention_layernorm.output") == (
        "mlp_in",
        1,
    )


# -- release: --------------------------------------------------------------------------------------


def test_release_templates_choose_one_sae_per_layer():
    ids = release_ids("gemma-scope-2-270m-pt-mlp-all", "layer_{layer}_width_16k_l0_small")
    assert len(ids) == 18 and "layer_3_width_16k_l0_small" in ids
    h = tiny_handle("gemma3")
    with pytest.raises(ValueError, match=r"choose one per layer.*layer_\{layer\}"):
        make_dictionary_basis(h, "sae", "mlp_out", "release:gemma-scope-2-270m-pt-mlp-all")


def _pythia_like(n_layers: int = 6) -> ModelHandle:
    from transformers import AutoModelForCausalLM

    tiny = tiny_handle("gpt_neox")
    config = tiny_config("gpt_neox", vocab_size=len(tiny.tokenizer))
    config.num_hidden_layers = n_layers
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    model.requires_grad_(False)
    return ModelHandle(model, tiny.tokenizer, "tiny-pythia", "test", SiteTable.for_model(model))


def _local_hub_copy(monkeypatch, tmp_path: Path, h, d_in: int | None = None) -> None:
    """The release's files in Hugging Face's own cache layout; the hub set offline."""
    import huggingface_hub.constants as hf_constants
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    release = get_pretrained_saes_directory()["pythia-70m-deduped-mlp-sm"]
    repo = tmp_path / "hub" / f"models--{release.repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    saved = write_dictionary(tmp_path / "saved", h, d_in=d_in)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for sae_id, folder in release.saes_map.items():  # this release's sae_ids are hook names
        (saved / sae_id).rename(snapshot / folder)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)


def test_release_resolves_end_to_end_against_a_local_hub_copy(monkeypatch, tmp_path):
    from sae_lens import SAE

    h = _pythia_like()
    _local_hub_copy(monkeypatch, tmp_path, h)
    basis = make_dictionary_basis(h, "sae", "mlp_out", "release:pythia-70m-deduped-mlp-sm")
    assert basis.n_units() == 48 and len(basis.saes) == 6
    assert basis.describe()["sae_ids"] == [f"blocks.{i}.hook_mlp_out" for i in range(6)]
    direct = SAE.from_pretrained("pythia-70m-deduped-mlp-sm", "blocks.4.hook_mlp_out")
    x = torch.randn(3, 32)
    torch.testing.assert_close(basis.encode(4, x), direct.encode(x))
    res = run_sweep(h, dataset(), basis="sae", site="mlp_out",
                    dictionary="release:pythia-70m-deduped-mlp-sm", method="atp",
                    n_bootstrap=20, bare_torch_timings=False)  # fmt: skip
    assert abs(res.faithfulness[-1] - 1) <= 1e-5


def test_release_for_another_width_is_refused_before_loading_weights(monkeypatch, tmp_path):
    h = _pythia_like()
    _local_hub_copy(monkeypatch, tmp_path, h, d_in=512)  # pythia-70m's real width
    with pytest.raises(ValueError, match=r"d_in 512.*width 32"):
        make_dictionary_basis(h, "sae", "mlp_out", "release:pythia-70m-deduped-mlp-sm")


def test_release_for_a_model_with_fewer_layers_is_refused(monkeypatch, tmp_path):
    h = _pythia_like()
    _local_hub_copy(monkeypatch, tmp_path, h)
    small = _pythia_like(n_layers=4)
    with pytest.raises(ValueError, match=r"layer 4 out of range"):
        make_dictionary_basis(small, "sae", "mlp_out", "release:pythia-70m-deduped-mlp-sm")


# -- sweeps and gradients ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch,basis,site,error_mode",
    [
        ("llama", "sae", "mlp_out", "keep"),
        ("llama", "sae", "mlp_out", "ablate"),
        ("gpt2", "sae", "resid", "keep"),
        ("gemma3", "sae", "mlp_out", "ablate"),
        ("llama", "transcoder", "mlp_out", "keep"),
        ("llama", "transcoder", "mlp_out", "ablate"),
        ("gpt_neox", "transcoder", "mlp_out", "keep"),
    ],
)
def test_faithfulness_is_one_for_all_and_zero_for_none(tmp_path, arch, basis, site, error_mode):
    h, ds = tiny_handle(arch), dataset()
    write_dictionary(tmp_path, h, basis=basis, site=site)
    res = run_sweep(h, ds, basis=basis, site=site, dictionary=f"path:{tmp_path}", method="atp",
                    error_mode=error_mode, n_bootstrap=50, bare_torch_timings=False)  # fmt: skip
    n_units = 5 * 2 * 48
    assert res.n_nodes == n_units + (5 * 2 if error_mode == "ablate" else 0)
    assert abs(res.faithfulness[-1] - 1) <= 1e-5  # F(all) = 1
    assert abs(res.completeness[-1]) <= 1e-5  # all nodes ablated = the empty circuit: 0
    assert res.m_full != pytest.approx(res.m_empty)
    assert res.error_mode == error_mode and res.basis == basis


@pytest.mark.parametrize(
    "basis,site", [("sae", "mlp_out"), ("sae", "resid"), ("transcoder", "mlp_out")]
)
def test_gradient_at_the_error_node_equals_the_gradient_at_the_site(tmp_path, basis, site):
    h, ds = tiny_handle("llama"), dataset(n_train=6)
    write_dictionary(tmp_path, h, basis=basis, site=site, rescale=True)
    b = make_dictionary_basis(h, basis, site, f"path:{tmp_path}")
    tr = encode(ds, h.tokenizer)["train"]
    args = tr["clean_ids"], tr["clean_answer_id"], tr["cf_answer_id"]
    keys = [(site, layer) for layer in range(h.sites.n_layers)]
    with intervene(h.sites, capture=keys, grad=True) as acts:
        m_plain = metric(h, *args).sum()
    grads_plain = torch.autograd.grad(m_plain, [acts[k] for k in keys])
    with unit_leaves(h, b) as leaves:
        m = metric(h, *args).sum()
    layers = range(h.sites.n_layers)
    grads = torch.autograd.grad(
        m, [leaves[i].error for i in layers] + [leaves[i].units for i in layers]
    )
    torch.testing.assert_close(m, m_plain)
    for layer in layers:
        torch.testing.assert_close(grads[layer], grads_plain[layer], atol=1e-6, rtol=1e-5)
        # and the latents' gradient is the site's, pulled back through the (linear) decoder
        u = leaves[layer].units.detach().requires_grad_(True)
        (pulled,) = torch.autograd.grad(b.decode_delta(layer, u), u, grads_plain[layer])
        torch.testing.assert_close(grads[2 + layer], pulled, atol=1e-6, rtol=1e-5)


def _leaf_products(h, basis, split, relp: bool):
    """The direct form: units as autograd leaves of the (RelP) model, one basis at a time."""
    import contextlib

    from bench.model.relp import relp_replacement
    from bench.sweep.units import unit_values

    ctx = relp_replacement(h.sites) if relp else contextlib.nullcontext()
    with ctx, unit_leaves(h, basis) as leaves:
        m = metric(h, split["clean_ids"], split["clean_answer_id"], split["cf_answer_id"])
    with torch.no_grad(), unit_values(h, basis) as cf:
        h.model(input_ids=split["cf_ids"])
    layers = range(h.sites.n_layers)
    inputs = [leaves[i].units for i in layers] + (
        [leaves[i].error for i in layers] * basis.has_error
    )
    grads = torch.autograd.grad(m.sum(), inputs)
    n = split["clean_ids"].shape[0]
    units = torch.stack([((leaves[i].units - cf[i].units) * grads[i]).sum(0) for i in layers]) / n
    if not basis.has_error:
        return units, None
    err = [((leaves[i].error - cf[i].error) * grads[len(layers) + i]).sum((0, -1)) for i in layers]
    return units, torch.stack(err) / n


@pytest.mark.parametrize("method", ["atp", "relp"])
@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_one_shared_backward_gives_each_bases_own_scores(tmp_path, arch, method):
    """attribute_many (one site gradient shared by all bases, pulled back through each
    decoder) = units as autograd leaves, one basis at a time, error nodes included."""
    from bench.attribution.attribute import attribute_many

    h, ds = tiny_handle(arch), dataset(n_train=12)
    write_dictionary(tmp_path / "sae", h, basis="sae", site="mlp_out")
    write_dictionary(tmp_path / "tc", h, basis="transcoder", seed=1)
    bases = [
        make_basis(h, "neurons", "mlp_acts"),
        make_basis(h, "neurons", "mlp_out"),
        make_basis(h, "sae", "mlp_out", f"path:{tmp_path / 'sae'}"),
        make_basis(h, "transcoder", "mlp_out", f"path:{tmp_path / 'tc'}"),
    ]
    train = encode(ds, h.tokenizer)["train"]
    joint = attribute_many(h, bases, train, method, batch_size=12)
    for basis, sc in zip(bases, joint, strict=True):
        units, err = _leaf_products(h, basis, train, relp=method == "relp")
        assert sc.units.abs().max() > 0
        torch.testing.assert_close(sc.units, units, atol=1e-6, rtol=1e-5)
        if basis.has_error:
            torch.testing.assert_close(sc.error, err, atol=1e-6, rtol=1e-5)
        else:
            assert sc.error is None
