"""Options and shared set-up for the benchmark suite (``pytest bench --benchmark-only``).

Each cell (model, task, basis@site[:dictionary], method, ablation) is one pytest-benchmark
case; see ``bench/test_suite.py``. Options:

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
``--n-train/--n-test`` split sizes (defaults below; ``--quick`` uses smaller ones)
``--quick``            the CI subset: sva_simple × {neurons@mlp_acts, neurons@mlp_out} ×
                       {relp, random}, small splits
``--ladder``           the dictionary-quality ladder (opt-in): the 4 SVA tasks and ioi ×
                       neurons@mlp_acts and six local SAEs (3 token budgets × 2 widths,
                       ``bench.training.config.LADDER``, trained on first use) × relp; then
                       ``python -m reports`` draws the paired ratio against CE-loss recovered
``--reference DIR``    fail a cell whose AUC or k@0.8 leaves the CI-based tolerance of its
                       committed reference (see bench/reference.py); prints what moved
``--update-reference`` write this run's results as the new references into ``--reference``
``--results-dir DIR``  also write each cell's SweepResult JSON there (default .benchmarks/results)

Model loading, dataset building and SAE training happen outside the timed body; attributions
and SAEs are cached on disk between runs. ``atp``/``relp`` attribute every basis of a task in
one set of backward passes: the suite builds one ``bench.joint.JointAttribution`` per group
(model, task, method, protocol, split); the group's first cell, timed, pays for all and records
it; the others get their scores from memory (``attribution_cached``). neurons@mlp_acts runs
first in every group, whatever the order of ``--bases``, so every dictionary cell gets its
paired k ratio. Benchmark JSON is
autosaved under .benchmarks/ so runs accumulate and ``pytest-benchmark compare`` works on them.
The run ends with the answer: per task, k@0.8 [CI] per basis, the paired ratio
dictionary / neurons@mlp_acts [CI] and a verdict (:mod:`bench.verdict`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.cell import Cell

DEFAULT_BASES = "neurons@mlp_acts,neurons@mlp_out,sae@mlp_out:local"
BASELINE_CELL = ("neurons", "mlp_acts", None)  # the denominator of every paired k ratio
DEFAULT_METHODS = "relp,atp,random"
DEFAULT_N = (300, 32)  # 300/40 (docs/METHOD.md's example) takes ~10% longer; --n-test 40
DTYPES = ("auto", "float32", "bfloat16")
QUICK = {"tasks": "sva_simple", "bases": "neurons@mlp_acts,neurons@mlp_out",
         "methods": "relp,random", "n": (64, 24)}  # fmt: skip
LADDER_TASKS = "sva_simple,sva_within_rc,sva_across_pp,sva_across_rc,ioi"


def ladder_bases() -> str:
    """neurons@mlp_acts and one local SAE per rung of the quality ladder (bench.training.config)."""
    from bench.training.config import LADDER

    return ",".join(["neurons@mlp_acts", *(f"sae@mlp_out:local:{name}" for name in LADDER)])


def pytest_addoption(parser):
    g = parser.getgroup("sparsebench")
    g.addoption("--model", default="smollm2-135m")
    g.addoption("--tasks", default=None)
    g.addoption("--bases", default=None)
    g.addoption("--methods", default=None)
    g.addoption("--ablation", default="patch")
    g.addoption("--error-mode", default="ablate")
    g.addoption("--dtype", default="auto")
    g.addoption("--n-train", type=int, default=None)
    g.addoption("--n-test", type=int, default=None)
    g.addoption("--quick", action="store_true")
    g.addoption("--ladder", action="store_true")
    g.addoption("--reference", default=None)
    g.addoption("--update-reference", action="store_true")
    g.addoption("--results-dir", default=".benchmarks/results")


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _fail(what: str, bad: list[str], valid) -> None:
    raise pytest.UsageError(f"unknown {what} {', '.join(bad)}; valid: {', '.join(valid)}")


def parse_cells(config) -> list[Cell]:
    """Expand the options into cells; bad values fail fast with the valid choices."""
    from bench.attribution import METHODS
    from bench.protocol import ERROR_MODES, PROTOCOLS
    from tasks import list_tasks

    opt = config.getoption
    quick, ladder = opt("--quick"), opt("--ladder")
    if quick and ladder:
        raise pytest.UsageError("--quick and --ladder select different cells; pass one of them")
    all_tasks = [t.name for t in list_tasks()]
    default_tasks = QUICK["tasks"] if quick else LADDER_TASKS if ladder else ",".join(all_tasks)
    default_bases = QUICK["bases"] if quick else ladder_bases() if ladder else DEFAULT_BASES
    tasks = _split(opt("--tasks") or default_tasks)
    bases = _split(opt("--bases") or default_bases)
    methods = _split(opt("--methods") or (QUICK["methods"] if quick else "relp" if ladder
                                          else DEFAULT_METHODS))  # fmt: skip
    n_train, n_test = QUICK["n"] if quick else DEFAULT_N
    n_train = n_train if opt("--n-train") is None else opt("--n-train")  # 0 is not "unset"
    n_test = n_test if opt("--n-test") is None else opt("--n-test")
    from bench.validate import BadInputError, check_suite_options

    try:
        check_suite_options(n_train, n_test, opt("--results-dir"), opt("--reference"))
    except BadInputError as err:
        raise pytest.UsageError(str(err)) from None
    if bad := [t for t in tasks if t not in all_tasks]:
        _fail("task(s)", bad, all_tasks)
    if bad := [m for m in methods if m not in METHODS]:
        _fail("method(s)", bad, METHODS)
    if opt("--ablation") not in PROTOCOLS:
        _fail("ablation", [opt("--ablation")], PROTOCOLS)
    if opt("--error-mode") not in ERROR_MODES:
        _fail("error mode", [opt("--error-mode")], ERROR_MODES)
    if opt("--dtype") not in DTYPES:
        _fail("dtype", [opt("--dtype")], DTYPES)
    parsed = []
    for spec in bases:
        try:
            parsed.append(Cell.parse_basis(spec))
        except ValueError as err:
            raise pytest.UsageError(str(err)) from None
    if opt("--update-reference") and not opt("--reference"):
        raise pytest.UsageError("--update-reference needs --reference DIR (e.g. baselines/)")
    # neurons@mlp_acts first in every group: it is the denominator of the dictionary cells'
    # paired k ratios, so the ratio does not depend on the order of --bases
    parsed.sort(key=lambda b: (b["basis"], b["site"], b["dictionary"]) != BASELINE_CELL)
    where = {"model": opt("--model"), "n_train": n_train, "n_test": n_test}
    protocol = {"ablation": opt("--ablation"), "error_mode": opt("--error-mode")}
    return [
        Cell(task=t, **b, method=m, **protocol, **where)
        for t in tasks
        for b in parsed
        for m in methods
    ]


def pytest_configure(config):
    _SUITE.dtype = config.getoption("--dtype", default="auto")
    _SUITE.config = config
    # Keep history: every run of the suite is saved for `pytest-benchmark compare`.
    if not config.getoption("benchmark_json", default=None):
        config.option.benchmark_autosave = True


def pytest_generate_tests(metafunc):
    if "cell" in metafunc.fixturenames:
        cells = parse_cells(metafunc.config)
        _SUITE.cells = cells
        metafunc.parametrize("cell", cells, ids=[c.id for c in cells])


@dataclass
class Suite:
    """Session state: loaded models and datasets, and every reference check made."""

    cells: list = field(default_factory=list)
    dtype: str = "auto"
    config: object = None
    handles: dict = field(default_factory=dict)
    datasets: dict = field(default_factory=dict)
    bases: dict = field(default_factory=dict)
    bare_torch_timings: dict = field(default_factory=dict)
    neuron_cells: dict = field(default_factory=dict)  # per-pair metrics for paired k ratios
    results: list = field(default_factory=list)  # every cell's SweepResult, for the verdict
    joints: dict = field(default_factory=dict)  # joint group -> its JointAttribution
    checks: list = field(default_factory=list)
    updated: list = field(default_factory=list)

    @contextlib.contextmanager
    def shown(self, what: str):
        """Let a long set-up step (first model fetch, local SAE training) show its progress
        bars through pytest's output capture, under a line saying what it is."""
        capman = self.config.pluginmanager.getplugin("capturemanager") if self.config else None
        reporter = self.config.pluginmanager.getplugin("terminalreporter") if self.config else None
        if capman is None or reporter is None:
            yield
            return
        with capman.global_and_fixture_disabled():
            reporter.write_line(f"\nsparsebench: {what}")
            yield

    def handle(self, model: str):
        if model not in self.handles:
            from bench import load_model

            with self.shown(f"loading {model} (first use fetches and converts it)"):
                self.handles[model] = load_model(model, dtype=self.dtype)
        return self.handles[model]

    def basis(self, cell: Cell):
        """Each basis is built once per run (a local SAE trains here on first use)."""
        key = (cell.model, cell.basis, cell.site, cell.dictionary)
        if key not in self.bases:
            from bench.bases import make_basis

            handle = self.handle(cell.model)
            label = cell.label
            note = " (a local dictionary trains on first use)" if cell.dictionary == "local" else ""
            shown = self.shown(f"building basis {label}{note}") if cell.dictionary else None
            with shown or contextlib.nullcontext():
                self.bases[key] = make_basis(handle, cell.basis, cell.site, cell.dictionary)
        return self.bases[key]

    @staticmethod
    def joint_group(cell: Cell) -> tuple:
        """Cells sharing this key can be attributed in one joint pass (same split, method)."""
        return (cell.model, cell.task, cell.method, cell.ablation, cell.n_train, cell.n_test)

    def joint(self, cell: Cell):
        """The JointAttribution of ``cell``'s group (built on the group's first cell, from every
        selected cell of the group); None for methods that attribute one basis at a time."""
        from bench.attribution import JOINT_METHODS
        from bench.joint import JointAttribution
        from bench.run import prepare

        if cell.method not in JOINT_METHODS:
            return None
        group = self.joint_group(cell)
        if group not in self.joints:
            handle, ds = self.handle(cell.model), self.dataset(cell)
            members = [c for c in self.cells if self.joint_group(c) == group]
            preps = [prepare(handle, ds, c, self.basis(c)) for c in members]
            self.joints[group] = JointAttribution(preps)
        return self.joints[group]

    def dataset(self, cell: Cell):
        key = (cell.model, cell.task, cell.n_train, cell.n_test)
        if key not in self.datasets:
            from tasks import get_task

            tok = self.handle(cell.model).tokenizer
            self.datasets[key] = get_task(cell.task).build(tok, cell.n_train, cell.n_test, 0)
        return self.datasets[key]


_SUITE = Suite()


@pytest.fixture(scope="session")
def suite() -> Suite:
    return _SUITE


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    from bench.reference import table
    from bench.verdict import verdict_text

    if _SUITE.results:
        terminalreporter.section("sparsebench verdict: is the neuron basis as sparse as SAEs?")
        terminalreporter.write_line(verdict_text(_SUITE.results))
    if _SUITE.checks:
        moved = [c for c in _SUITE.checks if not c.ok]
        terminalreporter.section("sparsebench reference check")
        terminalreporter.write_line(table(_SUITE.checks))
        verdict = f"{len(moved)} of {len(_SUITE.checks)} checks moved" if moved else "all held"
        terminalreporter.write_line(f"\n{verdict}")
    if _SUITE.updated:
        terminalreporter.section("sparsebench references updated")
        for path in _SUITE.updated:
            terminalreporter.write_line(str(path))


def results_dir(config) -> Path:
    return Path(config.getoption("--results-dir"))
