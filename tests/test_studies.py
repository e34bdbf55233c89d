"""The paper's case studies per basis (python -m bench steer|auroc) on tiny random models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _tiny_data import dataset, tiny_handle
from test_bases import write_dictionary

from bench import intervene
from bench.bases import NeuronBasis, make_basis
from bench.studies.auroc import auroc, one_vs_rest
from bench.studies.steer import steer, top_units
from tasks import encode, get_task


@pytest.fixture(scope="module")
def handle():
    return tiny_handle("llama")


def test_alpha_one_is_the_unsteered_model_on_every_basis(handle, tmp_path):
    h, ds = handle, dataset(n_train=8, n_test=8)
    sae = make_basis(h, "sae", "mlp_out", f"path:{write_dictionary(tmp_path, h)}")
    bases = [("neurons@mlp_acts", NeuronBasis(h.sites, "mlp_acts")), ("sae@mlp_out", sae)]
    data = steer(h, ds, bases, ks=[3, 20], alphas=[0.0, 1.0, 4.0], method="atp")
    assert len(data["records"]) == 2 * 2 * 3
    for r in data["records"]:
        if r["alpha"] == 1.0:
            for key, value in data["unsteered"].items():
                assert r[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (r["basis"], key)
    steered = [r for r in data["records"] if r["alpha"] == 4.0 and r["k"] == 20]
    assert any(abs(r["p_clean"] - data["unsteered"]["p_clean"]) > 1e-6 for r in steered)
    json.dumps(data)  # plain data
    assert data["protocol"]["ks"] == [3, 20] and data["protocol"]["steered"].startswith("units")


def test_alpha_zero_on_neurons_equals_zeroing_them_by_hand(handle):
    h, ds = handle, dataset(n_train=8, n_test=8)
    basis = NeuronBasis(h.sites, "mlp_acts")
    data = steer(h, ds, [("n", basis)], ks=[5], alphas=[0.0], method="atp")
    from bench.attribution.attribute import attribute

    enc = encode(ds, h.tokenizer)
    mask = top_units(attribute(h, basis, enc["train"], "atp").units, 5)  # [layers, pos, n]
    assert int(mask.sum()) == 5
    test = enc["test"]

    def zero(layer):
        return lambda x: torch.where(mask[layer], torch.zeros_like(x), x)

    replace = {("mlp_acts", layer): zero(layer) for layer in range(h.sites.n_layers)}
    with torch.no_grad(), intervene(h.sites, replace=replace):
        logits = h.model(input_ids=test["clean_ids"]).logits[:, -1]
    p = torch.softmax(logits.double(), -1)
    want = float(p[torch.arange(len(p)), test["clean_answer_id"]].mean())
    assert data["records"][0]["p_clean"] == pytest.approx(want, rel=1e-6)


def test_one_vs_rest_auroc_equals_a_brute_force_count():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(30, 4))
    labels = rng.integers(0, 3, 30)
    values[labels == 1, 0] += 5  # node 0 separates class 1
    got = one_vs_rest(values, labels)
    for c, auc in got.items():
        pos, neg = values[labels == c], values[labels != c]
        for j in range(values.shape[1]):
            greater = (pos[:, j, None] > neg[None, :, j]).mean()
            ties = (pos[:, j, None] == neg[None, :, j]).mean()
            assert auc[j] == pytest.approx(greater + 0.5 * ties)
    assert got[1][0] > 0.9


def test_auroc_on_addition_counts_nodes_per_family():
    from bench.model.handle import ModelHandle
    from bench.model.sites import SiteTable
    from bench.model.tiny import tiny_model, tiny_tokenizer

    model, tok = tiny_model("llama", tiny_tokenizer(), seed=0)  # its corpus has the digits
    h = ModelHandle(model.eval().requires_grad_(False), tok, "tiny-llama", "test",
                    SiteTable.for_model(model))  # fmt: skip
    ds = get_task("addition").build(tok, n_train=24, n_test=2, seed=0)
    data = auroc(h, ds, [("neurons@mlp_acts", NeuronBasis(h.sites, "mlp_acts"))], "atp")
    (b,) = data["bases"]
    assert b["n_nodes"] == h.sites.n_layers * h.sites.width("mlp_acts")
    for kind in ("attribution", "activation"):
        assert set(b[kind]) == {"sum_mod_2", "sum_mod_5", "sum_mod_10", "tens_digit"}
        fam = b[kind]["sum_mod_2"]
        assert fam["classes"] == [0, 1] and fam["n_either"] <= b["n_nodes"]
        assert sum(fam["histogram"]["counts"]) == b["n_nodes"]
        assert fam["per_node"] == pytest.approx(fam["n_either"] / b["n_nodes"])
    json.dumps(data)


def test_the_commands_write_json_and_a_figure_and_refuse_bad_options(tmp_path, capsys):
    from bench.__main__ import main

    out = tmp_path / "steer.json"
    argv = ["steer", "--model", "tiny-llama", "--task", "sva_simple", "--bases",
            "neurons@mlp_acts", "--k", "2,8", "--alphas=0,1,2", "--n-train", "8", "--n-test", "4",
            "--method", "atp", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    assert len(data["records"]) == 6 and (tmp_path / "steer.png").is_file()
    out = tmp_path / "auroc.json"
    argv = ["auroc", "--model", "tiny-llama", "--bases", "neurons@mlp_acts", "--n-train", "16",
            "--method", "atp", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["bases"][0]["basis"] == "neurons@mlp_acts"
    assert (tmp_path / "auroc.png").is_file()
    capsys.readouterr()
    bad = [
        (["steer", "--k", "0", "--out", "x.json"], "--k 0: must be an integer"),
        (["steer", "--k", "ten", "--out", "x.json"], "--k ten: comma-separated numbers"),
        (["steer", "--bases", "sae@mlp_out", "--out", "x.json"], "needs a dictionary"),
        (["auroc", "--method", "grad", "--out", "x.json"], "unknown attribution method 'grad'"),
        (["auroc", "--out", str(tmp_path)], "is an existing directory"),
    ]
    for argv, message in bad:
        assert main(argv) == 2
        assert message in capsys.readouterr().err, argv


def test_the_command_lines_log_sparsebench_at_info_and_other_libraries_at_warning():
    """A figure's PDF once printed ~70 lines of fontTools' font subsetting among the results."""
    import logging

    from bench.core.logs import OWN_PACKAGES, configure_cli_logging

    root, own = logging.getLogger(), [logging.getLogger(n) for n in OWN_PACKAGES]
    saved = root.level, [lg.level for lg in own]
    try:
        configure_cli_logging(quiet=False)
        assert not logging.getLogger("fontTools.subset").isEnabledFor(logging.INFO)
        assert logging.getLogger("bench.studies.steer").isEnabledFor(logging.INFO)
        assert logging.getLogger("reports.build").isEnabledFor(logging.INFO)
        configure_cli_logging(quiet=True)
        assert not logging.getLogger("bench.training.train").isEnabledFor(logging.INFO)
        assert logging.getLogger("bench.training.train").isEnabledFor(logging.WARNING)
    finally:
        root.setLevel(saved[0])
        for lg, level in zip(own, saved[1], strict=True):
            lg.setLevel(level)
