"""The benchmark suite's cells and how one is run, shared by every way of running them.

``pytest bench --benchmark-only`` (serial, or over pytest-xdist workers: ``bench/conftest.py``)
and ``python -m bench ray`` (Ray tasks: :mod:`bench.distributed`) take the same options
(:data:`SUITE_OPTIONS`), expand them into the same cells (:func:`parse_cells`), group them the
same way (:func:`joint_group`) and run each group's cells, in order, through one
:class:`Suite` per process (:meth:`Suite.run_cell`). Steps per cell:

1. set-up, untimed: model, dataset, basis (a local SAE trains here on first use), token ids,
   and the cell's joint-attribution group (:class:`bench.joint.JointAttribution`, built from
   every selected cell of the group on its first cell);
2. the timed body: attribution + sweep (:func:`bench.run.measure`), timed by pytest-benchmark
   where it runs, else by the SweepResult's own timings;
3. bare-torch timings (once per dataset and process), the paired k ratio of a dictionary cell
   against its group's neurons@mlp_acts cell, the SweepResult (:func:`bench.run.finish`).

A group (model, task, method, protocol, split) never spans two processes: its joint
attribution and its paired ratios need all of its cells in one. neurons@mlp_acts runs first
in every group, whatever the order of ``--bases``, so every dictionary cell gets its ratio.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cell import Cell
from bench.validate import BadInputError, check_device, check_suite_options

log = logging.getLogger(__name__)

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


# (flag, argparse/pytest keywords): the suite's options, as pytest and `python -m bench ray`
# declare them; "--devices" is pytest-xdist's only (Ray hands each task its own GPU).
SUITE_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--model", {"default": "smollm2-135m", "help": "model (registry name, directory, hub id)"}),
    ("--tasks", {"default": None, "help": "comma-separated tasks (default: all)"}),
    ("--bases", {"default": None, "help": f"comma-separated basis@site[:dictionary] "
                 f"(default: {DEFAULT_BASES})"}),
    ("--methods", {"default": None, "help": f"comma-separated (default: {DEFAULT_METHODS})"}),
    ("--ablation", {"default": "patch", "help": "protocol: patch, mean, zero or marks"}),
    ("--error-mode", {"default": "ablate", "help": "SAE error nodes: ablate or keep"}),
    ("--dtype", {"default": "auto", "help": "auto (bf16 on CUDA and bf16 CPUs), float32, "
                 "bfloat16"}),
    ("--device", {"default": "cpu", "help": "cpu (default), cuda or cuda:N"}),
    ("--devices", {"default": None, "help": "comma-separated devices for pytest-xdist "
                   "workers (-n N): worker i runs on devices[i % len], e.g. cuda:0,cuda:1"}),
    ("--n-train", {"type": int, "default": None, "help": "train pairs (default 300; quick 64)"}),
    ("--n-test", {"type": int, "default": None, "help": "test pairs (default 32; quick 24)"}),
    ("--quick", {"action": "store_true", "help": "the CI subset (sva_simple, neurons, relp, "
                 "random, small splits)"}),
    ("--ladder", {"action": "store_true", "help": "the dictionary-quality ladder (opt-in): "
                  "4 SVA tasks and ioi x neurons@mlp_acts and 6 local SAEs (3 token budgets x "
                  "2 widths) x relp; python -m reports then draws ratio vs CE-loss recovered"}),
    ("--reference", {"default": None, "help": "check each cell against this reference dir"}),
    ("--update-reference", {"action": "store_true", "help": "write results as references"}),
    ("--results-dir", {"default": ".benchmarks/results", "help": "where each cell's "
                       "SweepResult JSON is written"}),
)  # fmt: skip


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _unknown(what: str, bad: list[str], valid) -> BadInputError:
    return BadInputError(f"unknown {what} {', '.join(bad)}; valid: {', '.join(valid)}")


def _check_local(dictionary: str | None) -> None:
    """A local dictionary's options and config name, before anything runs."""
    if dictionary and (dictionary == "local" or dictionary.startswith("local:")):
        from bench.bases.dictionary import parse_dictionary
        from bench.training.config import preset

        spec = parse_dictionary(dictionary)
        if spec.target:
            preset(spec.target)


