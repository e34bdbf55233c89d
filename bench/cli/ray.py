"""``python -m bench ray [suite options]``: the suite's cells as Ray tasks
(:mod:`bench.suite.ray`) into one results directory, then the verdict and reference check.
"""

from __future__ import annotations

import argparse
import sys

from bench.suite.options import SUITE_OPTIONS


def add_parser(sub) -> None:
    """Declare the command's options on the root parser's subparsers."""
    ry = sub.add_parser(
        "ray", help="the suite's cells as Ray tasks (one per joint group) into one results dir"
    )
    for flag, kwargs in SUITE_OPTIONS:
        if flag != "--devices":  # Ray hands each task its own GPU
            ry.add_argument(flag, **kwargs)
    ry.add_argument("--address", default=None, help="a Ray cluster (default: start a local one)")
    ry.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local instance "
                    "(default: this machine's cores)")  # fmt: skip
    ry.add_argument("--cpus-per-task", type=int, default=1, help="CPUs (torch threads) per "
                    "task; with --device cuda each task also asks for one GPU")  # fmt: skip
    ry.add_argument("--object-store-mb", type=int, default=256, help="local instance's store")
    ry.add_argument("--quiet", action="store_true", help="warnings only")
    ry.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bench.results import baselines as reference
    from bench.results.verdict import verdict_text
    from bench.suite.options import ArgsOptions, parse_cells
    from bench.suite.ray import run_on_ray

    cells = parse_cells(ArgsOptions(args))  # as `pytest bench` would, before Ray starts
    run = run_on_ray(
        cells, args.results_dir, args.dtype, args.device, args.address, args.num_cpus,
        args.cpus_per_task, args.object_store_mb,
    )  # fmt: skip
    print(f"{len(run.paths)} of {len(cells)} cells written under {args.results_dir}")
    if run.results:
        print("\n== sparsebench verdict: is the neuron basis as sparse as SAEs?")
        print(verdict_text(run.results))
    moved = []
    if args.reference and args.update_reference:
        for result in run.results:
            print(f"updated {reference.update(args.reference, result)}")
    elif args.reference:
        checks = [c for r in run.results for c in reference.check_against(args.reference, r)]
        moved = [c for c in checks if not c.ok]
        print("\n== sparsebench reference check")
        print(reference.table(checks))
        print(f"\n{len(moved)} of {len(checks)} checks moved" if moved else "\nall held")
    for name, err in run.failures:
        print(f"error: group {name} failed: {err}", file=sys.stderr)
    return 1 if run.failures or moved else 0
