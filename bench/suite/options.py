"""The suite's options and its cells, shared by every way of running them (no pytest here).

``pytest bench --benchmark-only`` (serial, or over pytest-xdist workers: :mod:`bench.suite.plugin`)
and ``python -m bench ray`` (:mod:`bench.suite.ray`) take the same options (:data:`SUITE_OPTIONS`,
every default declared once here), expand them into the same cells (:func:`parse_cells`), group
them the same way (:func:`joint_group`) and name their result files the same way
(:func:`result_path`).

A group (model, task, method, protocol, split) never spans two processes: its joint
attribution and its paired ratios need all of its cells in one. neurons@mlp_acts runs first
in every group, whatever the order of ``--bases``, so every dictionary cell gets its ratio.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench.cell import CELL, SUITE_SPLIT, Cell
from bench.core.cache import check_cache_usable
from bench.core.checks import CLI, check_device, check_numbers, check_writable_parent, label
from bench.core.errors import BadInputError

DEFAULT_BASES = "neurons@mlp_acts,neurons@mlp_out,sae@mlp_out:local"


BASELINE_CELL = ("neurons", "mlp_acts", None)  # the denominator of every paired k ratio


DEFAULT_METHODS = "relp,atp,random"


DEFAULT_N = SUITE_SPLIT  # bench.cell: every default declared once


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
    ("--ablation", {"default": CELL.ablation, "help": "protocol: patch, mean, zero or marks"}),
    ("--error-mode", {"default": CELL.error_mode, "help": "SAE error nodes: ablate or keep"}),
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


def split_bases(value: str) -> list[str]:
    """``--bases``: comma-separated ``basis@site[:dictionary]`` specs. A comma starts a new spec
    only where ``<basis>@`` follows, so a dictionary's own options keep theirs, as the README
    writes them: ``sae@mlp_out:local:width=1024,k=32,neurons@mlp_acts`` is two specs."""
    return [v.strip() for v in re.split(r",(?=\s*[A-Za-z_]+@)", value) if v.strip()]


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
    from bench.attribution.registry import METHODS
    from bench.protocol import ERROR_MODES, PROTOCOLS
    from tasks import list_tasks

    opt = config.getoption
    quick, ladder = opt("--quick"), opt("--ladder")
    if quick and ladder:
        raise BadInputError("--quick and --ladder select different cells; pass one of them")
    if ladder and opt("--bases"):
        raise BadInputError(
            f"--ladder sets its own bases ({ladder_bases()}); drop --bases {opt('--bases')}, or "
            "drop --ladder to run those bases"
        )
    all_tasks = [t.name for t in list_tasks()]
    default_tasks = QUICK["tasks"] if quick else LADDER_TASKS if ladder else ",".join(all_tasks)
    default_bases = QUICK["bases"] if quick else ladder_bases() if ladder else DEFAULT_BASES
    default_methods = QUICK["methods"] if quick else "relp" if ladder else DEFAULT_METHODS
    tasks = _split(opt("--tasks") or default_tasks)
    bases = split_bases(opt("--bases") or default_bases)
    methods = _split(opt("--methods") or default_methods)
    n_train, n_test = QUICK["n"] if quick else DEFAULT_N
    n_train = n_train if opt("--n-train") is None else opt("--n-train")  # 0 is not "unset"
    n_test = n_test if opt("--n-test") is None else opt("--n-test")
    check_suite_options(n_train, n_test, opt("--results-dir"), opt("--reference"),
                        bool(opt("--update-reference")))  # fmt: skip
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


def check_suite_options(
    n_train: Any,
    n_test: Any,
    results_dir: str | None,
    reference: str | None,
    update_reference: bool = False,
) -> None:
    """The suite's numbers and directories, at collection time: the results directory, the
    references when they are to be written, and the cache, each writable with room."""
    check_numbers({"n_train": n_train, "n_test": n_test}, CLI)
    for name, value in (("results_dir", results_dir), ("reference", reference)):
        if value is not None and Path(value).exists() and not Path(value).is_dir():
            raise BadInputError(f"{label(name, value, CLI)}: is a file; it must be a directory")
    if results_dir is not None:
        check_writable_parent(Path(results_dir) / "model" / "cell.json", label(
            "results_dir", results_dir, CLI))  # fmt: skip
    if reference is not None and update_reference:
        check_writable_parent(Path(reference) / "model" / "cell.json", label(
            "reference", reference, CLI) + " (--update-reference writes there)")  # fmt: skip
    check_cache_usable()


def results_dir(config) -> Path:
    """``--results-dir`` of a pytest config or :class:`ArgsOptions`."""
    return Path(config.getoption("--results-dir"))
