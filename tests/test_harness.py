"""The harness against ground truth on tiny random models: attribution, RelP, sweeps, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _tiny_data import dataset, tiny_handle

from bench import intervene, run_sweep
from bench.attribution.attribute import attribute
from bench.attribution.exact import exact_scores
from bench.bases import NeuronBasis
from bench.model.relp import relp_replacement
from bench.model.tiny import TINY_ARCHS
from bench.results.result import ResultSchemaError, SweepResult
from bench.sweep.scores import size_grid
from bench.sweep.units import metric, unit_leaves
from tasks.validate import encode


def _split(h, ds, name="train"):
    return encode(ds, h.tokenizer)[name]


def test_exact_equals_brute_force_single_node_patching():
    h, ds = tiny_handle("llama"), dataset(n_train=6)
    tr = _split(h, ds)
    basis = NeuronBasis(h.sites, "mlp_acts")
    nodes = torch.tensor([[0, 1, 3], [0, 4, 10], [1, 1, 0], [1, 4, 63], [1, 2, 5]])
    got = exact_scores(h, basis, tr, nodes, batch_size=4, nodes_per_forward=2)
    args = tr["clean_answer_id"], tr["cf_answer_id"]
    with torch.no_grad():
        base = metric(h, tr["clean_ids"], *args)
    for (layer, pos, unit), value in zip(nodes.tolist(), got, strict=True):
        key = ("mlp_acts", layer)
        with torch.no_grad(), intervene(h.sites, capture=[key]) as cf:
            h.model(tr["cf_ids"])
        cf_val = cf[key][:, pos, unit]

        def patch(x, pos=pos, unit=unit, cf_val=cf_val):
            x = x.clone()
            x[:, pos, unit] = cf_val
            return x

        with torch.no_grad(), intervene(h.sites, replace={key: patch}):
            patched = metric(h, tr["clean_ids"], *args)
        torch.testing.assert_close(value, (base - patched).mean(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "arch,site", [("llama", "mlp_acts"), ("gpt2", "mlp_acts"), ("llama", "mlp_out")]
)
def test_atp_and_ig_equal_exact_where_the_metric_is_linear_in_the_unit(arch, site):
    # With the final norm removed, the last layer's site reaches the logits through linear
    # maps only, so first-order attribution is exact.
    h, ds = tiny_handle(arch), dataset(n_train=8)
    if arch == "llama":
        h.model.model.norm = torch.nn.Identity()
    else:
        h.model.transformer.ln_f = torch.nn.Identity()
    tr = _split(h, ds)
    basis = NeuronBasis(h.sites, site)
    last = h.sites.n_layers - 1
    atp = attribute(h, basis, tr, "atp").units[last]  # [pos, n]
    ig = attribute(h, basis, tr, "ig", ig_steps=3).units[last]
    nodes = torch.cartesian_prod(
        torch.tensor([last]), torch.arange(5), torch.arange(basis.n_units())
    )
    exact = exact_scores(h, basis, tr, nodes, nodes_per_forward=64).view_as(atp)
    assert exact.abs().max() > 1e-3  # the check has something to compare
    torch.testing.assert_close(atp, exact, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ig, exact, atol=1e-5, rtol=1e-4)


def _n_hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_relp_replacement_gives_the_models_logits(arch):
    h, ds = tiny_handle(arch), dataset()
    ids = _split(h, ds)["clean_ids"]
    with torch.no_grad():
        base = h.model(ids).logits
    basis = NeuronBasis(h.sites, "mlp_acts")
    before = _n_hooks(h.model)
    with relp_replacement(h.sites), unit_leaves(h, basis) as leaves:
        out = h.model(ids).logits
    assert leaves[0].units.requires_grad
    torch.testing.assert_close(out, base, atol=0, rtol=0)  # bit-identical, mask included
    assert _n_hooks(h.model) == before


@pytest.mark.parametrize("arch", TINY_ARCHS)
@pytest.mark.parametrize("method", ["atp", "relp"])
def test_positions_before_the_first_difference_score_exactly_zero(arch, method):
    h, ds = tiny_handle(arch), dataset(last_token=True)
    tr = _split(h, ds)
    assert (tr["clean_ids"][:, :-1] == tr["cf_ids"][:, :-1]).all()
    scores = attribute(h, NeuronBasis(h.sites, "mlp_acts"), tr, method).units
    assert (scores[:, :-1] == 0).all()  # a leaked causal mask would make these non-zero
    assert scores[:, -1].abs().sum() > 0


def test_relp_differs_from_atp_and_follows_the_gate_rule():
    h, ds = tiny_handle("llama"), dataset(n_train=8)
    tr = _split(h, ds)
    basis = NeuronBasis(h.sites, "mlp_acts")
    relp, atp = attribute(h, basis, tr, "relp").units, attribute(h, basis, tr, "atp").units
    assert not torch.allclose(relp, atp)
    # Gate rule in isolation: d(product)/d(up) is half of act(gate) in the replacement.
    mlp = h.model.model.layers[0].mlp
    x = torch.randn(1, 1, 32)
    up_out = {}
    hook = mlp.up_proj.register_forward_hook(
        lambda m, a, o: (o.retain_grad(), up_out.setdefault("u", o))[0]
    )
    try:
        with relp_replacement(h.sites):
            xin = x.clone().requires_grad_(True)
            y = mlp(xin)
            grad_p = torch.autograd.grad(y.sum(), up_out["u"], retain_graph=True)[0]
    finally:
        hook.remove()
    expected = 0.5 * mlp.act_fn(mlp.gate_proj(x)) * mlp.down_proj.weight.sum(0)
    torch.testing.assert_close(grad_p, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
@pytest.mark.parametrize("ablation", ["mean", "zero", "patch"])
@pytest.mark.parametrize("site", ["mlp_acts", "mlp_out", "resid", "attn_out"])
def test_faithfulness_is_one_for_all_and_zero_for_none(arch, ablation, site):
    h, ds = tiny_handle(arch), dataset()
    res = run_sweep(h, ds, site=site, method="atp", ablation=ablation, n_bootstrap=50,
                    bare_torch_timings=False)  # fmt: skip
    assert res.sizes[-1] == res.n_nodes
    assert abs(res.faithfulness[-1] - 1) <= 1e-5  # F(all) = 1
    assert abs(res.completeness[-1]) <= 1e-5  # all nodes ablated = the empty circuit: 0
    assert res.m_full != pytest.approx(res.m_empty)


def test_two_bases_share_the_size_grid():
    h, ds = tiny_handle("llama"), dataset()
    a = run_sweep(h, ds, site="mlp_acts", method="random", n_bootstrap=50, bare_torch_timings=False)
    b = run_sweep(h, ds, site="mlp_out", method="random", n_bootstrap=50, bare_torch_timings=False)
    shared = [k for k in a.sizes if k < b.n_nodes]
    assert b.sizes[: len(shared)] == shared and b.sizes[-1] == b.n_nodes
    assert a.sizes == size_grid(a.n_nodes) and len(a.sizes) == len(a.faithfulness)


def test_sweep_result_round_trip_and_fields(tmp_path):
    h, ds = tiny_handle("gpt2"), dataset()
    res = run_sweep(h, ds, site="mlp_acts", method="relp", n_bootstrap=100)
    path = tmp_path / "r.json"
    res.to_json(path)
    again = SweepResult.from_json(path)
    assert again == res
    lo, hi = res.k_at_0_8_ci
    assert lo <= res.k_at_0_8 <= hi and res.auc_ci[0] <= res.auc <= res.auc_ci[1]
    for f, (lo, hi) in zip(res.faithfulness, res.faithfulness_ci, strict=True):
        assert lo - 1e-9 <= f <= hi + 1e-9
    for key in ("attribution_ratio", "sweep_ratio", "plain_forward_s", "lean_fwd_fwd_bwd_s"):
        assert res.timings[key] > 0
    assert res.versions["torch"] and res.seed == 0
    data = json.loads(path.read_text())
    data["schema_version"] = 99
    with pytest.raises(ResultSchemaError, match="newer"):
        SweepResult.from_dict(data)
    del data["sizes"]
    data["schema_version"] = 1
    with pytest.raises(ResultSchemaError, match="missing field.*sizes"):
        SweepResult.from_dict(data)


def test_random_ranking_is_seeded():
    h, ds = tiny_handle("llama"), dataset()
    tr = _split(h, ds)
    basis = NeuronBasis(h.sites, "mlp_acts")
    a, b = attribute(h, basis, tr, "random", seed=1), attribute(h, basis, tr, "random", seed=1)
    assert torch.equal(a.units, b.units)
    assert not torch.equal(a.units, attribute(h, basis, tr, "random", seed=2).units)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"basis": "neuron"}, r"unknown basis 'neuron'.*valid bases: neurons, sae, transcoder"),
        ({"site": "mlp"}, r"unknown site 'mlp'.*valid sites for llama: mlp_acts"),
        ({"method": "attp"}, r"unknown attribution method 'attp'; valid: atp, ig, relp"),
        ({"ablation": "resample"}, r"unknown ablation 'resample'; valid: patch, mean, zero, marks"),
        ({"sizes": [0, 5]}, r"sizes must lie in 1\.\."),
    ],
)
def test_bad_cell_arguments_raise_listing_valid_values(kwargs, message):
    h, ds = tiny_handle("llama"), dataset()
    with pytest.raises(ValueError, match=message):
        run_sweep(h, ds, **kwargs)


def test_empty_dataset_raises():
    h, ds = tiny_handle("llama"), dataset()
    ds.train = []
    with pytest.raises(ValueError, match="both splits must be non-empty"):
        run_sweep(h, ds)


def test_nan_in_activations_is_detected_and_named():
    h, ds = tiny_handle("llama"), dataset()
    with torch.no_grad():
        h.model.model.layers[1].mlp.up_proj.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN in activations at mlp_acts layer 1"):
        run_sweep(h, ds, method="atp")


def test_paired_k_ratio_against_itself_is_exactly_one():
    from bench.sweep.scores import paired_k_ratio

    rng = np.random.default_rng(0)
    sizes = np.array([1, 2, 3, 6, 10, 18, 32])
    m_full, m_empty = rng.normal(5, 1, 20), rng.normal(0, 1, 20)
    m_faith = (
        np.linspace(0, 1, 7)[:, None] * (m_full - m_empty) + m_empty + rng.normal(0, 0.3, (7, 20))
    )
    cell = (sizes, m_faith, m_full, m_empty)
    out = paired_k_ratio(cell, cell, n_resamples=200)
    assert out["ratio"] == 1 and out["ci"] == [1, 1]
    with pytest.raises(ValueError, match="same test pairs"):
        paired_k_ratio(cell, (sizes, m_faith[:, :10], m_full[:10], m_empty[:10]))


def test_dictionary_cells_carry_a_paired_k_ratio_that_reports_read(tmp_path):
    """finish(ratio_denominator=...) puts k@0.8 / k@0.8(neurons) with a paired CI in extra;
    the report uses it as is (not propagated), and it is no wider than the propagated CI."""
    from bench.pipeline import Cell, finish, measure, prepare
    from reports.cells import k_ratios

    h, ds = tiny_handle("llama"), dataset()
    ref_prep = prepare(h, ds, Cell(site="mlp_acts", method="atp"))
    ref_ms = measure(ref_prep)
    neurons = finish(ref_prep, ref_ms, bare_torch_timings=False)
    prep = prepare(h, ds, Cell(site="mlp_out", method="atp"))
    res = finish(prep, measure(prep), False, ratio_denominator=("neurons@mlp_acts", ref_ms))
    given = res.extra["k_ratio_vs_neurons"]
    assert given["ratio"] == pytest.approx(res.k_at_0_8 / neurons.k_at_0_8)
    lo, hi = given["ci"]
    assert lo <= given["ratio"] <= hi and given["paired"]
    lo_p, hi_p = (
        res.k_at_0_8_ci[0] / neurons.k_at_0_8_ci[1],
        res.k_at_0_8_ci[1] / neurons.k_at_0_8_ci[0],
    )
    assert hi - lo <= hi_p - lo_p
    res.basis, res.dictionary = "sae", "local"  # as a dictionary cell would be named
    (kr,) = k_ratios([neurons, res])
    assert not kr.propagated and (kr.ratio, kr.lo, kr.hi) == (given["ratio"], lo, hi)
