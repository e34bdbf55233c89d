"""The cells of one test split share their sweep inputs (bench.sweep.inputs): the clean
prompts' prefix forward runs once, and each basis's ablation values once; every metric is the
same, bit for bit, as when each cell computes its own."""

from __future__ import annotations

import numpy as np
import pytest
from _tiny_data import dataset, tiny_handle
from test_bases import write_dictionary

from bench.bases import make_basis
from bench.cell import Cell
from bench.pipeline import measure, prepare
from bench.suite.state import Suite
from bench.sweep import inputs as inputs_module
from bench.sweep.inputs import SweepInputs
from bench.sweep.references import get_reference

FIELDS = ("m_faith", "m_comp", "m_full", "m_empty", "m_nonzero")


@pytest.mark.parametrize("ablation", ["patch", "mean"])
def test_cells_of_one_split_share_the_prefix_and_the_values_and_change_no_metric(
    tmp_path, monkeypatch, ablation
):
    h, ds = tiny_handle("llama"), dataset(last_token=True)  # 3 shared positions of 5
    write_dictionary(tmp_path, h, basis="sae", site="mlp_out")
    bases = [("neurons", "mlp_acts", None), ("sae", "mlp_out", f"path:{tmp_path}")]
    preps = [  # each basis built once, as a suite builds it
        prepare(h, ds, Cell(basis=name, site=site, dictionary=dictionary, method=method,
                            ablation=ablation), basis)
        for name, site, dictionary in bases
        for basis in [make_basis(h, name, site, dictionary)]
        for method in ("atp", "random")
    ]  # fmt: skip
    alone = [measure(p).metrics for p in preps]  # each cell computes its own inputs
    calls = []
    reference = type(get_reference(ablation))
    real_values, real_prefix = reference.ablation, inputs_module.clean_prefix
    monkeypatch.setattr(
        reference, "ablation", lambda self, *a: calls.append("values") or real_values(self, *a)
    )
    monkeypatch.setattr(inputs_module, "clean_prefix",
                        lambda *a: calls.append("prefix") or real_prefix(*a))  # fmt: skip
    inputs = SweepInputs(h, preps[0].test)
    shared = [measure(p, inputs=inputs).metrics for p in preps]
    for a, b in zip(alone, shared, strict=True):
        for field in FIELDS:
            assert np.array_equal(getattr(a, field), getattr(b, field)), field
        assert a.n_forwards == b.n_forwards and a.prefix_reused == b.prefix_reused
    # once per basis, not per cell; the prefix once where the reference lets it be reused
    prefix = ["prefix"] if ablation == "patch" else []
    assert sorted(calls) == sorted(["values", "values", *prefix])
    assert alone[0].prefix_reused == (3 if ablation == "patch" else 0)


def test_a_suite_keeps_the_inputs_of_its_last_dataset_only():
    h = tiny_handle("llama")
    suite = Suite()
    prep = prepare(h, dataset(), Cell(method="atp"))
    first = suite.inputs(Cell(task="ioi", method="atp"), prep)
    assert suite.inputs(Cell(task="ioi", method="relp"), prep) is first
    assert suite.inputs(Cell(task="ioi", site="mlp_out"), prep) is first
    other = suite.inputs(Cell(task="capitals"), prep)
    assert other is not first and list(suite.sweep_inputs.values()) == [other]
