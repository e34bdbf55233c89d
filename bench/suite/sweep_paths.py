"""The sweep-path benchmark (opt-in: ``pytest bench --benchmark-only --sweep-paths``): each
selected cell's sweep timed on the whole-prompt path and on the shared-prefix path
(:mod:`bench.model.prefix`), in one process, on the same scores and test pairs.

Steps, per cell (``bench/test_sweep_paths.py`` runs one pytest-benchmark case per path):

1. set-up, untimed: the suite's model, dataset and basis, the cell prepared once per path
   (``RunSettings.reuse_prefix`` False, then True), the attribution scores (the joint group's,
   cached as in the suite) and bare-torch timings on the same batches;
2. the timed body: :func:`bench.pipeline.sweep` alone (rank, ablation values, every mask);
3. the record: seconds, ``sweep_ratio`` against one bare forward per mask of the same batch in
   the same process, and for the prefix path its speed-up over the whole-prompt path and the
   largest |ΔF| over faithfulness, completeness and the flip rate (0 when bit-identical).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from bench.cell import Cell, RunSettings
from bench.sweep import scores

log = logging.getLogger(__name__)

PATHS = ("whole", "prefix")  # the whole-prompt path first: the prefix path compares with it
MAX_DELTA_F = 1e-6  # the prefix path fails its case beyond this


@dataclass
class PathRun:
    cell: str
    path: str
    sweep_s: float
    sweep_ratio: float
    prefix_positions: int
    seq_len: int
    curves: dict[str, np.ndarray] = field(repr=False)
    speedup: float | None = None  # whole-prompt seconds / these seconds
    max_abs_delta_f: float | None = None  # against the whole-prompt path's curves


RUNS: dict[tuple[str, str], PathRun] = {}  # (cell id, path) -> its run, this process


def curves(sm) -> dict[str, np.ndarray]:
    """Faithfulness, completeness and flip rate per size of one sweep's metrics."""
    return {
        "faithfulness": scores.curve(sm.m_faith, sm.m_full, sm.m_empty),
        "completeness": scores.curve(sm.m_comp, sm.m_full, sm.m_empty),
        "flip_rate": scores.flip_curve(sm.m_comp, sm.m_full),
    }


def max_abs_delta(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]), initial=0.0)) for k in a)


def run_path(suite, cell: Cell, path: str, timed) -> PathRun:
    """Steps 1-3 for one cell and path; ``timed(fn, setup)`` times ``fn`` (pytest-benchmark's
    ``pedantic``)."""
    from bench.pipeline import prepare, sweep

    handle, ds = suite.handle(cell.model), suite.dataset(cell)
    settings = RunSettings(reuse_prefix=path == "prefix")
    prep = prepare(handle, ds, cell, suite.basis(cell), settings)
    joint = suite.joint(cell)
    if joint is None:  # a method that attributes one basis at a time (random, ig, exact)
        from bench.attribution.joint import JointAttribution

        joint = JointAttribution([prep])
    sc = joint.scores(prep, False, True)[0]
    bare = suite.bare_torch(prep)

    seconds = []

    def body():
        start = time.perf_counter()
        out = sweep(prep, sc)
        seconds.append(time.perf_counter() - start)
        return out

    sm, _, _ = timed(body, lambda: ((), {}))
    run = PathRun(
        cell=cell.id, path=path, sweep_s=seconds[-1],
        sweep_ratio=seconds[-1] / (sm.n_forwards * bare["plain_forward_s"]),
        prefix_positions=sm.prefix_reused, seq_len=int(prep.test["clean_ids"].shape[1]),
        curves=curves(sm),
    )  # fmt: skip
    whole = RUNS.get((cell.id, "whole"))
    if path == "prefix" and whole is not None:
        run.speedup = whole.sweep_s / run.sweep_s
        run.max_abs_delta_f = max_abs_delta(run.curves, whole.curves)
    RUNS[(cell.id, path)] = run
    return run


def table(runs: list[PathRun]) -> str:
    """One line per cell: both paths' seconds and sweep ratios, the speed-up and max |ΔF|."""
    rows = [f"{'cell':<48} {'P/seq':>6} {'whole s':>8} {'prefix s':>9} {'ratio w':>8} "
            f"{'ratio p':>8} {'speed-up':>9} {'max|ΔF|':>9}"]  # fmt: skip
    by_cell: dict[str, dict[str, PathRun]] = {}
    for r in runs:
        by_cell.setdefault(r.cell, {})[r.path] = r
    for cell, paths in by_cell.items():
        w, p = paths.get("whole"), paths.get("prefix")
        if w is None or p is None:
            continue
        rows.append(
            f"{cell:<48} {f'{p.prefix_positions}/{p.seq_len}':>6} {w.sweep_s:>8.2f} "
            f"{p.sweep_s:>9.2f} {w.sweep_ratio:>8.2f} {p.sweep_ratio:>8.2f} "
            f"{p.speedup:>8.2f}x {p.max_abs_delta_f:>9.2g}"
        )
    return "\n".join(rows)
