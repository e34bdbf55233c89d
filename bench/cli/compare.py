"""``python -m bench compare RESULTS... --reference baselines/``: the reference check on saved
results (exit 1 when a cell moved), or ``--update`` to write them as references.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    """Declare the command's options on the root parser's subparsers."""
    cp = sub.add_parser("compare", help="check saved results against reference results")
    cp.add_argument("results", nargs="+", help="SweepResult JSON files or directories")
    cp.add_argument("--reference", default="baselines", help="reference directory")
    cp.add_argument("--update", action="store_true", help="write the results as references")
    cp.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bench.cli.checks import check_compare_args
    from bench.results import baselines as reference
    from bench.results.result import SweepResult

    check_compare_args(args)
    paths = [p for arg in args.results for p in _json_files(arg)]
    if not paths:
        print("error: no result files given", file=sys.stderr)
        return 2
    checks = []
    results = [SweepResult.from_json(path) for path in paths]  # all read before any is written
    for result in results:
        if args.update:
            print(f"updated {reference.update(args.reference, result)}")
        else:
            checks += reference.check_against(args.reference, result, update_flag="--update")
    if checks:
        print(reference.table(checks))
        moved = [c for c in checks if not c.ok]
        print(f"\n{len(moved)} of {len(checks)} checks moved" if moved else "\nall held")
        return 1 if moved else 0
    return 0


def _json_files(arg: str):
    from pathlib import Path

    p = Path(arg)
    return sorted(p.rglob("*.json")) if p.is_dir() else [p]
