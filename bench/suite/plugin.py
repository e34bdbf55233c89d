"""Every pytest hook of the benchmark suite (``pytest bench --benchmark-only``);
``bench/conftest.py`` re-exports them, so pytest finds them there.

Each cell (model, task, basis@site[:dictionary], method, ablation) is one pytest-benchmark
case; see ``bench/test_suite.py``. Options (declared once in
:data:`bench.suite.options.SUITE_OPTIONS`,
which ``python -m bench ray`` shares):

``--model``            model to run (default: the embedded default, smollm2-135m)
``--tasks``            comma-separated task names (default: every registered task)
``--bases``            comma-separated ``basis@site[:dictionary]`` (default:
                       neurons@mlp_acts,neurons@mlp_out,sae@mlp_out:local)
``--methods``          comma-separated attribution methods (default: relp,atp,random)
``--ablation``         the protocol: patch | mean | zero (matched: attribution and ablation
                       share one reference) | marks (unmatched: Marks et al.'s pairing, for
                       reproducing their SVA numbers) (default: patch)
``--error-mode``       SAE error nodes: ablate (ranked, counted, ablated) | keep (never
                       ablated, not counted: an upper bound for dictionaries) (default: ablate)
``--dtype``            model dtype: auto (bfloat16 on CUDA and on CPUs with native bf16,
                       else float32), float32, bfloat16 (default: auto)
``--device``           cpu (default), cuda, cuda:N
``--devices``          with pytest-xdist (``-n N``): one device per worker, worker i taking
                       ``devices[i % len]`` (e.g. ``cuda:0,cuda:1``)
``--n-train/--n-test`` split sizes (defaults below; ``--quick`` uses smaller ones)
``--quick``            the CI subset: sva_simple × {neurons@mlp_acts, neurons@mlp_out} ×
                       {relp, random}, small splits
``--ladder``           the dictionary-quality ladder (opt-in): the 4 SVA tasks and ioi ×
                       neurons@mlp_acts and six local SAEs (3 token budgets × 2 widths,
                       ``bench.training.config.LADDER``, trained on first use) × relp; then
                       ``python -m reports`` draws the paired ratio against CE-loss recovered
``--reference DIR``    fail a cell whose AUC or k@0.8 leaves the CI-based tolerance of its
                       committed reference (see bench/results/baselines.py); prints what moved
``--update-reference`` write this run's results as the new references into ``--reference``
``--results-dir DIR``  also write each cell's SweepResult JSON there (default .benchmarks/results)
``--scaleout N``      instead of the cells, the scale-out benchmark (``bench/test_scaleout.py``):
                       the selected cells run serially, with ``-n N`` and as Ray tasks on N local
                       CPUs; three wall times, their ratios to serial, results compared
``--sweep-paths``      instead of the cells, the sweep-path benchmark
                       (``bench/test_sweep_paths.py``): each selected cell's sweep on the
                       whole-prompt and the shared-prefix path in one process; seconds, ratios
                       to bare torch, speed-up, max |ΔF|

Model loading, dataset building and SAE training happen outside the timed body; attributions
and SAEs are cached on disk between runs (:mod:`bench.suite` has the steps of a cell).
Benchmark JSON is autosaved under .benchmarks/ so runs accumulate and ``pytest-benchmark
compare`` works on them. The run ends with the answer: per task, k@0.8 [CI] per basis, the
paired ratio dictionary / neurons@mlp_acts [CI] and a verdict (:mod:`bench.results.verdict`).

**pytest-xdist** (``-n N``): every cell carries an ``xdist_group`` mark naming its joint
group, and ``-n N`` implies ``--dist loadgroup``, scheduled by
:class:`bench.suite.scheduling.JointGroupScheduling`, so a group's cells run in one worker, in order
(joint attribution and paired ratios hold). Worker i runs on its device from
``--device``/``--devices`` with ``$SPARSEBENCH_THREADS`` or cores // N torch threads. The
workers write the result files; each reports which to the controller (xdist's
``workeroutput``), which reads them back and prints the verdict and the reference check once.
pytest-benchmark is off under xdist (it cannot time cells fairly while workers share cores):
each SweepResult's own timings remain, and nothing is autosaved.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cell import Cell
from bench.core.env import choose_threads
from bench.core.errors import BadInputError
from bench.suite import options
from bench.suite.options import SUITE_OPTIONS, group_name, parse_devices
from bench.suite.state import Suite

# --benchmark-only under xdist: pytest-benchmark refuses it there, so the suite applies it
_XDIST_ONLY = pytest.StashKey[bool]()


def pytest_addoption(parser):
    g = parser.getgroup("sparsebench")
    for flag, kwargs in SUITE_OPTIONS:
        g.addoption(flag, **kwargs)
    g.addoption(
        "--scaleout", type=int, default=None, metavar="N",
        help="instead of the cells: run them serially, with -n N and as Ray tasks on N local "
        "CPUs, and benchmark the three wall times (bench/scaleout.py)",
    )  # fmt: skip
    g.addoption(
        "--sweep-paths", action="store_true", default=False,
        help="instead of the cells: time each selected cell's sweep on the whole-prompt path "
        "and on the shared-prefix path, with the speed-up and max |dF| "
        "(bench/suite/sweep_paths.py)",
    )  # fmt: skip


def parse_cells(config) -> list[Cell]:
    """:func:`bench.suite.options.parse_cells`, a bad value raised as a pytest usage error."""
    try:
        return options.parse_cells(config)
    except BadInputError as err:
        raise pytest.UsageError(str(err)) from None


def _xdist(config) -> str | None:
    """``"controller"``, ``"worker"`` or None: this process's part in a pytest-xdist run."""
    if hasattr(config, "workerinput"):
        return "worker"
    if config.getoption("numprocesses", None) or config.getoption("dist", "no") != "no":
        return "controller"
    return None


