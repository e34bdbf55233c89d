"""Command line: ``python -m bench <command>``; each command lives in ``bench/cli/<command>.py``.

- ``sweep``: one cell, its SweepResult written to ``--out`` (:mod:`bench.cli.sweep`);
- ``compare RESULTS... --reference baselines/``: the reference check on saved results
  (:mod:`bench.cli.compare`);
- ``ray [suite options]``: the suite's cells as Ray tasks (:mod:`bench.cli.ray`);
- ``correlate``: relp/atp against exact patching (:mod:`bench.cli.correlate`);
- ``steer``, ``auroc``: the paper's case studies per basis (:mod:`bench.cli.steer`,
  :mod:`bench.cli.auroc`).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bench.cli import COMMANDS
from bench.core.logs import configure_cli_logging


def build_parser() -> argparse.ArgumentParser:
    """Every command and option (the README's examples are parsed by a test)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"bench.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = getattr(args, "quiet", True)
    configure_cli_logging(quiet)  # sparsebench at INFO, other libraries at WARNING
    try:
        return args.run(args)
    except (ValueError, RuntimeError, OSError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
