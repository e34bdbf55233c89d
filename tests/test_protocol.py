"""The protocol (bench.protocol): one reference for attribution and ablation, on tiny models.

Ground truth for every matched protocol: a node equal to its reference on every pair scores
exactly 0 *and* has no effect when ablated; F(all) = 1 and F(none) = 0 for every protocol ×
error mode × basis; error nodes are counted and ranked only when ablated; the consistency
check reads 1 under a matched protocol and clearly less under the unmatched one.
"""

from __future__ import annotations

import pytest
import torch
from _tiny_data import dataset, tiny_handle
from test_bases import write_dictionary

from bench import run_sweep
from bench.attribution.attribute import attribute
from bench.attribution.exact import exact_scores
from bench.bases import NeuronBasis, make_basis
from bench.protocol import PROTOCOLS, get_protocol
from bench.results.result import SweepResult
from bench.sweep.references import ablation_values, batch_reference, mean_units
from bench.sweep.units import metric, unit_ablation, unit_values
from tasks.validate import encode

MATCHED = ("patch", "mean", "zero")


def _encode(h, ds):
    enc = encode(ds, h.tokenizer)
    return enc["train"], enc["test"]


def _setup(protocol: str, basis_name: str, tmp_path):
    """A tiny model and dataset where some nodes sit at their reference on every pair:
    ``patch``: pairs differ only at the last token (earlier positions equal x′);
    ``mean``: every prompt starts with the same token (position 0 equals its mean);
    ``zero``: a dead neuron (its up-projection row is zero) / a latent that never fires."""
    h = tiny_handle("llama")
    ds = dataset(last_token=True) if protocol == "patch" else dataset()
    if protocol == "zero" and basis_name == "neurons":
        with torch.no_grad():
            for layer in h.model.model.layers:
                layer.mlp.up_proj.weight[7] = 0
    if basis_name == "neurons":
        return h, ds, NeuronBasis(h.sites, "mlp_acts")
    write_dictionary(tmp_path, h)
    return h, ds, make_basis(h, "sae", "mlp_out", f"path:{tmp_path}")


def _at_reference(h, basis, split, kind):
    """[layers, pos, n_units + 1] bool: the node equals its reference on every pair of the
    split (the last column is the error node; False for neuron bases)."""
    with torch.no_grad(), unit_values(h, basis) as clean:
        h.model(input_ids=split["clean_ids"])
    means = mean_units(h, basis, split["cf_ids"]) if kind == "mean" else None
    ref = batch_reference(h, basis, split, kind, dict(clean), means)
    out = []
    for layer in range(h.sites.n_layers):
        units = (clean[layer].units == ref[layer].units).all(0)  # [pos, n]
        if basis.has_error:
            err = (clean[layer].error == ref[layer].error).all(0).all(-1)  # [pos]
        else:
            err = torch.zeros(units.shape[0], dtype=torch.bool)
        out.append(torch.cat([units, err[:, None]], -1))
    return torch.stack(out)


