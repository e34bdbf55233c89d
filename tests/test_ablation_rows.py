"""A dictionary's encoder and decoders run only on the rows where some node is ablated
(bench.sweep.units.unit_ablation): every mask gives the metric of ablating every row."""

from __future__ import annotations

import pytest
import torch
from _tiny_data import dataset, tiny_handle
from test_bases import write_dictionary

from bench.bases import make_basis
from bench.model.interventions import intervene
from bench.sweep.references import ablation_values
from bench.sweep.units import _ablated, metric, unit_ablation
from tasks.validate import encode


def _every_row(h, basis, ids, args, keep, keep_err, values):
    """The masks applied to every row by hand: one replacement per layer, no row skipped."""
    s = keep.shape[0]
    layers = range(h.sites.n_layers)
    capture = [] if basis.read_site == basis.site else [(basis.read_site, i) for i in layers]
    held = {}

    def make(layer):
        def fn(x):
            src = held["acts"][(basis.read_site, layer)] if capture else x
            shaped = (s, x.shape[0] // s, x.shape[1], -1)
            err = keep_err[:, layer, None, :, None] if keep_err is not None else None
            out = _ablated(basis, layer, x.view(shaped), src.view(shaped), keep[:, layer, None],
                           values.units[layer], err,
                           values.error[layer] if err is not None else None)  # fmt: skip
            return out.view_as(x)

        return fn

    replace = {(basis.site, layer): make(layer) for layer in range(h.sites.n_layers)}
    with torch.no_grad(), intervene(h.sites, capture=capture, replace=replace) as acts:
        held["acts"] = acts
        return metric(h, ids.repeat(s, 1), *args)


@pytest.mark.parametrize(
    "arch,basis,site,errors",
    [("llama", "sae", "mlp_out", True), ("gemma3", "sae", "mlp_out", False),
     ("llama", "transcoder", "mlp_out", True), ("gpt2", "sae", "resid", True)],
)  # fmt: skip
@pytest.mark.parametrize("reference", ["patch", "mean"])
def test_skipping_untouched_rows_changes_no_metric(tmp_path, arch, basis, site, errors, reference):
    h, ds = tiny_handle(arch), dataset()
    write_dictionary(tmp_path, h, basis=basis, site=site)
    b = make_basis(h, basis, site, f"path:{tmp_path}")
    test = encode(ds, h.tokenizer)["test"]
    values = ablation_values(h, b, test, reference)
    n_layers, seq, n = h.sites.n_layers, test["clean_ids"].shape[1], b.n_units()
    g = torch.Generator().manual_seed(0)
    # 3 masks: most rows untouched, a few latents (and error nodes) ablated here and there
    keep = torch.rand((3, n_layers, seq, n), generator=g) > 0.02
    keep[0] = True
    keep[0, 1, 2, 5] = False  # mask 0 touches one row of one layer only
    keep_err = torch.rand((3, n_layers, seq), generator=g) > 0.3 if errors else None
    if errors:
        keep_err[0] = True
    args = (test["clean_answer_id"], test["cf_answer_id"])
    ids = test["clean_ids"]
    with torch.no_grad(), unit_ablation(h, b, keep, keep_err, values):
        skipped = metric(h, ids.repeat(3, 1), *args)
    every = _every_row(h, b, ids, args, keep, keep_err, values)
    torch.testing.assert_close(skipped, every, rtol=0, atol=1e-6)
    with torch.no_grad():
        plain = metric(h, ids, *args)
    assert (every.view(3, -1)[1] - plain).abs().max() > 1e-4  # the ablations matter
