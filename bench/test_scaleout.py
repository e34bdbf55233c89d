"""The scale-out benchmark (opt-in: ``pytest bench --benchmark-only --scaleout N``): the cells
the suite options select, run serially, with ``-n N`` and as Ray tasks on a local instance with
N CPUs; each run one pytest-benchmark round (its wall time), its ratio to serial and how its
results compare in ``extra_info``. Steps: :mod:`bench.suite.scaleout`. Without ``--scaleout`` these
cases are deselected; with it, the suite's own cells are (the runs below are the suite).
"""

from __future__ import annotations

import importlib.util
import platform
import time

import pytest

from bench.core.cache import cache_root
from bench.core.env import cpu_cores
from bench.suite import scaleout
from bench.suite.options import parse_cells, results_dir
from bench.suite.ray import INSTALL_HINT
from bench.suite.state import showing


@pytest.fixture(scope="module")
def plan(request, tmp_path_factory):
    """The selection and the directory every run writes under."""
    config = request.config
    cells = parse_cells(config)
    scaleout.warm(cells, config.getoption("--dtype"), config.getoption("--device"))  # step 1
    root = results_dir(config) / f"scaleout-{scaleout.now_stamp()}"
    return {
        "config": config,
        "cells": cells,
        "workers": config.getoption("--scaleout"),
        "options": scaleout.passthrough(config),
        "root": root,
        "caches": tmp_path_factory.mktemp("scaleout-caches"),
    }


@pytest.mark.parametrize("mode", scaleout.MODES)
def test_scaleout(benchmark, mode, plan):
    runs = scaleout.RUNS  # this session's runs so far
    serial = next((r for r in runs if r.mode == "serial"), None)
    if mode != "serial" and serial is None:
        pytest.skip("the serial run did not complete; there is nothing to compare with")
    if mode == "ray" and importlib.util.find_spec("ray") is None:
        pytest.skip(f"Ray is not installed: {INSTALL_HINT}")
    workers = 1 if mode == "serial" else plan["workers"]
    out = plan["root"] / mode
    cmd = scaleout.command(mode, workers, plan["options"], out)
    cache = scaleout.seed_cache(cache_root(), plan["caches"] / mode)  # step 2
    env = scaleout.environment(cache, plan["config"].rootpath)
    many = f"{workers} workers" if workers > 1 else "1 process"
    line = f"{mode} run of {len(plan['cells'])} cells ({many}); follow it in {out / 'log.txt'}"
    wall = []

    def timed():
        start = time.perf_counter()
        code = scaleout.execute(cmd, out, env, plan["config"].rootpath)
        wall.append(time.perf_counter() - start)
        return code

    with showing(plan["config"], line):
        code = benchmark.pedantic(timed, rounds=1, iterations=1)  # step 3: one round, whole run
    if code != 0:
        tail = (out / "log.txt").read_text()[-3000:]
        pytest.fail(f"{mode} run exited {code}; its log: {out / 'log.txt'}\n{tail}", pytrace=False)
    run = scaleout.Run(
        mode=mode, workers=workers, wall_s=wall[0], cells=len(plan["cells"]),
        command=" ".join(cmd[1:]), out=str(out),
    )  # fmt: skip
    if serial is not None:  # step 4
        same = scaleout.compare(plan["root"] / "serial" / "results", out / "results")
        run.ratio_to_serial = run.wall_s / serial.wall_s
        run.identical, run.max_abs_delta_auc = same.identical, same.max_abs_delta_auc
    runs.append(run)
    benchmark.extra_info.update(
        wall_s=run.wall_s, workers=workers, cells=run.cells, ratio_to_serial=run.ratio_to_serial,
        identical_to_serial=run.identical, max_abs_delta_auc=run.max_abs_delta_auc,
        results_dir=str(out / "results"),
    )  # fmt: skip
    scaleout.write_summary(  # step 5, rewritten after every run
        plan["root"], runs,
        {"cores": cpu_cores(), "machine": platform.machine(), "options": plan["options"]},
    )  # fmt: skip
    if serial is not None and not same.identical:
        pytest.fail(f"{mode} results differ from the serial run's: {same.describe()}")
