"""Checks at the door: every number, size, path, device and dtype a user gives.

Each entry point validates what it was given before it loads a model or writes a byte, through
the functions here, and each message names the value, what is valid and the option:

- the command lines (``python -m bench ...``, ``python -m bench.training``, the suite's pytest
  options): style ``"cli"``, options named as on the command line (``--batch-size -1: must be
  an integer ≥ 1``); the per-command checks are in :mod:`bench.cli.checks`;
- ``run_sweep`` / ``bench.pipeline.prepare`` (the Python API): style ``"api"``, options named
  as keyword arguments (``batch_size=-1: must be an integer ≥ 1``).

They raise :class:`bench.core.errors.BadInputError`. Finiteness checks live in
:mod:`bench.core.finite`. A leaf: imports nothing above ``bench.core``; no torch.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bench.core.errors import BadInputError

CLI, API = "cli", "api"


# Minimum of each integer a cell or a split takes (the same at every entry point).
CELL_MINIMUMS = {
    "seed": 0,
    "batch_size": 1,
    "ig_steps": 1,
    "n_bootstrap": 1,
    "masks_per_forward": 1,
}


# The test split needs two pairs for bootstrap CIs; the train split one to attribute on.
SPLIT_MINIMUMS = {"n_train": 1, "n_test": 2}


WHY = {"n_test": "bootstrap CIs need two test pairs", "n_train": "attribution needs a pair"}


FLOAT_DTYPES = ("float32", "bfloat16", "float16", "float64")


DTYPES = ("auto", *FLOAT_DTYPES)


def option_name(name: str, style: str = API) -> str:
    """``batch_size`` as the entry point spells it: ``--batch-size`` (cli) or ``batch_size``."""
    if name.startswith("-") or style != CLI:
        return name
    return "--" + name.replace("_", "-")


def label(name: str, value: Any, style: str = API) -> str:
    """``--batch-size -1`` (cli) or ``batch_size=-1`` (api): how a message names a value."""
    opt = option_name(name, style)
    shown = value if isinstance(value, str) and style == CLI else repr(value)
    return f"{opt} {shown}" if style == CLI or opt.startswith("-") else f"{opt}={shown}"


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(
    value: Any,
    name: str,
    minimum: int | None = None,
    maximum: int | None = None,
    style: str = API,
    why: str = "",
) -> int:
    """``value`` as an int, or :class:`BadInputError` naming the option and the valid range.

    ``why``: what the bound is (e.g. "the SAE width"), appended to the message."""
    ok = _is_int(value)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if ok:
        return int(value)
    if minimum is not None and maximum is not None:
        valid = f"an integer in {minimum}..{maximum}"
    elif minimum is not None:
        valid = f"an integer ≥ {minimum}"
    elif maximum is not None:
        valid = f"an integer ≤ {maximum}"
    else:
        valid = "an integer"
    raise BadInputError(f"{label(name, value, style)}: must be {valid}{f' ({why})' if why else ''}")


def check_positive_float(value: Any, name: str, style: str = API) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok and math.isfinite(value) and value > 0:
        return float(value)
    raise BadInputError(f"{label(name, value, style)}: must be a finite number > 0")


def check_numbers(values: Mapping[str, Any], style: str = API) -> None:
    """Range-check the cell and split integers present in ``values`` (None: not given)."""
    minimums = {**CELL_MINIMUMS, **SPLIT_MINIMUMS}
    for name, value in values.items():
        if value is not None and name in minimums:
            check_int(value, name, minimums[name], style=style, why=WHY.get(name, ""))


def check_sizes(sizes: Any, n_nodes: int | None = None, style: str = API) -> tuple[int, ...] | None:
    """Circuit sizes: distinct integers in 1..n_nodes (n_nodes unknown yet: ≥ 1 only)."""
    if sizes is None:
        return None
    name = label("sizes", sizes, style)
    upper = str(n_nodes) if n_nodes is not None else "n_nodes"
    valid = f"sizes must lie in 1..{upper} (the basis's number of nodes), as distinct integers"
    if isinstance(sizes, str | bytes) or not isinstance(sizes, Iterable):
        raise BadInputError(f"{name}: {valid}; give a list such as [1, 10, 100]")
    values = list(sizes)
    if not values:
        raise BadInputError(f"{name}: {valid}; the list is empty")
    if bad := [v for v in values if not _is_int(v)]:
        raise BadInputError(f"{name}: {valid}; not integers: {bad}")
    if bad := [int(v) for v in values if v < 1 or (n_nodes is not None and v > n_nodes)]:
        raise BadInputError(f"{name}: {valid}; out of range: {bad}")
    seen: set[int] = set()
    if dupes := sorted({int(v) for v in values if v in seen or seen.add(v)}):
        raise BadInputError(f"{name}: {valid}; duplicated: {dupes}")
    return tuple(int(v) for v in values)


def n_nodes_of(basis: Any, n_layers: int, seq_len: int, error_mode: str) -> int:
    """How many nodes a sweep ranks: units on every (layer, position), plus one error node per
    (layer, position) when a dictionary basis ablates its error
    (``bench.attribution.nodes.NodeScores``)."""
    units = n_layers * seq_len * basis.n_units()
    return units + (n_layers * seq_len if basis.has_error and error_mode == "ablate" else 0)


def check_cell(
    cell: Any,
    settings: Any,
    basis: Any = None,
    n_layers: int | None = None,
    seq_len: int | None = None,
) -> None:
    """A ``bench.cell.Cell``'s and its ``RunSettings``' numbers (API names); with a basis and
    the split's shape, its sizes against the number of nodes too."""
    values = {n: getattr(settings if hasattr(settings, n) else cell, n) for n in CELL_MINIMUMS}
    check_numbers(values, API)
    if basis is None or cell.sizes is None:
        check_sizes(cell.sizes, None, API)
    else:
        check_sizes(cell.sizes, n_nodes_of(basis, n_layers, seq_len, cell.error_mode), API)


