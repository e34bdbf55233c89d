"""The reference check fails when faithfulness moves, and says what moved."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _tiny_data import dataset, tiny_handle

import bench.pipeline
from bench import run_sweep
from bench.__main__ import main
from bench.results import baselines as reference


@pytest.fixture(scope="module")
def result():
    h, ds = tiny_handle("llama"), dataset()
    return run_sweep(h, ds, method="atp", n_bootstrap=200, bare_torch_timings=False)


def test_identical_result_holds(result, tmp_path):
    reference.update(tmp_path, result)
    checks = reference.check_against(tmp_path, result)
    assert [c.scalar for c in checks] == ["auc", "k@0.8"] and all(c.ok for c in checks)


def test_perturbed_reference_fails(result, tmp_path):
    path = reference.update(tmp_path, result)
    moved = dataclasses.replace(
        result, auc=result.auc + 0.3, auc_ci=[result.auc + 0.25, result.auc + 0.35]
    )
    moved.to_json(path)
    checks = reference.check_against(tmp_path, result)
    assert [c.ok for c in checks] == [False, True]
    text = reference.table(checks)
    assert "MOVED" in text and "auc" in text and f"{result.auc:.4g}" in text


def test_a_worse_ranking_fails_with_a_readable_diff(result, tmp_path, monkeypatch, capsys):
    original = bench.pipeline.node_ranks
    # The same cell, but the ranking is reversed: the least important nodes come first.
    monkeypatch.setattr(bench.pipeline, "node_ranks", lambda s: original(1 / (s.abs() + 1e-12)))
    h, ds = tiny_handle("llama"), dataset()
    reversed_ = run_sweep(h, ds, method="atp", n_bootstrap=200, bare_torch_timings=False)
    # On a random model either order may be the better one; the reference is the better.
    better, worse = sorted([result, reversed_], key=lambda r: -r.auc)
    assert worse.auc < better.auc - 0.1
    reference.update(tmp_path, better)
    checks = reference.check_against(tmp_path, worse)
    assert not all(c.ok for c in checks)
    out_file = tmp_path / "worse.json"
    worse.to_json(out_file)
    assert main(["compare", str(out_file), "--reference", str(tmp_path)]) == 1
    printed = capsys.readouterr().out
    assert "MOVED" in printed and "checks moved" in printed


def test_missing_or_incomparable_reference_fails(result, tmp_path):
    (check,) = reference.check_against(tmp_path, result)
    assert not check.ok and "--update-reference" in check.note
    path = reference.update(tmp_path, result)
    dataclasses.replace(result, n_test=result.n_test + 1).to_json(path)
    (check,) = reference.check_against(tmp_path, result)
    assert not check.ok and "not comparable" in check.note


def test_attribution_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path))
    h, ds = tiny_handle("llama"), dataset()
    kw = dict(method="atp", n_bootstrap=50, bare_torch_timings=False, cache=True)
    first = run_sweep(h, ds, **kw)
    second = run_sweep(h, ds, **kw)
    assert not first.timings["attribution_cached"] and second.timings["attribution_cached"]
    assert first.faithfulness == second.faithfulness
    (entry,) = (tmp_path / "attributions").glob("*.pt")
    entry.write_bytes(b"damaged")  # a damaged entry is recomputed
    third = run_sweep(h, ds, **kw)
    assert not third.timings["attribution_cached"] and third.faithfulness == first.faithfulness
    torch.load(entry)  # and rewritten whole


def test_a_joint_pass_serves_the_other_bases_from_memory_and_the_cache(tmp_path, monkeypatch):
    """A JointAttribution attributes all bases of its group in the first member's pass; the
    others get their scores from memory (or, later, the disk cache) and the results a separate
    pass gives."""
    from bench.attribution.joint import JointAttribution
    from bench.pipeline import Cell, finish, measure, prepare

    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path))
    h, ds = tiny_handle("llama"), dataset()
    acts, out = Cell(site="mlp_acts", method="relp"), Cell(site="mlp_out", method="relp")
    group = JointAttribution([prepare(h, ds, acts), prepare(h, ds, out)])
    first = measure(prepare(h, ds, acts), cache=True, joint=group)
    assert not first.attribution_cached and len(first.extra["attribution_joint_bases"]) == 2
    assert len(list((tmp_path / "attributions").glob("*.pt"))) == 2
    held = measure(prepare(h, ds, out), cache=True, joint=group)
    assert held.attribution_cached and held.attribution_s == first.attribution_s
    second = measure(prepare(h, ds, out), cache=True)  # from the disk cache
    assert second.attribution_cached and second.attribution_s == first.attribution_s
    assert torch.equal(held.scores.units, second.scores.units)
    res = finish(prepare(h, ds, out), second, bare_torch_timings=False)
    assert res.timings["attribution_bases"] == 2
    no_cache = JointAttribution([prepare(h, ds, acts), prepare(h, ds, out)])
    measure(prepare(h, ds, acts), joint=no_cache)  # without the disk cache: held in memory
    in_memory = measure(prepare(h, ds, out), joint=no_cache)
    assert in_memory.attribution_cached and torch.equal(in_memory.scores.units, held.scores.units)
    alone = run_sweep(h, ds, site="mlp_out", method="relp", n_bootstrap=1000,
                      bare_torch_timings=False)  # fmt: skip
    assert res.faithfulness == pytest.approx(alone.faithfulness, abs=1e-5)


QUICK_CELLS = {  # what CI checks (.ci/run): --quick, and one quick gemma cell
    "smollm2-135m": {
        f"sva_simple__{b}__{m}__patch__n64x24"
        for b in ("neurons@mlp_acts", "neurons@mlp_out")
        for m in ("relp", "random")
    },
    "gemma-3-270m": {"sva_simple__neurons@mlp_acts__relp__patch__n64x24"},
}
CONSISTENCY_FLOOR = {"smollm2-135m": 0.9, "gemma-3-270m": 0.95}


@pytest.mark.parametrize("model", sorted(QUICK_CELLS))
def test_committed_references_cover_the_default_and_quick_suites(model):
    """Every cell of the default suite and of CI's quick check has a loadable reference under
    its name, of the current schema (flip rate and composition included)."""
    from pathlib import Path

    from bench import SweepResult
    from bench.results.baselines import cell_name
    from bench.results.result import SCHEMA_VERSION
    from tasks import list_tasks

    root = Path(__file__).resolve().parents[1] / "baselines" / model
    refs = {p.stem: SweepResult.from_json(p) for p in root.glob("*.json")}
    assert all(cell_name(r) == stem for stem, r in refs.items())
    bases = ["neurons@mlp_acts", "neurons@mlp_out", "sae@mlp_out__local"]
    default = {
        f"{t.name}__{b}__{m}__patch__n300x32"
        for t in list_tasks()
        for b in bases
        for m in ("relp", "atp", "random")
    }
    assert default | QUICK_CELLS[model] <= set(refs), sorted(default - set(refs))[:5]
    for r in refs.values():  # F(all) = 1 and F(none) = 0 in every committed curve
        assert r.model == model and r.schema_version == SCHEMA_VERSION, cell_name(r)
        assert r.faithfulness[-1] == pytest.approx(1, abs=1e-6) and r.completeness[-1] == 0
        assert r.flip_rate is not None and r.composition is not None, cell_name(r)
        # the default protocol is matched, and its consistency check holds in every cell
        floor = CONSISTENCY_FLOOR[model]
        assert r.protocol["matched"] and r.consistency["f_nonzero"] >= floor, cell_name(r)


@pytest.mark.parametrize(
    "field,value",
    [("site", "attn_out"), ("basis", "sae"), ("dictionary", "local"), ("model", "tiny-gpt2"),
     ("task", "ioi"), ("method", "relp")],
)  # fmt: skip
def test_a_reference_of_another_cell_under_this_cells_name_is_refused(result, tmp_path, field,
                                                                      value):  # fmt: skip
    """Issue: an attn_out result filed under an mlp_out reference's name gave 'all held'."""
    path = reference.update(tmp_path, result)
    dataclasses.replace(result, **{field: value}).to_json(path)  # the wrong cell, this name
    (check,) = reference.check_against(tmp_path, result)
    assert not check.ok and "not comparable" in check.note
    assert f"{field}: {value} -> {getattr(result, field)}" in check.note
