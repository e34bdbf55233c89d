"""The shared prefix (bench.model.prefix): run once per pair instead of once per mask, it gives
the same sweep as running every position per mask, on every architecture and basis kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny_data import dataset, tiny_handle
from test_bases import tiny_basis

from bench import run_sweep
from bench.model.prefix import PrefixCache, shared_prefix
from bench.sweep.references import ablation_values
from bench.sweep.scores import size_grid
from bench.sweep.sweep import evaluate, node_ranks
from bench.sweep.units import metric
from tasks.validate import encode


def test_shared_prefix_is_the_first_differing_position_over_every_pair():
    clean = torch.tensor([[1, 2, 3, 4, 5], [1, 2, 7, 4, 5]])
    assert shared_prefix(clean, torch.tensor([[1, 2, 3, 9, 5], [1, 2, 7, 4, 8]])) == 3
    assert shared_prefix(clean, torch.tensor([[1, 2, 3, 4, 9], [1, 8, 7, 4, 5]])) == 1
    assert shared_prefix(clean, torch.tensor([[6, 2, 3, 4, 5], [1, 2, 7, 4, 5]])) == 0
    # differing only at the last position, or nowhere: two positions always run per mask
    assert shared_prefix(clean, torch.tensor([[1, 2, 3, 4, 9], [1, 2, 7, 4, 9]])) == 3
    assert shared_prefix(clean, clean.clone()) == 3
    assert shared_prefix(clean[:, :1], clean[:, :1]) == 0


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2", "gpt_neox"])
def test_a_cached_prefix_gives_the_whole_prompts_logits(arch):
    h = tiny_handle(arch)
    test = encode(dataset(last_token=True), h.tokenizer)["test"]
    ids, start = test["clean_ids"], shared_prefix(test["clean_ids"], test["cf_ids"])
    assert start == 3
    args = (test["clean_answer_id"], test["cf_answer_id"])
    with torch.no_grad():
        whole = metric(h, ids.repeat(3, 1), *args)
        cached = metric(h, ids[:, start:].repeat(3, 1), *args,
                        past=PrefixCache(h, ids, start).repeated(3))  # fmt: skip
    torch.testing.assert_close(cached, whole, rtol=0, atol=1e-5)


def _both_paths(h, basis, ds, ablate_error: bool):
    test = encode(ds, h.tokenizer)["test"]
    seq = test["clean_ids"].shape[1]
    n = h.sites.n_layers * seq * (basis.n_units() + (1 if ablate_error else 0))
    ranks = node_ranks(torch.randn(n, generator=torch.Generator().manual_seed(0)))
    values = ablation_values(h, basis, test, "patch")
    kw = {"masks_per_forward": 5, "k_nonzero": n // 3}
    grid = size_grid(n)
    return [
        evaluate(h, basis, test, ranks, grid, values, ablate_error, reuse_prefix=reuse, **kw)
        for reuse in (False, True)
    ]


@pytest.mark.parametrize(
    "arch,basis,site,last_token",
    [
        ("llama", "neurons", "mlp_acts", False),
        ("llama", "neurons", "mlp_acts", True),
        ("gemma3", "neurons", "mlp_out", True),
        ("gpt2", "neurons", "resid", True),
        ("gpt_neox", "neurons", "attn_out", True),
        ("llama", "sae", "mlp_out", True),
        ("gemma3", "sae", "mlp_out", False),
        ("llama", "transcoder", "mlp_out", True),
    ],
)
def test_every_mask_gives_the_same_metric_on_either_path(tmp_path, arch, basis, site, last_token):
    h, ds = tiny_handle(arch), dataset(last_token=last_token)
    b = tiny_basis(tmp_path, h, basis, site)
    whole, prefix = _both_paths(h, b, ds, ablate_error=b.has_error)
    assert whole.prefix_reused == 0 and prefix.prefix_reused == (3 if last_token else 1)
    for field in ("m_full", "m_faith", "m_comp", "m_empty", "m_nonzero"):
        np.testing.assert_allclose(getattr(prefix, field), getattr(whole, field), rtol=0,
                                   atol=1e-5, err_msg=field)  # fmt: skip
    assert np.abs(whole.m_faith[0] - whole.m_faith[-1]).max() > 1e-3  # the masks matter
    assert whole.n_forwards == prefix.n_forwards  # sweep_ratio's denominator: unchanged


def test_the_result_says_which_path_ran_and_only_patch_reuses_the_prefix():
    h, ds = tiny_handle("llama"), dataset(last_token=True)
    kw = {"basis": "neurons", "site": "mlp_acts", "method": "atp", "n_bootstrap": 50,
          "bare_torch_timings": False}  # fmt: skip
    reused = run_sweep(h, ds, **kw)
    whole = run_sweep(h, ds, reuse_prefix=False, **kw)
    assert reused.extra["sweep_path"] == {"prefix_reuse": True, "prefix_positions": 3,
                                          "seq_len": 5}  # fmt: skip
    assert whole.extra["sweep_path"]["prefix_reuse"] is False
    np.testing.assert_allclose(reused.faithfulness, whole.faithfulness, rtol=0, atol=1e-6)
    np.testing.assert_allclose(reused.completeness, whole.completeness, rtol=0, atol=1e-6)
    assert reused.flip_rate == whole.flip_rate
    # mean and zero ablate prefix nodes to values they do not hold: every position runs
    for ablation in ("mean", "zero", "marks"):
        res = run_sweep(h, ds, ablation=ablation, **kw)
        assert res.extra["sweep_path"]["prefix_reuse"] is False, ablation