def parse_cells(config) -> list[Cell]:
    """Expand the options (anything with ``getoption("--flag")``: a pytest config, or
    :class:`ArgsOptions`) into cells; a bad value raises :class:`BadInputError` naming the
    valid choices. Cells come in run order: task, basis (neurons@mlp_acts first), method."""
    from bench.attribution import METHODS
    from bench.protocol import ERROR_MODES, PROTOCOLS
    from tasks import list_tasks

    opt = config.getoption
    quick, ladder = opt("--quick"), opt("--ladder")
    if quick and ladder:
        raise BadInputError("--quick and --ladder select different cells; pass one of them")
    all_tasks = [t.name for t in list_tasks()]
    default_tasks = QUICK["tasks"] if quick else LADDER_TASKS if ladder else ",".join(all_tasks)
    default_bases = QUICK["bases"] if quick else ladder_bases() if ladder else DEFAULT_BASES
    default_methods = QUICK["methods"] if quick else "relp" if ladder else DEFAULT_METHODS
    tasks = _split(opt("--tasks") or default_tasks)
    bases = _split(opt("--bases") or default_bases)
    methods = _split(opt("--methods") or default_methods)
    n_train, n_test = QUICK["n"] if quick else DEFAULT_N
    n_train = n_train if opt("--n-train") is None else opt("--n-train")  # 0 is not "unset"
    n_test = n_test if opt("--n-test") is None else opt("--n-test")
    check_suite_options(n_train, n_test, opt("--results-dir"), opt("--reference"))
    if bad := [t for t in tasks if t not in all_tasks]:
        raise _unknown("task(s)", bad, all_tasks)
    if bad := [m for m in methods if m not in METHODS]:
        raise _unknown("method(s)", bad, METHODS)
    if opt("--ablation") not in PROTOCOLS:
        raise _unknown("ablation", [opt("--ablation")], PROTOCOLS)
    if opt("--error-mode") not in ERROR_MODES:
        raise _unknown("error mode", [opt("--error-mode")], ERROR_MODES)
    if opt("--dtype") not in DTYPES:
        raise _unknown("dtype", [opt("--dtype")], DTYPES)
    parsed = []
    for spec in bases:
        try:
            parsed.append(Cell.parse_basis(spec))
            _check_local(parsed[-1]["dictionary"])
        except ValueError as err:
            raise BadInputError(str(err)) from None
    if opt("--update-reference") and not opt("--reference"):
        raise BadInputError("--update-reference needs --reference DIR (e.g. baselines/)")
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