@pytest.mark.parametrize(
    "protocol,basis_name",
    [(p, b) for p in MATCHED for b in ("neurons", "sae")],
)
def test_a_node_at_its_reference_scores_zero_and_ablating_it_changes_nothing(
    tmp_path, protocol, basis_name
):
    h, ds, basis = _setup(protocol, basis_name, tmp_path)
    train, test = _encode(h, ds)
    # nodes at their reference on every train pair (attribution) and test pair (ablation)
    at_ref = _at_reference(h, basis, train, protocol) & _at_reference(h, basis, test, protocol)
    n_units = basis.n_units()
    assert at_ref[..., :n_units].sum() >= 10  # the construction gives the test something
    for method in ("atp", "relp", "ig"):
        sc = attribute(h, basis, train, method, ig_steps=2, reference=protocol)
        assert (sc.units[at_ref[..., :n_units]] == 0).all(), method
        if basis.has_error:
            assert (sc.error[at_ref[..., n_units]] == 0).all(), method
    nodes = at_ref[..., :n_units].nonzero()[:6]  # [6, 3]: (layer, pos, unit)
    exact = exact_scores(h, basis, train, nodes, reference=protocol)
    assert exact.abs().max() < 1e-6  # its patched forwards run a larger batch: float noise

    # mask 0 ablates nothing; masks 1..6 each ablate one node alone; the next ablates all of
    # them at once; the last (a control) ablates the nodes that are *not* at their reference
    values = ablation_values(h, basis, test, get_protocol(protocol).ablation_reference)
    n_layers, seq = h.sites.n_layers, test["clean_ids"].shape[1]
    keep = torch.ones((len(nodes) + 3, n_layers, seq, n_units), dtype=torch.bool)
    for i, (layer, pos, unit) in enumerate(nodes.tolist()):
        keep[i + 1, layer, pos, unit] = False
    keep[-2], keep[-1] = ~at_ref[..., :n_units], at_ref[..., :n_units]
    keep_err = torch.ones((len(keep), n_layers, seq), dtype=torch.bool)
    if basis.has_error:
        keep_err[-2], keep_err[-1] = ~at_ref[..., n_units], at_ref[..., n_units]
    args = test["clean_answer_id"], test["cf_answer_id"]
    with torch.no_grad():
        m_full = metric(h, test["clean_ids"], *args)
        with unit_ablation(h, basis, keep, keep_err if basis.has_error else None, values):
            m = metric(h, test["clean_ids"].repeat(len(keep), 1), *args).view(len(keep), -1)
    torch.testing.assert_close(m[0], m_full)  # the unablated row is the model
    # Reference values come from a forward of another batch shape, so they match the
    # activations to float rounding, not bit for bit (attribution's do: same shapes).
    torch.testing.assert_close(m[:-1], m[:1].expand_as(m[:-1]), atol=1e-5, rtol=0)
    assert (m[-1] - m[0]).abs().max() > 1e-3  # the control: the other nodes do matter


