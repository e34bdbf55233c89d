"""The flip rate (steering by interchange) and circuit composition against hand computations
on tiny random models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny_data import dataset, tiny_handle

from bench import intervene, run_sweep
from bench.sweep.composition import circuit_counts, composition
from bench.sweep.scores import flip_curve, paired_flip_ratio
from bench.sweep.sweep import node_ranks
from bench.sweep.units import metric
from tasks import encode


@pytest.fixture(scope="module")
def cell():
    # llama seed 1: some test pairs flip when every neuron is patched from x′
    h, ds = tiny_handle("llama", seed=1), dataset(n_train=8, n_test=40)
    res = run_sweep(h, ds, basis="neurons", site="mlp_acts", method="atp", n_bootstrap=200,
                    bare_torch_timings=False)  # fmt: skip
    return h, ds, res


def _flips_by_hand(h, test, keep_from_cf: torch.Tensor) -> float:
    """Patch the neurons marked in keep_from_cf [layers, pos, d_mlp] from x′ into x, count the
    pairs the model got right whose prediction flips to the counterfactual answer."""
    args = (test["clean_answer_id"], test["cf_answer_id"])
    layers = range(h.sites.n_layers)
    with torch.no_grad():
        m_full = metric(h, test["clean_ids"], *args)
        with intervene(h.sites, capture=[("mlp_acts", layer) for layer in layers]) as cf:
            h.model(input_ids=test["cf_ids"])
        cf = dict(cf)

        def patch(layer):
            return lambda x: torch.where(keep_from_cf[layer], cf[("mlp_acts", layer)], x)

        replace = {("mlp_acts", layer): patch(layer) for layer in layers}
        with intervene(h.sites, replace=replace):
            m_patched = metric(h, test["clean_ids"], *args)
    return float(((m_full > 0) & (m_patched < 0)).double().mean())


def test_flip_rate_matches_an_interchange_by_hand(cell):
    h, ds, res = cell
    test = encode(ds, h.tokenizer)["test"]
    # k = all: every neuron patched from x′ (not the model on x′: attention and embeddings
    # still read x), the flip rate of m(∅)
    every = torch.ones((h.sites.n_layers, ds.seq_len, h.sites.width("mlp_acts")), dtype=torch.bool)
    assert res.flip_rate[-1] == pytest.approx(_flips_by_hand(h, test, every), abs=1e-12)
    assert res.flip_rate[-1] > 0  # some pairs do flip: the check is not 0 == 0
    # a middle k: only the top-k neurons patched from x′, by hand
    from bench.attribution.attribute import attribute

    train = encode(ds, h.tokenizer)["train"]
    from bench.bases import NeuronBasis

    sc = attribute(h, NeuronBasis(h.sites, "mlp_acts"), train, "atp")
    ranks = node_ranks(sc.flat(include_error=False)).view(sc.units.shape)
    for i in (len(res.sizes) // 2, len(res.sizes) - 3):
        k = res.sizes[i]
        assert res.flip_rate[i] == pytest.approx(_flips_by_hand(h, test, ranks < k), abs=1e-12)
    lo, hi = res.flip_rate_ci[-1]
    assert lo <= res.flip_rate[-1] <= hi


def test_flip_rate_is_zero_without_a_circuit_and_k_at_flip_interpolates():
    m_full = np.array([1.0, 2.0, -1.0, 3.0, 0.5])
    m_comp = np.stack([m_full, [1, -2, -1, 3, 0.5], [-1, -2, -1, -3, 0.5]])  # k = 0, 1, 2
    assert flip_curve(m_comp, m_full).tolist() == [0.0, 0.2, 0.6]  # wrong pair 3 never counts
    sizes = np.array([1, 10, 100])
    m_comp = np.stack([m_full, [-1, -2, -1, 3, 0.5], [-1, -2, -1, -3, -0.5]])  # 0, 0.4, 0.8
    a = (sizes, m_comp, m_full)
    ratio = paired_flip_ratio(a, a, n_resamples=50)
    assert ratio["ratio"] == 1.0


def test_composition_counts_by_hand():
    # 2 layers x 3 positions x 2 units = 12 unit nodes (layer, pos, unit row-major), then 6
    # error nodes (layer, pos)
    n_layers, seq, n_units = 2, 3, 2
    ranks = np.random.default_rng(0).permutation(18)
    for k in (1, 4, 9, 18):
        layer, position, errors = [0, 0], [0, 0, 0], 0
        for node in range(18):
            if ranks[node] >= k:
                continue
            if node < 12:
                layer[node // 6] += 1
                position[(node // 2) % 3] += 1
            else:
                errors += 1
                layer[(node - 12) // 3] += 1
                position[(node - 12) % 3] += 1
        counts = circuit_counts(ranks, k, n_layers, seq, n_units)
        assert counts["error_nodes"] == errors and counts["k"] == k
        assert counts["by_layer"] == layer and counts["by_position"] == position
        assert counts["error_share"] == errors / k
    comp = composition(ranks, [1, 4, 18], 3.2, n_layers, seq, n_units)
    assert comp["k_at_0_8"] == circuit_counts(ranks, 4, n_layers, seq, n_units)  # ⌈3.2⌉
    assert comp["error_nodes_per_size"] == [
        circuit_counts(ranks, k, n_layers, seq, n_units)["error_nodes"] for k in (1, 4, 18)
    ]
    assert composition(ranks, [1], None, n_layers, seq, n_units)["k_at_0_8"] is None


def test_every_result_carries_flip_rate_and_composition(cell):
    _, ds, res = cell
    assert len(res.flip_rate) == len(res.flip_rate_ci) == len(res.sizes)
    comp = res.composition["k_at_0_8"]
    assert comp["k"] == int(np.ceil(res.k_at_0_8)) and comp["error_nodes"] == 0  # neurons
    assert sum(comp["by_layer"]) == comp["k"] and len(comp["by_position"]) == ds.seq_len
    assert res.composition["error_nodes_per_size"] == [0] * len(res.sizes)
