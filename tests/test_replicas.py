"""Independent forwards side by side (bench.model.replicas): replicas share the weights but not
the hooks; the sweep's mask chunks and attribution's batches give the same numbers, bit for
bit, on three workers as one after another on one thread (each worker runs one thread; in
float32 the thread count alone can move the last bit, so that is held fixed here)."""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest
import torch
from _tiny_data import dataset, tiny_handle
from test_bases import tiny_basis, write_dictionary

import bench.model.load as load
from bench.attribution.attribute import attribute_many
from bench.bases import make_basis
from bench.model.interventions import intervene
from bench.model.replicas import parallel_map, replicas
from bench.sweep.references import ablation_values
from bench.sweep.scores import size_grid
from bench.sweep.sweep import evaluate, node_ranks
from bench.sweep.units import metric
from tasks.validate import encode


@contextlib.contextmanager
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_replicas_share_every_weight_and_none_of_the_hooks():
    h = tiny_handle("llama")
    hs = replicas(h, 3)
    assert hs[0] is h and len({id(x.model) for x in hs}) == 3
    assert replicas(h, 3)[1] is hs[1]  # built once per model
    for other in hs[1:]:
        for (name, p), q in zip(h.model.named_parameters(), other.model.parameters(), strict=True):
            assert p is q, name  # shared, not copied
    ids = encode(dataset(), h.tokenizer)["test"]
    args = (ids["clean_ids"], ids["clean_answer_id"], ids["cf_answer_id"])
    with torch.no_grad():
        plain = metric(h, *args)
        zero = {("mlp_out", 0): lambda x: torch.zeros_like(x)}
        with intervene(hs[1].sites, replace=zero):
            assert torch.equal(metric(h, *args), plain)  # the handle's forward: untouched
            assert torch.equal(metric(hs[2], *args), plain)
            assert not torch.equal(metric(hs[1], *args), plain)  # the replica's: changed
        assert torch.equal(metric(hs[1], *args), plain)  # and its hooks are gone


def test_parallel_map_keeps_order_uses_one_thread_per_worker_and_raises():
    h = tiny_handle("llama")
    before = torch.get_num_threads()
    seen = []

    def fn(handle, item):
        seen.append((threading.get_ident(), id(handle.model)))
        return item * 10, torch.get_num_threads()

    done = []
    out = parallel_map(h, fn, list(range(7)), workers=3, on_done=lambda: done.append(1))
    assert [o[0] for o in out] == [i * 10 for i in range(7)] and len(done) == 7
    assert {o[1] for o in out} == {1}  # each worker runs one intra-op thread
    assert torch.get_num_threads() == before  # the caller's threads are as they were
    assert len({model for _, model in seen}) <= 3
    assert parallel_map(h, fn, [1, 2], workers=1)[1][1] == before  # serial: the caller's threads

    def bad(handle, item):
        if item == 3:
            raise ValueError("item 3 is bad")
        return item

    with pytest.raises(ValueError, match="item 3 is bad"):
        parallel_map(h, bad, list(range(6)), workers=2)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    "arch,basis,site",
    [("llama", "neurons", "mlp_acts"), ("gemma3", "sae", "mlp_out"),
     ("gpt2", "neurons", "resid"), ("llama", "transcoder", "mlp_out")],
)  # fmt: skip
@pytest.mark.parametrize("reuse_prefix", [False, True])
def test_the_sweep_gives_the_same_metrics_on_one_worker_and_on_three(
    tmp_path, arch, basis, site, reuse_prefix
):
    h, ds = tiny_handle(arch), dataset(last_token=True)
    b = tiny_basis(tmp_path, h, basis, site)
    test = encode(ds, h.tokenizer)["test"]
    n = h.sites.n_layers * test["clean_ids"].shape[1] * (b.n_units() + int(b.has_error))
    ranks = node_ranks(torch.randn(n, generator=torch.Generator().manual_seed(0)))
    values = ablation_values(h, b, test, "patch")
    kw = {"masks_per_forward": 3, "k_nonzero": n // 3, "reuse_prefix": reuse_prefix}
    with one_thread():  # the caller's own forwards (m(M)) too
        one, three = (
            evaluate(h, b, test, ranks, size_grid(n), values, b.has_error, workers=w, **kw)
            for w in (1, 3)
        )
    for field in ("m_full", "m_faith", "m_comp", "m_empty", "m_nonzero"):
        assert np.array_equal(getattr(one, field), getattr(three, field)), field
    assert np.abs(one.m_faith[0] - one.m_faith[-1]).max() > 1e-3  # the masks matter


@pytest.mark.parametrize("arch,method", [("llama", "relp"), ("gemma3", "atp"), ("gpt2", "relp")])
def test_attribution_gives_the_same_scores_on_one_worker_and_on_three(
    tmp_path, monkeypatch, arch, method
):
    h, ds = tiny_handle(arch), dataset(n_train=20)
    site = "resid" if arch == "gpt2" else "mlp_out"
    write_dictionary(tmp_path, h, basis="sae", site=site)
    bases = [make_basis(h, "sae", site, f"path:{tmp_path}"), make_basis(h, "neurons", "mlp_acts")]
    train = encode(ds, h.tokenizer)["train"]
    scores = []
    for workers in (1, 3):
        monkeypatch.setattr(load, "_WORKERS_CHOSEN", [workers])
        with one_thread():
            scores.append(attribute_many(h, bases, train, method, batch_size=6))  # 4 batches
    for a, b in zip(*scores, strict=True):
        assert torch.equal(a.units, b.units)
        assert (a.error is None and b.error is None) or torch.equal(a.error, b.error)
    assert scores[0][0].units.abs().sum() > 0