def parse_devices(config) -> list[str]:
    """The devices of ``--device`` or ``--devices`` (one list; worker i of N takes
    ``devices[i % len]``), each checked against this torch (a clear error if it cannot use it)."""
    one, many = config.getoption("--device"), config.getoption("--devices", None)
    if many is not None and one not in (None, "cpu"):
        raise BadInputError(
            f"--device {one} and --devices {many}: give one of them (--devices lists a device "
            "per pytest-xdist worker)"
        )
    devices = _split(many) if many is not None else [one or "cpu"]
    if not devices:
        raise BadInputError(f"--devices {many!r}: give at least one device, e.g. cuda:0,cuda:1")
    for device in devices:
        check_device(device, "--devices" if many is not None else "--device", "cli")
    return devices


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def threads_per_worker(n_workers: int) -> int:
    """Torch threads of one of ``n_workers`` processes sharing this machine:
    ``$SPARSEBENCH_THREADS`` when set, else the cores split evenly (at least 1)."""
    value = os.environ.get("SPARSEBENCH_THREADS")
    if value:
        return int(value) if value.isdigit() and int(value) > 0 else 1  # load_model names it
    return max(1, cpu_cores() // max(1, n_workers))


class ArgsOptions:
    """An argparse namespace read like a pytest config: ``getoption("--n-train")``."""

    def __init__(self, args: Any):
        self.args = args

    def getoption(self, name: str, default: Any = None) -> Any:
        return getattr(self.args, name.lstrip("-").replace("-", "_"), default)


def joint_group(cell: Cell) -> tuple:
    """Cells sharing this key are attributed in one joint pass (same split and method) and
    share one denominator of their paired k ratios: they run in one process, in order."""
    return (cell.model, cell.task, cell.method, cell.ablation, cell.n_train, cell.n_test)


def group_name(cell: Cell) -> str:
    """The group as one string (an xdist_group name, a Ray task name): no ``@`` or ``]``,
    which pytest-xdist's loadgroup scheduler reads in node ids."""
    model, task, method, ablation, n_train, n_test = joint_group(cell)
    name = f"{model}|{task}|{method}|{ablation}|n{n_train}x{n_test}"
    return re.sub(r"[^A-Za-z0-9_.:/|=+-]", "-", name)


def groups(cells: list[Cell]) -> list[list[Cell]]:
    """The cells by group, groups in order of their first cell, cells in run order."""
    out: dict[tuple, list[Cell]] = {}
    for cell in cells:
        out.setdefault(joint_group(cell), []).append(cell)
    return list(out.values())


def result_path(results_dir: str | Path, result) -> Path:
    """Where a cell's SweepResult goes: ``<results_dir>/<model>/<cell file stem>.json``."""
    return Path(results_dir) / result.model / f"{Cell.of_result(result).file_stem}.json"


# ``timed(measure, setup)``: runs ``measure(*args, **kwargs)`` with ``setup()``'s
# ``(args, kwargs)`` and returns what it returns (pytest-benchmark's ``pedantic`` fits)
Timer = Callable[[Callable[..., Any], Callable[[], tuple]], Any]


def _untimed(fn: Callable[..., Any], setup: Callable[[], tuple]) -> Any:
    args, kwargs = setup()
    return fn(*args, **kwargs)


@contextlib.contextmanager
def showing(config, what: str):
    """Let a long step (first model fetch, local SAE training, a scale-out run) show its
    progress through pytest's output capture, under a line saying what it is (``config``:
    pytest's; None, or outside pytest: a log line)."""
    plugins = config.pluginmanager if config is not None else None
    capman = plugins.getplugin("capturemanager") if plugins else None
    reporter = plugins.getplugin("terminalreporter") if plugins else None
    if capman is None or reporter is None:
        log.info("sparsebench: %s", what)
        yield
        return
    with capman.global_and_fixture_disabled():
        reporter.write_line(f"\nsparsebench: {what}")
        yield


@dataclass
class Suite:
    """One process's state: loaded models, datasets and bases, each group's joint attribution
    and neurons@mlp_acts measurement; and the results, checks and references of its run."""

    cells: list = field(default_factory=list)
    dtype: str = "auto"
    device: str = "cpu"
    config: object = None  # the pytest config, when run by pytest (progress lines)
    handles: dict = field(default_factory=dict)
    datasets: dict = field(default_factory=dict)
    bases: dict = field(default_factory=dict)
    bare_torch_timings: dict = field(default_factory=dict)
    neuron_cells: dict = field(default_factory=dict)  # per-pair metrics for paired k ratios
    results: list = field(default_factory=list)  # every cell's SweepResult, for the verdict
    written: list = field(default_factory=list)  # (cell index, result file) of this process
    joints: dict = field(default_factory=dict)  # joint group -> its JointAttribution
    checks: list = field(default_factory=list)
    updated: list = field(default_factory=list)

    def shown(self, what: str):
        return showing(self.config, what)

    def handle(self, model: str):
        if model not in self.handles:
            from bench import load_model

            with self.shown(f"loading {model} on {self.device} (first use fetches it)"):
                self.handles[model] = load_model(model, device=self.device, dtype=self.dtype)
        return self.handles[model]

    def basis(self, cell: Cell):
        """Each basis is built once per run (a local SAE trains here on first use)."""
        key = (cell.model, cell.basis, cell.site, cell.dictionary)
        if key not in self.bases:
            from bench.bases import make_basis

            handle = self.handle(cell.model)
            local = cell.dictionary and cell.dictionary.split(":")[0] == "local"
            note = " (a local dictionary trains on first use)" if local else ""
            shown = self.shown(f"building basis {cell.label}{note}") if cell.dictionary else None
            with shown or contextlib.nullcontext():
                self.bases[key] = make_basis(handle, cell.basis, cell.site, cell.dictionary)
        return self.bases[key]

    joint_group = staticmethod(joint_group)

    def joint(self, cell: Cell):
        """The JointAttribution of ``cell``'s group (built on the group's first cell, from every
        selected cell of the group); None for methods that attribute one basis at a time."""
        from bench.attribution import JOINT_METHODS
        from bench.joint import JointAttribution
        from bench.run import prepare

        if cell.method not in JOINT_METHODS:
            return None
        group = joint_group(cell)
        if group not in self.joints:
            handle, ds = self.handle(cell.model), self.dataset(cell)
            members = [c for c in self.cells if joint_group(c) == group]
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

    def run_cell(self, cell: Cell, timed: Timer | None = None):
        """Steps 1-3 of the module docstring for one cell of ``self.cells``; the SweepResult.
        ``timed``: how the body is timed (pytest-benchmark's ``pedantic``; default: not)."""
        from bench.run import finish, measure, measure_bare_torch, prepare

        handle, ds = self.handle(cell.model), self.dataset(cell)
        prepared = []

        def setup():  # untimed: bases (SAEs load or train here), token ids, the joint group
            prepared.append(prepare(handle, ds, cell, self.basis(cell)))
            return (prepared[-1],), {"cache": True, "joint": self.joint(cell)}

        measured = (timed or _untimed)(measure, setup)
        prep = prepared[-1]
        key = (cell.model, cell.task, cell.n_train, cell.n_test)
        if key not in self.bare_torch_timings:  # bare torch on this dataset's batches, once
            batch = {k: v[: prep.settings.batch_size] for k, v in prep.train.items()}
            self.bare_torch_timings[key] = measure_bare_torch(handle, batch, prep.test)
        # k@0.8(dictionary) / k@0.8(neurons@mlp_acts) with a paired bootstrap over the same pairs
        pair_key = joint_group(cell)
        if (cell.basis, cell.site) == ("neurons", "mlp_acts"):
            self.neuron_cells[pair_key] = measured
        denominator = None
        if cell.basis != "neurons" and pair_key in self.neuron_cells:
            denominator = ("neurons@mlp_acts", self.neuron_cells[pair_key])
        return finish(
            prep, measured, bare_torch=self.bare_torch_timings[key], ratio_denominator=denominator
        )


def ordered(results: list, cells: list[Cell]) -> list:
    """``results`` in the order of their cells in ``cells`` (the order a serial run makes)."""
    index = {(c.model, c.task, c.label, c.method): i for i, c in enumerate(cells)}
    return sorted(
        results,
        key=lambda r: index.get((r.model, r.task, Cell.of_result(r).label, r.method), len(index)),
    )
