"""The benchmark suite: one pytest-benchmark case per cell (see bench/conftest.py).

Per cell: (1) set-up outside the timing — model, dataset, basis (SAEs are trained or loaded
here), token ids, and the same for the task's other bases that an ``atp``/``relp`` pass can
serve at once; (2) the timed body — attribution + sweep (``bench.run.measure``); (3) scores,
CIs and timing ratios (``bench.run.finish``; bare-torch timings measured once per dataset
in this run; for dictionary cells the paired-bootstrap k@0.8 ratio against the run's
neurons@mlp_acts cell of the same task and method) into ``benchmark.extra_info``;
(4) the SweepResult JSON to ``--results-dir``; (5) the reference check or update.
"""

from __future__ import annotations

import pytest

from bench import reference
from bench.conftest import results_dir
from bench.run import finish, measure, measure_bare_torch, prepare


def test_cell(benchmark, cell, suite, request):
    config = request.config
    handle = suite.handle(cell.model)
    ds = suite.dataset(cell)
    prepared = []

    def setup():  # untimed: bases (SAEs load or train here), token ids, the joint group
        prepared.append(prepare(handle, ds, cell, suite.basis(cell)))
        return (prepared[-1],), {"cache": True, "joint": suite.joint(cell)}

    measured = benchmark.pedantic(measure, setup=setup, rounds=1, iterations=1)
    prep = prepared[-1]
    key = (cell.model, cell.task, cell.n_train, cell.n_test)
    if key not in suite.bare_torch_timings:  # bare torch on this dataset's batches, once per run
        batch = {k: v[: prep.settings.batch_size] for k, v in prep.train.items()}
        suite.bare_torch_timings[key] = measure_bare_torch(handle, batch, prep.test)
    # k@0.8(dictionary) / k@0.8(neurons@mlp_acts) with a paired bootstrap over the same pairs
    pair_key = suite.joint_group(cell)
    if (cell.basis, cell.site) == ("neurons", "mlp_acts"):
        suite.neuron_cells[pair_key] = measured
    denominator = None
    if cell.basis != "neurons" and pair_key in suite.neuron_cells:
        denominator = ("neurons@mlp_acts", suite.neuron_cells[pair_key])
    result = finish(
        prep, measured, bare_torch=suite.bare_torch_timings[key], ratio_denominator=denominator
    )
    suite.results.append(result)
    benchmark.extra_info["result"] = result.to_dict()
    benchmark.extra_info.update(
        k_at_0_8=result.k_at_0_8,
        auc=result.auc,
        attribution_ratio=result.timings.get("attribution_ratio"),
        sweep_ratio=result.timings.get("sweep_ratio"),
        attribution_cached=result.timings["attribution_cached"],
        k_ratio_vs_neurons=result.extra.get("k_ratio_vs_neurons"),
        f_nonzero=result.consistency.get("f_nonzero"),
    )
    out = results_dir(config) / result.model / f"{reference.cell_name(result)}.json"
    result.to_json(out)

    ref_dir = config.getoption("--reference")
    if ref_dir and config.getoption("--update-reference"):
        suite.updated.append(reference.update(ref_dir, result))
    elif ref_dir:
        checks = reference.check_against(ref_dir, result)
        suite.checks.extend(checks)
        if not all(c.ok for c in checks):
            pytest.fail("faithfulness moved:\n" + reference.table(checks), pytrace=False)