def _configure_xdist(config, role: str) -> None:
    """Groups stay whole (loadgroup); pytest-benchmark is off (workers share the cores)."""
    if config.getoption("benchmark_only", False):  # pytest-benchmark refuses it under xdist
        config.option.benchmark_only = False
        config.stash[_XDIST_ONLY] = True  # skipped here instead (pytest_collection_modifyitems)
    config.option.benchmark_disable = True
    config.option.benchmark_enable = False
    config.option.benchmark_autosave = False
    if role == "worker":
        return
    dist = config.getoption("dist", "no")
    if dist in ("no", "load"):
        config.option.dist = "loadgroup"
    elif dist != "loadgroup":
        raise pytest.UsageError(
            f"--dist {dist}: the suite runs each joint-attribution group in one worker; valid: "
            "loadgroup (what -n N implies)"
        )
    parse_cells(config)  # bad options fail here, once, before any worker starts


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark's (trylast) reads its options
def pytest_configure(config):
    config.addinivalue_line("markers", "xdist_group(name): cells of one joint group")
    _SUITE.dtype = config.getoption("--dtype", default="auto")
    _SUITE.config = config
    # Keep history: every run of the suite is saved for `pytest-benchmark compare`.
    if not config.getoption("benchmark_json", default=None):
        config.option.benchmark_autosave = True
    role = _xdist(config)
    _check_scaleout(config, role)
    if role is not None:
        _configure_xdist(config, role)
    try:
        devices = parse_devices(config)
    except BadInputError as err:
        raise pytest.UsageError(str(err)) from None
    index, count = 0, 1
    if role == "worker":
        index = int(config.workerinput["workerid"].removeprefix("gw"))
        count = int(config.workerinput["workercount"])
    if role != "controller":  # the process that runs cells: threads chosen once, now
        from bench.model.load import configure_threads, configure_workers

        configure_threads(count)  # the free cores, split between workers
        configure_workers(count)  # the sweep's: this process's cores, split between workers
    _SUITE.device = devices[index % len(devices)]
    # a worker runs only some groups: atp's and relp's on one split may be in two workers
    _SUITE.share_differences = role != "worker"


def pytest_report_header(config):
    """The torch thread choice, once, at the top of the run (workers choose their own)."""
    if _xdist(config) == "controller":
        workers = int(config.getoption("numprocesses", default=0) or 0)
        n, why = choose_threads(max(1, workers))
        return [f"sparsebench: torch threads per worker: {n} ({why})"]
    from bench.model.load import configure_threads, configure_workers

    n, why = configure_threads()  # the choice pytest_configure made
    w = configure_workers()
    return [
        f"sparsebench: torch threads: {n} ({why}); workers: {w}, 1 thread each (sweeps, "
        "attribution, SAE activations and quality)"
    ]


def _check_scaleout(config, role: str | None) -> None:
    if config.getoption("--sweep-paths", False):
        if role is not None:
            raise pytest.UsageError(
                "--sweep-paths times both paths of a cell in one process; leave -n/--dist out"
            )
        if config.getoption("--scaleout", None) is not None:
            raise pytest.UsageError("--sweep-paths and --scaleout: choose one benchmark")
    workers = config.getoption("--scaleout", None)
    if workers is None:
        return
    if workers < 2:
        raise pytest.UsageError(
            f"--scaleout {workers}: the number of workers (and Ray CPUs) to compare with the "
            "serial run; valid: 2 or more"
        )
    if role is not None:
        raise pytest.UsageError(
            "--scaleout runs pytest-xdist itself (-n N inside); leave -n/--dist out"
        )
    for flag in ("--reference", "--update-reference"):
        if config.getoption(flag):
            raise pytest.UsageError(
                f"--scaleout and {flag}: the scale-out runs compare with the serial run, not "
                "with references; check a run's results with python -m bench compare"
            )


def pytest_generate_tests(metafunc):
    if "cell" in metafunc.fixturenames:
        cells = parse_cells(metafunc.config)
        _SUITE.cells = cells
        params = [
            pytest.param(c, id=c.id, marks=pytest.mark.xdist_group(group_name(c))) for c in cells
        ]
        metafunc.parametrize("cell", params)


