"""Under ``patch``, a dictionary codes the counterfactual prompts only where they differ from
the clean ones (bench.attribution.gradients._counterfactual_units), and the counterfactual
forward runs only after the pairs' shared prefix: the scores are those of coding and running
every row."""

from __future__ import annotations

import functools

import pytest
import torch
from _tiny_data import dataset, tiny_handle
from test_bases import write_dictionary

import bench.model.load as load
from bench.attribution import gradients
from bench.attribution.attribute import attribute_many
from bench.bases import make_basis
from tasks.validate import encode


def _every_row(basis, layer, read, cf_read, u, dec_u):
    u_r = basis.encode(layer, cf_read)
    return u_r, (basis.decode(layer, u_r) if basis.has_error else None)


@pytest.mark.parametrize(
    "arch,basis,site",
    [("llama", "sae", "mlp_out"), ("gemma3", "sae", "mlp_out"),
     ("llama", "transcoder", "mlp_out"), ("gpt2", "sae", "resid")],
)  # fmt: skip
@pytest.mark.parametrize("method", ["atp", "relp"])
def test_coding_only_the_differing_rows_changes_no_score(
    tmp_path, monkeypatch, arch, basis, site, method
):
    h, ds = tiny_handle(arch), dataset()
    write_dictionary(tmp_path, h, basis=basis, site=site)
    bases = [make_basis(h, basis, site, f"path:{tmp_path}"), make_basis(h, "neurons", "mlp_acts")]
    train = encode(ds, h.tokenizer)["train"]
    assert (train["clean_ids"] == train["cf_ids"]).any(0).any()  # rows that are skipped
    calls = []
    real = gradients._counterfactual_units

    def counted(basis, layer, read, cf_read, u, dec_u):
        calls.append((cf_read != read).any(-1).float().mean().item())
        return real(basis, layer, read, cf_read, u, dec_u)

    monkeypatch.setattr(gradients, "_counterfactual_units", counted)
    # every position coded (after a shared prefix nearly every row differs)
    every_position = functools.partial(gradients._gradient_products, reuse_prefix=False)
    monkeypatch.setattr(gradients, "_gradient_products", every_position)
    skipped = attribute_many(h, bases, train, method, batch_size=8)
    assert calls and min(calls) < 1.0  # some layer had rows it did not code
    monkeypatch.setattr(gradients, "_counterfactual_units", _every_row)
    every = attribute_many(h, bases, train, method, batch_size=8)
    for a, b in zip(skipped, every, strict=True):
        assert torch.equal(a.units, b.units)
        assert (a.error is None and b.error is None) or torch.equal(a.error, b.error)
    assert skipped[0].units.abs().sum() > 0 and skipped[0].error.abs().sum() > 0


@pytest.mark.parametrize(
    "arch,basis,site",
    [("llama", "sae", "mlp_out"), ("gemma3", "sae", "mlp_out"), ("gpt2", "sae", "resid"),
     ("gpt_neox", "neurons", "attn_out")],
)  # fmt: skip
@pytest.mark.parametrize("method", ["atp", "relp"])
def test_the_counterfactual_forward_runs_after_the_shared_prefix_and_changes_no_score(
    tmp_path, monkeypatch, arch, basis, site, method
):
    h, ds = tiny_handle(arch), dataset(last_token=True)  # 3 shared leading positions of 5
    if basis != "neurons":
        write_dictionary(tmp_path, h, basis=basis, site=site)
    dictionary = f"path:{tmp_path}" if basis != "neurons" else None
    bases = [make_basis(h, basis, site, dictionary), make_basis(h, "neurons", "mlp_acts")]
    train = encode(ds, h.tokenizer)["train"]
    monkeypatch.setattr(load, "_WORKERS_CHOSEN", [1])  # the hook below sees every forward
    lengths = []
    hook = h.model.get_input_embeddings().register_forward_hook(
        lambda _m, args, _out: lengths.append(args[0].shape[1])
    )
    try:
        reused = attribute_many(h, bases, train, method, batch_size=8)
    finally:
        hook.remove()
    assert sorted(set(lengths)) == [2, 5]  # each batch: the whole clean prompt, x′ from 3 on
    whole_cf = functools.partial(gradients._gradient_products, reuse_prefix=False)
    monkeypatch.setattr(gradients, "_gradient_products", whole_cf)
    whole = attribute_many(h, bases, train, method, batch_size=8)
    for a, b in zip(reused, whole, strict=True):
        assert torch.equal(a.units, b.units)
        assert (a.error is None and b.error is None) or torch.equal(a.error, b.error)
    assert reused[0].units.abs().sum() > 0
