"""Site tables and the intervention context manager, on every tiny architecture."""

from __future__ import annotations

import pytest
import torch

from bench import intervene, load_model
from bench.model.sites import SITE_NAMES
from bench.model.tiny import TINY_ARCHS


@pytest.fixture(scope="module", params=TINY_ARCHS)
def handle(request):
    return load_model(f"tiny-{request.param}")


def _ids(h):
    return h.tokenizer(
        ["The parents are here", "The parent is here"], return_tensors="pt"
    ).input_ids


def _all_keys(h):
    return [(s, layer) for s in h.sites.names for layer in range(h.sites.n_layers)]


def test_every_site_resolves_on_every_layer(handle):
    sites = handle.sites
    assert set(sites.names) == set(SITE_NAMES)
    ids = _ids(handle)
    with intervene(sites, capture=_all_keys(handle)) as acts:
        handle.model(ids)
    for site in sites.names:
        for layer in range(sites.n_layers):
            assert sites.module(site, layer) is not None
            assert acts[(site, layer)].shape == (*ids.shape, sites.width(site))
            name = sites.hook_name(site, layer)
            assert name.startswith(f"blocks.{layer}.")
            assert sites.parse_hook_name(name) == (site, layer)


def test_mlp_output_path_reproduces_mlp_out(handle):
    sites = handle.sites
    keys = [(s, layer) for s in ("mlp_acts", "mlp_out") for layer in range(sites.n_layers)]
    with intervene(sites, capture=keys) as acts, torch.no_grad():
        handle.model(_ids(handle))
    for layer in range(sites.n_layers):
        rebuilt = sites.mlp_output_path(layer)(acts[("mlp_acts", layer)])
        torch.testing.assert_close(rebuilt, acts[("mlp_out", layer)], atol=1e-5, rtol=1e-5)


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_replace_with_itself_keeps_logits_and_removes_hooks(handle):
    ids = _ids(handle)
    base = handle.model(ids).logits
    before = _hook_count(handle.model)
    keys = _all_keys(handle)
    with intervene(handle.sites, replace={k: (lambda x: x.clone()) for k in keys}):
        assert _hook_count(handle.model) == before + len(keys)
        out = handle.model(ids).logits
    torch.testing.assert_close(out, base, atol=0, rtol=0)
    assert _hook_count(handle.model) == before
    with pytest.raises(RuntimeError, match="boom"), intervene(handle.sites, capture=keys):
        raise RuntimeError("boom")
    assert _hook_count(handle.model) == before


def test_replacing_with_captured_tensor_and_shape_check(handle):
    ids = _ids(handle)
    with intervene(handle.sites, capture=[("resid", 0)]) as acts:
        base = handle.model(ids).logits
    saved = acts[("resid", 0)].clone()
    with intervene(handle.sites, replace={("resid", 0): saved}):
        torch.testing.assert_close(handle.model(ids).logits, base)
    with (
        pytest.raises(ValueError, match="replacement has shape"),
        intervene(handle.sites, replace={("resid", 0): saved[:, :1]}),
    ):
        handle.model(ids)


def test_gradients_reach_captured_activations(handle):
    ids = _ids(handle)
    keys = [("mlp_acts", 0), ("resid", 0), ("mlp_acts", 1)]
    base = handle.model(ids).logits
    with intervene(handle.sites, capture=keys, grad=True) as acts:
        logits = handle.model(ids).logits
    torch.testing.assert_close(logits, base, atol=0, rtol=0)
    grads = torch.autograd.grad(logits[:, -1, 5].sum(), [acts[k] for k in keys])
    for key, g in zip(keys, grads, strict=True):
        assert g.shape == acts[key].shape and g.abs().sum() > 0
    assert not any(p.grad is not None for p in handle.model.parameters())


def test_unknown_site_and_layer_raise_before_hooking(handle):
    before = _hook_count(handle.model)
    with pytest.raises(ValueError, match=r"unknown site 'mlp_act'.*did you mean mlp_acts"):
        with intervene(handle.sites, capture=[("resid", 0), ("mlp_act", 0)]):
            pass
    with pytest.raises(ValueError, match="out of range"):
        with intervene(handle.sites, capture=[("resid", 99)]):
            pass
    with pytest.raises(ValueError, match="matches no site"):
        handle.sites.parse_hook_name("blocks.0.hook_nonsense")
    assert _hook_count(handle.model) == before
