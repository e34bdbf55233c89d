"""The benchmark suite: one pytest-benchmark case per cell (hooks: bench/suite/plugin.py).

Per cell (:meth:`bench.suite.state.Suite.run_cell`): (1) set-up outside the timing — model,
dataset, basis (SAEs are trained or loaded here), token ids, and the cell's joint-attribution
group; (2) the timed body — attribution + sweep (``bench.pipeline.measure``), timed by
``benchmark.pedantic``; (3) scores, CIs and timing ratios (bare-torch timings measured once
per dataset in this process; for dictionary cells the paired-bootstrap k@0.8 ratio against the
group's neurons@mlp_acts cell) into ``benchmark.extra_info``; (4) the SweepResult JSON to
``--results-dir``; (5) the reference check or update.
"""

from __future__ import annotations

import pytest

from bench.results import baselines
from bench.suite.options import results_dir


def test_cell(benchmark, cell, suite, request):
    config = request.config

    def timed(measure, setup):
        return benchmark.pedantic(measure, setup=setup, rounds=1, iterations=1)

    result = suite.run_cell(cell, timed)
    benchmark.extra_info["result"] = result.to_dict()
    benchmark.extra_info.update(
        k_at_0_8=result.k_at_0_8,
        auc=result.auc,
        attribution_ratio=result.timings.get("attribution_ratio"),
        sweep_ratio=result.timings.get("sweep_ratio"),
        attribution_cached=result.timings["attribution_cached"],
        k_ratio_vs_neurons=result.extra.get("k_ratio_vs_neurons"),
        k_at_flip_0_8=result.k_at_flip_0_8,
        f_nonzero=result.consistency.get("f_nonzero"),
    )
    moved = suite.keep(cell, result, results_dir(config), config.getoption("--reference"),
                       config.getoption("--update-reference"))  # fmt: skip
    if moved:
        pytest.fail("faithfulness moved:\n" + baselines.table(moved), pytrace=False)
