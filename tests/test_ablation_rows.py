"""A dictionary's encoder and decoders run only on the rows where some node is ablated
(bench.sweep.units.unit_ablation): every mask gives the metric of ablating every row."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny_data import dataset, tiny_handle
from test_bases import tiny_basis, write_dictionary
from test_replicas import one_thread

from bench.bases import make_basis
from bench.model.interventions import intervene
from bench.sweep.references import ablation_values
from bench.sweep.scores import size_grid
from bench.sweep.sweep import _same_as, evaluate, node_ranks
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


def test_masks_keeping_the_same_nodes_are_one_mask():
    lo, hi = 0, 99  # the ranks a mask can ablate
    assert _same_as((0, True), lo, hi) == (0, True)  # keep none: m(∅)
    assert _same_as((100, False), lo, hi) == (0, True)  # ablate all: m(∅) again
    assert _same_as((100, True), lo, hi) == (100, True)  # keep all
    assert _same_as((250, True), lo, hi) == (100, True)
    assert _same_as((0, False), lo, hi) == (100, True)  # ablate none: keep all
    assert _same_as((7, True), lo, hi) == (7, True) and _same_as((7, False), 0, 99) == (7, False)
    assert _same_as((150, True), 0, 149) == (150, True)  # units ranked below error nodes kept


@pytest.mark.parametrize(
    "arch,basis,site", [("llama", "sae", "mlp_out"), ("gpt2", "neurons", "resid")]
)
def test_each_distinct_mask_runs_once_and_all_kept_is_still_measured(tmp_path, arch, basis, site):
    h, ds = tiny_handle(arch), dataset(last_token=True)
    b = tiny_basis(tmp_path, h, basis, site)
    test = encode(ds, h.tokenizer)["test"]
    n = h.sites.n_layers * test["clean_ids"].shape[1] * (b.n_units() + int(b.has_error))
    ranks = node_ranks(torch.randn(n, generator=torch.Generator().manual_seed(0)))
    values, grid = ablation_values(h, b, test, "patch"), size_grid(n)
    kw = {"k_nonzero": n, "reuse_prefix": True, "workers": 1}  # every node non-zero: random
    with one_thread():
        sm = evaluate(h, b, test, ranks, grid, values, b.has_error, **kw)
    assert sm.n_forwards == 2 * len(grid) + 2  # 2 of the 2G + 2 masks are repeats, + 2 forwards
    np.testing.assert_array_equal(sm.m_comp[-1], sm.m_empty)  # M∖C_n = ∅
    np.testing.assert_array_equal(sm.m_nonzero, sm.m_faith[-1])  # C_n = all nodes
    np.testing.assert_allclose(sm.m_faith[-1], sm.m_full, rtol=0, atol=1e-5)  # measured: F(all)=1
    assert np.abs(sm.m_faith[-1] - sm.m_empty).max() > 1e-3  # the masks matter
