"""Command line: ``python -m tasks list`` and ``python -m tasks check --model M``.

``list`` prints each registered task's name, version and one-line description. ``check``
builds each task's test split under the model's tokenizer and prints, per task, the accuracy
(both prompts prefer their own answer) and mean logit difference, flagging tasks under 70%.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tasks import get_task, list_tasks

log = logging.getLogger(__name__)


def _list(args: argparse.Namespace) -> int:
    tasks = list_tasks()
    width = max(len(t.name) for t in tasks)
    for t in tasks:
        print(f"{t.name:<{width}}  {t.version:<11}  {t.description}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from bench import load_model  # data flows task -> model; only the CLI needs bench
    from bench.core.checks import check_int
    from bench.core.errors import BadInputError
    from tasks.check import check_tasks, format_table

    check_int(args.n_test, "--n-test", 1)
    check_int(args.seed, "--seed", 0)
    check_int(args.batch_size, "--batch-size", 1)
    if not 0 <= args.threshold <= 1:
        raise BadInputError(f"--threshold {args.threshold}: must be a number in [0, 1]")
    names = [n.strip() for n in args.tasks.split(",") if n.strip()] if args.tasks else None
    names = names or [t.name for t in list_tasks()]
    for name in names:
        get_task(name)  # fail fast on unknown names, before loading the model
    handle = load_model(args.model)
    results = check_tasks(
        handle.model,
        handle.tokenizer,
        names,
        n_test=args.n_test,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    print(f"model {args.model}, {args.n_test} test pairs per task, seed {args.seed}")
    print(format_table(results, threshold=args.threshold))
    low = [r.task for r in results if r.flagged(args.threshold)]
    if low:
        print(f"under {args.threshold:.0%} accuracy: {', '.join(low)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Every command and option (the README's examples are parsed by a test)."""
    parser = argparse.ArgumentParser(prog="python -m tasks", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the registered tasks").set_defaults(func=_list)
    check = sub.add_parser("check", help="check tasks against a model")
    check.add_argument("--model", required=True, help="model name (see bench.load_model)")
    check.add_argument("--tasks", default=None, help="comma-separated task names (default: all)")
    check.add_argument("--n-test", type=int, default=40, help="test pairs per task")
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--batch-size", type=int, default=32)
    check.add_argument("--threshold", type=float, default=0.7, help="flag tasks under this")
    check.set_defaults(func=_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return args.func(args)
    except ValueError as err:  # unknown task, too few valid pairs, ...
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
