"""atp and relp on one split compute u(x) − r(x) once (bench.attribution.differences): the
later pass takes the earlier one's differences, skips the counterfactual forward and every
encode, and gets the scores it gets alone, bit for bit; the store keeps nothing past its
budget or its last use."""

from __future__ import annotations

import pytest
import torch
from _tiny_data import dataset, tiny_handle
from test_bases import write_dictionary

import bench.model.load as load
from bench.attribution import gradients
from bench.attribution.attribute import attribute_many
from bench.attribution.differences import Differences, key
from bench.bases import make_basis
from bench.cell import Cell
from bench.suite.state import Suite
from tasks.validate import encode


@pytest.mark.parametrize(
    "arch,basis,site,ablation",
    [("llama", "sae", "mlp_out", "patch"), ("gemma3", "transcoder", "mlp_out", "patch"),
     ("gpt2", "sae", "resid", "patch"), ("llama", "sae", "mlp_out", "mean")],
)  # fmt: skip
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("first", ["relp", "atp"])
def test_the_later_method_takes_the_differences_and_gets_its_own_scores(
    tmp_path, monkeypatch, arch, basis, site, ablation, workers, first
):
    monkeypatch.setattr(load, "_WORKERS_CHOSEN", [workers])
    h, ds = tiny_handle(arch), dataset(n_train=20)
    write_dictionary(tmp_path, h, basis=basis, site=site)
    bases = [make_basis(h, basis, site, f"path:{tmp_path}"), make_basis(h, "neurons", "mlp_acts")]
    train = encode(ds, h.tokenizer)["train"]
    later = "atp" if first == "relp" else "relp"
    alone = {m: attribute_many(h, bases, train, m, 6, reference=ablation) for m in (first, later)}

    forwards = []
    real = gradients._counterfactual_sites
    monkeypatch.setattr(
        gradients, "_counterfactual_sites", lambda *a: forwards.append(1) or real(*a)
    )
    store = Differences(uses=2)
    shared = {m: attribute_many(h, bases, train, m, 6, reference=ablation, shared=store)
              for m in (first, later)}  # fmt: skip
    for m in (first, later):
        for a, b in zip(alone[m], shared[m], strict=True):
            assert torch.equal(a.units, b.units), m
            assert (a.error is None and b.error is None) or torch.equal(a.error, b.error), m
    assert not torch.equal(alone["atp"][0].units, alone["relp"][0].units)  # the methods differ
    assert len(forwards) == (4 if ablation == "patch" else 0)  # 4 batches, the first pass only
    assert store.held == 0 and not store._entries  # every entry dropped after its last use


def test_the_store_keeps_entries_within_its_budget_for_their_uses():
    t = torch.zeros(4, 8)  # 128 bytes
    store = Differences(uses=3, budget=300)
    assert store.put(("a",), None, [(t, t)])  # 256 bytes
    assert not store.put(("a",), None, [(t, None)])  # held already
    assert not store.put(("b",), None, [(t, None)])  # over budget: a later pass recomputes
    assert store.take(("b",)) is None
    assert store.take(("a",)) is not None and store.held == 256  # one more use left
    assert store.take(("a",)) is not None and store.held == 0
    assert store.take(("a",)) is None
    with pytest.raises(ValueError, match="2 or more passes"):
        Differences(uses=1)
    basis = object()
    assert key(basis, "patch", 32, 0, 3) != key(basis, "patch", 32, 0, 0)  # reuse_prefix off
    assert key(basis, "patch", 32, 0, 3) != key(object(), "patch", 32, 0, 3)


def test_a_suite_shares_differences_only_between_two_selected_joint_methods():
    both = Suite(cells=[Cell(task="ioi", method=m) for m in ("relp", "atp", "random")])
    store = both.differences(Cell(task="ioi", method="relp"))
    assert isinstance(store, Differences) and store.uses == 2
    assert both.differences(Cell(task="ioi", method="atp")) is store
    worker = Suite(cells=both.cells, share_differences=False)  # an xdist worker
    assert worker.differences(Cell(task="ioi", method="relp")) is None
    one = Suite(cells=[Cell(task="ioi", method=m) for m in ("relp", "random")])
    assert one.differences(Cell(task="ioi", method="relp")) is None
    # only the last split's store is kept
    two = Suite(
        cells=[Cell(task=t, method=m) for t in ("ioi", "capitals") for m in ("atp", "relp")]
    )
    first = two.differences(Cell(task="ioi", method="atp"))
    other = two.differences(Cell(task="capitals", method="atp"))
    assert other is not first and list(two.shared_differences.values()) == [other]
