"""What ``python -m bench steer`` and ``python -m bench auroc`` share: their common options,
their checks (before a model loads or a byte is written) and building the bases."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cell import CELL
from bench.core.cache import check_cache_usable
from bench.core.checks import CLI, check_device, check_dtype, check_int, check_output_file
from bench.core.errors import BadInputError

DEFAULT_BASES = "neurons@mlp_acts,sae@mlp_out:local"


def add_common(p: argparse.ArgumentParser, task: str, n_train: int) -> None:
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", default=task, help=f"registered task (default {task})")
    p.add_argument("--bases", default=DEFAULT_BASES, help="comma-separated basis@site[:dictionary]"
                   f" (default {DEFAULT_BASES})")  # fmt: skip
    p.add_argument(
        "--method", default=CELL.method, help=f"attribution method (default {CELL.method})"
    )
    p.add_argument("--n-train", type=int, default=n_train)
    p.add_argument("--seed", type=int, default=CELL.seed)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: the device's)")
    p.add_argument("--out", required=True, help="where to write the JSON (a figure lands beside)")
    p.add_argument("--quiet", action="store_true")


def check_common(args: argparse.Namespace) -> list[dict]:
    """Every shared option; the parsed bases (Cell keywords) in order."""
    from bench.attribution.registry import check_method
    from bench.cell import Cell
    from bench.suite.options import split_bases
    from tasks import get_task

    for name in ("n_train", "seed"):
        check_int(getattr(args, name), name, 1 if name == "n_train" else 0, style=CLI)
    check_device(args.device, "device", CLI)
    if args.dtype is not None:
        check_dtype(args.dtype, "dtype", CLI)
    try:
        check_method(args.method)
        get_task(args.task)
        specs = [Cell.parse_basis(s) for s in split_bases(args.bases)]
    except ValueError as err:
        raise BadInputError(str(err)) from None
    if not specs:
        raise BadInputError(f"--bases {args.bases!r}: give at least one basis@site")
    check_output_file(args.out, "out", CLI)
    check_cache_usable()
    return specs


def build_bases(handle, specs: list[dict]) -> list[tuple[str, object]]:
    """(label, Basis) per spec; a local dictionary trains on first use."""
    from bench.bases import make_basis
    from bench.cell import Cell
    from bench.training import local as _local

    out = []
    for s in specs:
        basis = make_basis(handle, s["basis"], s["site"], s["dictionary"])
        _local.ensure_quality(handle, basis)  # a published dictionary: measured once, cached
        out.append((Cell(**s).label, basis))
    return out


def figure_path(out: str) -> Path:
    return Path(out).with_suffix("")
