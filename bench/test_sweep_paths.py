"""The sweep-path benchmark (opt-in: ``pytest bench --benchmark-only --sweep-paths``): every
selected cell's sweep on the whole-prompt path, then on the shared-prefix path, in one process;
each a pytest-benchmark case whose ``extra_info`` holds its ``sweep_ratio`` (against one bare
forward per mask, same batch, same run) and, for the prefix path, its speed-up and the largest
|ΔF| against the whole-prompt path. Steps: :mod:`bench.suite.sweep_paths`. Without
``--sweep-paths`` these cases are deselected; with it, the suite's own cells are.
"""

from __future__ import annotations

import pytest

from bench.suite import sweep_paths


@pytest.mark.parametrize("path", sweep_paths.PATHS)
def test_sweep_path(benchmark, cell, path, suite):
    def timed(fn, setup):
        return benchmark.pedantic(fn, setup=setup, rounds=1, iterations=1)

    run = sweep_paths.run_path(suite, cell, path, timed)
    benchmark.extra_info.update(
        sweep_s=run.sweep_s, sweep_ratio=run.sweep_ratio, prefix_positions=run.prefix_positions,
        seq_len=run.seq_len, speedup=run.speedup, max_abs_delta_f=run.max_abs_delta_f,
    )  # fmt: skip
    if run.max_abs_delta_f is not None and run.max_abs_delta_f > sweep_paths.MAX_DELTA_F:
        pytest.fail(
            f"{cell.id}: the prefix path's curves differ from the whole-prompt path's by "
            f"{run.max_abs_delta_f:.3g} (allowed {sweep_paths.MAX_DELTA_F})",
            pytrace=False,
        )