@pytest.mark.parametrize("arch,site", [("llama", "mlp_acts"), ("gpt2", "mlp_acts")])
def test_atp_and_ig_against_the_mean_equal_exact_mean_patching_where_linear(arch, site):
    # With the final norm removed, the last layer's site reaches the logits linearly.
    h, ds = tiny_handle(arch), dataset(n_train=8)
    if arch == "llama":
        h.model.model.norm = torch.nn.Identity()
    else:
        h.model.transformer.ln_f = torch.nn.Identity()
    train, _ = _encode(h, ds)
    basis = NeuronBasis(h.sites, site)
    last = h.sites.n_layers - 1
    atp = attribute(h, basis, train, "atp", reference="mean").units[last]  # [pos, n]
    ig = attribute(h, basis, train, "ig", ig_steps=3, reference="mean").units[last]
    patch = attribute(h, basis, train, "atp", reference="patch").units[last]
    nodes = torch.cartesian_prod(
        torch.tensor([last]), torch.arange(5), torch.arange(basis.n_units())
    )
    exact = exact_scores(h, basis, train, nodes, nodes_per_forward=64, reference="mean")
    exact = exact.view_as(atp)
    assert exact.abs().max() > 1e-3
    torch.testing.assert_close(atp, exact, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ig, exact, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(atp, patch)  # the reference matters


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
@pytest.mark.parametrize(
    "basis_name,error_mode", [("neurons", "ablate"), ("sae", "ablate"), ("sae", "keep")]
)
def test_faithfulness_is_one_for_all_and_zero_for_none(tmp_path, protocol, basis_name, error_mode):
    h, ds = tiny_handle("llama"), dataset()
    kw = {"basis": "neurons", "site": "mlp_acts"}
    if basis_name == "sae":
        write_dictionary(tmp_path, h)
        kw = {"basis": "sae", "site": "mlp_out", "dictionary": f"path:{tmp_path}"}
    res = run_sweep(h, ds, method="atp", ablation=protocol, error_mode=error_mode,
                    n_bootstrap=50, bare_torch_timings=False, **kw)  # fmt: skip
    assert res.sizes[-1] == res.n_nodes
    assert abs(res.faithfulness[-1] - 1) <= 1e-5  # F(all) = 1
    assert abs(res.completeness[-1]) <= 1e-5  # all nodes ablated = the empty circuit: 0
    assert res.m_full != pytest.approx(res.m_empty)
    p = res.protocol
    assert p["name"] == protocol and p["matched"] == (protocol != "marks")
    assert p["attribution_reference"] == get_protocol(protocol).attribution_reference
    assert p["ablation_reference"] == get_protocol(protocol).ablation_reference
    assert p["error_mode"] == (error_mode if basis_name == "sae" else None)


def test_error_nodes_are_counted_and_ranked_only_when_ablated(tmp_path):
    h, ds = tiny_handle("llama"), dataset()
    write_dictionary(tmp_path, h)
    kw = dict(basis="sae", site="mlp_out", dictionary=f"path:{tmp_path}", method="atp",
              n_bootstrap=50, bare_torch_timings=False)  # fmt: skip
    ablate, keep = run_sweep(h, ds, error_mode="ablate", **kw), run_sweep(h, ds, **kw | {
        "error_mode": "keep"})  # fmt: skip
    n_units, n_err = 2 * 5 * 48, 2 * 5  # layers × pos × latents; layers × pos
    assert keep.n_nodes == n_units and ablate.n_nodes == n_units + n_err
    assert ablate.sizes[-1] == n_units + n_err and keep.sizes[-1] == n_units
    # error nodes with a non-zero score enter the ranking (and the consistency circuit)
    basis = make_basis(h, "sae", "mlp_out", f"path:{tmp_path}")
    err = attribute(h, basis, _encode(h, ds)[0], "atp").error
    n_err_nonzero = int((err != 0).sum())
    assert n_err_nonzero >= 3
    assert ablate.consistency["n_nonzero"] - keep.consistency["n_nonzero"] == n_err_nonzero
    assert (
        ablate.error_mode == "ablate" and "upper bound" in keep.protocol["error_mode_description"]
    )


def _xor_task():
    """A model trained to answer from two positions: " is" when the subject's number and the
    place's group disagree, else " are". Pairs differ only at the last token (the place), so
    against x′ every earlier position scores exactly 0, yet the subject at position 1 varies
    across pairs and the answer needs it. Layer 0's attention output is held at zero, so the
    subject reaches the last position only through layer 1's attention to the block output
    (``resid``) of layer 0 at position 1: a zero-scored node."""
    from _tiny_data import NOUNS, PLACES

    from tasks.dataset import ContrastiveDataset, Pair

    h = tiny_handle("llama")
    group = {p: i % 2 for i, p in enumerate(PLACES)}  # car, tree: 0; house, road: 1
    pairs = []
    for sg, pl in NOUNS:
        for number, noun in enumerate((sg, pl)):
            for place in PLACES:
                other = next(q for q in PLACES if group[q] != group[place])
                answer = {q: " is" if number != group[q] else " are" for q in (place, other)}
                pairs.append(Pair(f"The {noun} near the {place}", f"The {noun} near the {other}",
                                  answer[place], answer[other]))  # fmt: skip
    ds = ContrastiveDataset(task="tiny_xor", version="test", seed=0, tokenizer="tiny-bpe",
                            seq_len=5, train=pairs, test=pairs[::3])  # fmt: skip
    enc = encode(ds, h.tokenizer)["train"]
    model = h.model.requires_grad_(True).train()
    o_proj = model.model.layers[0].self_attn.o_proj
    with torch.no_grad():
        o_proj.weight.zero_()
    o_proj.requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    torch.manual_seed(0)
    for _ in range(150):
        logits = model(input_ids=enc["clean_ids"]).logits[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, enc["clean_answer_id"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().requires_grad_(False)
    return h, ds


def test_consistency_check_reads_one_when_matched_and_not_when_unmatched():
    h, ds = _xor_task()
    kw = dict(site="resid", method="relp", n_bootstrap=50, bare_torch_timings=False)
    for protocol in MATCHED:
        res = run_sweep(h, ds, ablation=protocol, **kw)
        c = res.consistency
        assert c["f_nonzero"] == pytest.approx(1, abs=1e-3), protocol
        assert 0 <= c["zero_score_fraction"] < 1
    res = run_sweep(h, ds, ablation="marks", **kw)
    c = res.consistency
    assert res.m_full > 2  # the model learned the task
    assert c["zero_score_fraction"] >= 0.75  # positions 0..3 of 5 score exactly 0
    # mean-ablating them destroys the subject, which the answer needs
    assert c["f_nonzero"] < 0.5 and not res.protocol["matched"]


def test_old_results_load_with_their_protocol(tmp_path):
    h, ds = tiny_handle("llama"), dataset()
    res = run_sweep(h, ds, method="atp", n_bootstrap=50, bare_torch_timings=False)
    old = res.to_dict()
    old["schema_version"], old["ablation"] = 1, "mean"
    del old["protocol"], old["consistency"]
    back = SweepResult.from_dict(old)
    assert back.protocol["matched"] is False and back.protocol["attribution_reference"] == "patch"