def _benchmark_of_run(config) -> str:
    """The test function this run's options select: the cells, or an opt-in benchmark."""
    if config.getoption("--scaleout", None) is not None:
        return "test_scaleout"
    if config.getoption("--sweep-paths", False):
        return "test_sweep_path"
    return "test_cell"


def pytest_collection_modifyitems(config, items):
    # --scaleout / --sweep-paths: that benchmark instead of the cells; without, the cells only
    wanted = _benchmark_of_run(config)
    dropped = [i for i in items if i.originalname != wanted]
    if dropped:
        items[:] = [i for i in items if i not in dropped]
        config.hook.pytest_deselected(items=dropped)
    if config.stash.get(_XDIST_ONLY, False):  # --benchmark-only, applied by the suite
        skip = pytest.mark.skip(reason="Skipping non-benchmark (--benchmark-only active).")
        for item in items:
            if "benchmark" not in getattr(item, "fixturenames", ()):
                item.add_marker(skip)


_SUITE = Suite()
_WORKERS: dict[str, dict] = {}  # controller: what each xdist worker reported


@pytest.fixture(scope="session")
def suite() -> Suite:
    return _SUITE


def pytest_sessionfinish(session):
    config = session.config
    if hasattr(config, "workeroutput"):  # an xdist worker: tell the controller what it wrote
        import torch

        config.workeroutput["sparsebench"] = {
            "results": [[i, str(p)] for i, p in _SUITE.written],
            "updated": [str(p) for p in _SUITE.updated],
            "device": _SUITE.device,
            "threads": torch.get_num_threads(),
        }


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook (controller)
def pytest_xdist_make_scheduler(config, log):
    from bench.suite.scheduling import JointGroupScheduling

    groups = {c.id: group_name(c) for c in parse_cells(config)}
    return JointGroupScheduling(config, log, groups)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook (controller)
def pytest_testnodedown(node, error):
    report = getattr(node, "workeroutput", {}).get("sparsebench")
    if report is not None:
        _WORKERS[node.gateway.id] = report


def _gathered(config) -> tuple[list, list, list, list[str]]:
    """(results, checks, updated references, notes) of the run: this process's own, or on an
    xdist controller, read back from the result files the workers reported."""
    if _xdist(config) != "controller":
        return _SUITE.results, _SUITE.checks, _SUITE.updated, []
    from bench.results import baselines as reference
    from bench.results.result import SweepResult

    written = sorted((i, p) for w in _WORKERS.values() for i, p in w["results"])
    results = [SweepResult.from_json(Path(p)) for _, p in written]
    order = {Path(p).name: i for i, p in written}  # a reference is named as its result
    updated = sorted((Path(p) for w in _WORKERS.values() for p in w["updated"]),
                     key=lambda p: order.get(p.name, len(order)))  # fmt: skip
    ref_dir = config.getoption("--reference")
    checks = []
    if ref_dir and not config.getoption("--update-reference"):
        checks = [c for r in results for c in reference.check_against(ref_dir, r)]
    notes = [
        f"{name}: {len(w['results'])} cells on {w['device']}, {w['threads']} torch thread(s)"
        for name, w in sorted(_WORKERS.items())
    ]
    notes.append(
        "pytest-benchmark is off under pytest-xdist (workers share the cores); each result's "
        "own timings (timings.attribution_s, sweep_s, ratios) are in its file"
    )
    return results, checks, updated, notes


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _xdist(config) == "worker":
        return
    from bench.results.baselines import table
    from bench.results.verdict import verdict_text

    results, checks, updated, notes = _gathered(config)
    if results:
        terminalreporter.section("sparsebench verdict: is the neuron basis as sparse as SAEs?")
        terminalreporter.write_line(verdict_text(results))
    if checks:
        moved = [c for c in checks if not c.ok]
        terminalreporter.section("sparsebench reference check")
        terminalreporter.write_line(table(checks))
        verdict = f"{len(moved)} of {len(checks)} checks moved" if moved else "all held"
        terminalreporter.write_line(f"\n{verdict}")
    if updated:
        terminalreporter.section("sparsebench references updated")
        for path in updated:
            terminalreporter.write_line(str(path))
    from bench.suite import scaleout, sweep_paths

    if sweep_paths.RUNS:
        terminalreporter.section("sparsebench sweep paths: whole prompt vs shared prefix")
        terminalreporter.write_line(sweep_paths.table(list(sweep_paths.RUNS.values())))
    if scaleout.RUNS:
        terminalreporter.section("sparsebench scale-out: wall times as ratios to serial")
        terminalreporter.write_line(scaleout.table(scaleout.RUNS))
        terminalreporter.write_line(f"\nruns and summary.json: {Path(scaleout.RUNS[0].out).parent}")
    if notes:
        terminalreporter.section("sparsebench workers (pytest-xdist, --dist loadgroup)")
        for line in notes:
            terminalreporter.write_line(line)
