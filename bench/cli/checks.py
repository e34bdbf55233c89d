"""The command lines' own checks (``python -m bench sweep|correlate|compare``): every option,
before the model loads or a byte is written. Shared checks are :mod:`bench.core.checks`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.core.cache import check_cache_usable
from bench.core.checks import (
    CLI,
    check_device,
    check_dtype,
    check_int,
    check_numbers,
    check_output_file,
    check_writable_parent,
)
from bench.core.errors import BadInputError


def check_sweep_args(args: Any) -> None:
    """``python -m bench sweep``: every option, before the model loads or a byte is written."""
    from bench.attribution.registry import check_method
    from bench.bases import BASIS_NAMES
    from bench.model.sites import SITE_NAMES

    names = ("n_train", "n_test", "seed", "batch_size", "ig_steps", "n_bootstrap")
    check_numbers({n: getattr(args, n) for n in names}, CLI)
    if args.dtype is not None:  # None: the device's default (bench.model.load.default_dtype)
        check_dtype(args.dtype, "dtype", CLI)
    check_device(args.device, "device", CLI)
    check_method(args.method)  # the ablation protocol and error mode: in run.prepare
    if args.basis not in BASIS_NAMES:
        raise BadInputError(f"--basis {args.basis}: unknown basis; valid: {', '.join(BASIS_NAMES)}")
    if args.site not in SITE_NAMES:
        raise BadInputError(f"--site {args.site}: unknown site; valid: {', '.join(SITE_NAMES)}")
    check_output_file(args.out, "out", CLI, inputs={"task_file": args.task_file})
    check_cache_usable()  # the model and dictionaries are cached there
    if args.task_file:
        from tasks.load import read_pairs

        if Path(args.task_file).is_dir():
            raise BadInputError(
                f"--task-file {args.task_file}: is a directory; give a JSONL file of pairs"
            )
        if not Path(args.task_file).is_file():
            raise BadInputError(f"--task-file {args.task_file}: no such file")
        read_pairs(args.task_file)  # format errors (JSON array, dataset JSON, ...) before loading
    else:
        from tasks import get_task

        get_task(args.task)  # an unknown name lists the registered tasks


def check_correlate_args(args: Any) -> None:
    """``python -m bench correlate``."""
    from bench.attribution.registry import check_method

    check_int(args.n_top, "n_top", 2, style=CLI, why="correlations need two nodes")
    check_int(args.n_random, "n_random", 0, style=CLI)
    check_int(args.n_pairs, "n_pairs", 1, style=CLI)
    check_int(args.seed, "seed", 0, style=CLI)
    methods = [m for m in args.methods.split(",") if m]
    if not methods:
        raise BadInputError(f"--methods {args.methods!r}: give at least one, e.g. relp,atp")
    for m in methods:
        check_method(m)


def check_compare_args(args: Any) -> None:
    """``python -m bench compare``: ``--reference`` must be a directory (existing, unless
    ``--update`` creates it in a writable place)."""
    ref = Path(args.reference)
    if ref.exists() and not ref.is_dir():
        raise BadInputError(
            f"--reference {args.reference}: is a file; it must be a directory of reference "
            "results (e.g. baselines)"
        )
    if not args.update and not ref.is_dir():
        raise BadInputError(
            f"--reference {args.reference}: no such directory; give the directory of reference "
            "results (e.g. baselines), or create references there with --update"
        )
    if args.update:
        check_writable_parent(ref / "model" / "cell.json", f"--reference {args.reference}")
