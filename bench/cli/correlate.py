"""``python -m bench correlate``: relp/atp scores against exact patching on one task."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    """Declare the command's options on the root parser's subparsers."""
    co = sub.add_parser("correlate", help="correlate relp/atp scores with exact patching")
    co.add_argument("--model", default="smollm2-135m")
    co.add_argument("--task", default="sva_simple")
    co.add_argument("--site", default="mlp_acts")
    co.add_argument("--methods", default="relp,atp")
    co.add_argument("--n-top", type=int, default=500)
    co.add_argument("--n-random", type=int, default=500)
    co.add_argument("--n-pairs", type=int, default=48)
    co.add_argument("--seed", type=int, default=0)
    co.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from bench.attribution.correlate import attribution_vs_exact
    from bench.cli.checks import check_correlate_args
    from bench.model.load import load_model
    from tasks import get_task

    check_correlate_args(args)
    handle = load_model(args.model)
    ds = get_task(args.task).build(handle.tokenizer, args.n_pairs, 2, args.seed)
    out = attribution_vs_exact(
        handle, ds, args.site, tuple(args.methods.split(",")), args.n_top, args.n_random,
        args.n_pairs, args.seed, progress=True,
    )  # fmt: skip
    print(json.dumps(out, indent=2))
    return 0
