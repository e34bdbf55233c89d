"""``python -m bench auroc``: units that track the sum mod n on addition, per basis
(:mod:`bench.studies.auroc`).

Example::

    python -m bench auroc --bases neurons@mlp_acts,sae@mlp_out:local --out auroc.json
"""

from __future__ import annotations

import argparse

from bench.cli.studies import add_common, build_bases, check_common, figure_path


def add_parser(sub) -> None:
    """Declare the command's options on the root parser's subparsers."""
    p = sub.add_parser("auroc", help="AUROC of every node for sum mod 2/5/10 and the tens digit")
    add_common(p, "addition", 200)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bench.core.cache import write_json_atomic
    from bench.model.load import load_model
    from bench.studies.auroc import auroc
    from reports.figures import save_figure
    from reports.steering import auroc_figure
    from tasks import get_task

    specs = check_common(args)
    handle = load_model(args.model, device=args.device, dtype=args.dtype)
    ds = get_task(args.task).build(handle.tokenizer, args.n_train, 2, args.seed)
    data = auroc(handle, ds, build_bases(handle, specs), args.method, args.seed)
    write_json_atomic(args.out, data)
    files = save_figure(auroc_figure(data), figure_path(args.out))
    for b in data["bases"]:
        for kind in ("attribution", "activation"):
            counts = ", ".join(
                f"{f} {v['n_either']} ({v.get('per_node', 0):.2%})" for f, v in b[kind].items()
            )
            print(f"{b['basis']:<28} {kind:<11} AUROC ≥ 0.9 or ≤ 0.1: {counts}")
    print(f"-> {args.out}, {', '.join(map(str, files))}")
    return 0
