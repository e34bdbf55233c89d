"""Under ``patch``, a dictionary codes the counterfactual prompts only where they differ from
the clean ones (bench.attribution.gradients._counterfactual_units): the scores are those of
coding every row."""

from __future__ import annotations

import pytest
import torch
from _tiny_data import dataset, tiny_handle
from test_bases import write_dictionary

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
    skipped = attribute_many(h, bases, train, method, batch_size=8)
    assert calls and min(calls) < 1.0  # some layer had rows it did not code
    monkeypatch.setattr(gradients, "_counterfactual_units", _every_row)
    every = attribute_many(h, bases, train, method, batch_size=8)
    for a, b in zip(skipped, every, strict=True):
        assert torch.equal(a.units, b.units)
        assert (a.error is None and b.error is None) or torch.equal(a.error, b.error)
    assert skipped[0].units.abs().sum() > 0 and skipped[0].error.abs().sum() > 0
