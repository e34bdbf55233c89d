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

from bench.results import baselines as reference
from bench.suite.options import result_path, results_dir


def test_cell(benchmark, cell, suite, request):
    config = request.config

    def timed(measure, setup):
        return benchmark.pedantic(measure, setup=setup, rounds=1, iterations=1)

    result = suite.run_cell(cell, timed)
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
    out = result_path(results_dir(config), result)
    result.to_json(out)
    suite.written.append((suite.cells.index(cell), out))

    ref_dir = config.getoption("--reference")
    if ref_dir and config.getoption("--update-reference"):
        suite.updated.append(reference.update(ref_dir, result))
    elif ref_dir:
        checks = reference.check_against(ref_dir, result)
        suite.checks.extend(checks)
        if not all(c.ok for c in checks):
            pytest.fail("faithfulness moved:\n" + reference.table(checks), pytrace=False)