def check_dtype(value: Any, name: str = "dtype", style: str = API) -> None:
    """``auto`` or a floating torch dtype (as a string or a ``torch.dtype``)."""
    text = str(value).removeprefix("torch.")
    if text in DTYPES:
        return
    raise BadInputError(
        f"{label(name, value, style)}: unknown dtype; valid: {', '.join(DTYPES)} (models run "
        "in floating point)"
    )


CUDA_HINT = (
    "install a CUDA build of torch: set SPARSEBENCH_TORCH to the torch requirement (e.g. "
    'SPARSEBENCH_TORCH="torch==2.13.0") and PIP_EXTRA_INDEX_URL to the matching index (e.g. '
    "https://download.pytorch.org/whl/cu128), then rebuild the environment with "
    "`.venv/bin/tox -r -e bench` (README, 'GPU users'); or run on the CPU (device cpu)"
)


def check_device(value: Any, name: str = "device", style: str = API) -> None:
    """A device string torch parses and this torch can use; says how to get CUDA if missing."""
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise BadInputError(
            f"{label(name, value, style)}: not a device; valid: cpu, cuda, cuda:N, mps"
        ) from None
    if device.type == "cuda":
        if torch.version.cuda is None:
            raise BadInputError(
                f"{label(name, value, style)}: this torch ({torch.__version__}) was built without "
                f"CUDA; {CUDA_HINT}"
            )
        if not torch.cuda.is_available():
            raise BadInputError(
                f"{label(name, value, style)}: torch {torch.__version__} has CUDA but sees no GPU "
                "(check the driver and CUDA_VISIBLE_DEVICES); or run on the CPU (device cpu)"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise BadInputError(
                f"{label(name, value, style)}: no such GPU; valid: cuda:0..cuda:{count - 1}"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise BadInputError(f"{label(name, value, style)}: MPS is not available; valid: cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise BadInputError(f"{label(name, value, style)}: unsupported device; valid: cpu, cuda")


def _probe_writable(directory: Path) -> str | None:
    """Why files cannot be created in ``directory`` (an existing directory), or None."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".sparsebench-probe-", dir=directory)
    except OSError as err:
        return err.strerror or str(err)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


# a run writes results, cache entries and figures of a few MiB each; below this, refuse up front
MIN_FREE_BYTES = 32 << 20


def check_writable_parent(path: Path, what: str) -> None:
    """``path``'s directory exists and takes new files, or can be created: checked before any
    work is done, so an unwritable output never loses a finished run."""
    ancestor = path.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise BadInputError(f"{what}: cannot be created: {ancestor} is a file, not a directory")
    if reason := _probe_writable(ancestor):
        raise BadInputError(f"{what}: cannot write in directory {ancestor} ({reason})")
    free = shutil.disk_usage(ancestor).free
    if free < MIN_FREE_BYTES:
        raise BadInputError(
            f"{what}: only {free / 2**20:.1f} MiB free on the disk holding {ancestor}; "
            f"sparsebench needs {MIN_FREE_BYTES >> 20} MiB there to write its results: free "
            "some space or choose a directory on another disk"
        )


def check_output_file(
    path: str | os.PathLike,
    name: str = "out",
    style: str = API,
    inputs: Mapping[str, str | os.PathLike | None] | None = None,
) -> Path:
    """An output that must be a *file* path: refuse a directory (existing, or written with a
    trailing slash), an input of the same run (``inputs``: option -> path) and an unwritable
    location; all before any work is done. Returns the path."""
    text = os.fspath(path)
    what = label(name, text, style)
    example = "result.json"
    if not text:
        raise BadInputError(f"{what}: must be a file path, e.g. {example}")
    if text.endswith(("/", os.sep)):
        raise BadInputError(
            f"{what}: ends with '/', so it names a directory; it must be a file path, e.g. "
            f"{text}{example} (nothing was written)"
        )
    target = Path(text)
    if target.is_dir():
        raise BadInputError(
            f"{what}: is an existing directory; it must be a file path, e.g. "
            f"{target / example} (the directory was left as it is)"
        )
    for option, other in (inputs or {}).items():
        if other is not None and Path(other).resolve() == target.resolve():
            raise BadInputError(
                f"{what}: is also {option_name(option, style)}; writing there would overwrite "
                "that input; choose another output path"
            )
    check_writable_parent(target, what)
    return target
