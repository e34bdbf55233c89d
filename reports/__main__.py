"""``python -m reports RESULTS... --out DIR [--paper]``: build a report from saved results.

Steps: parse arguments, set up logging (``-v`` for debug, ``-q`` for warnings only), call
:func:`reports.build_report`, print the path of the index; on a bad input print the error and
exit with status 2 (nothing is written to DIR then).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from reports.build import build_report
from reports.load import ReportError


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m reports",
        description="Curves, tables and paper figures from sparsebench results "
        "(SweepResult JSON files or pytest-benchmark JSON records; directories are searched "
        "recursively for *.json).",
    )
    p.add_argument("results", nargs="+", help="result files or directories")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument(
        "--paper", action="store_true", help="also draw the core figures of Arora et al. 2026"
    )
    verbosity = p.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    # other libraries (matplotlib, fontTools) stay at WARNING; only reports' own logs follow -v/-q
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("reports").setLevel(level)
    try:
        index = build_report(args.results, args.out, paper_preset=args.paper)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
