"""``python -m bench steer``: multiplier steering per basis (:mod:`bench.studies.steer`).

Example::

    python -m bench steer --task capitals --bases neurons@mlp_acts,sae@mlp_out:local \\
        --k 10,100,1000 --alphas=-4,-2,0,1,2,4 --out steer.json   # + steer.png / .pdf
"""

from __future__ import annotations

import argparse

from bench.cli.studies import add_common, build_bases, check_common, figure_path
from bench.core.errors import BadInputError


def _numbers(text: str, name: str, kind=float) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BadInputError(f"--{name} {text}: comma-separated numbers, e.g. 10,100") from None
    if not values:
        raise BadInputError(f"--{name} {text!r}: give at least one value")
    return values


def add_parser(sub) -> None:
    """Declare the command's options on the root parser's subparsers."""
    p = sub.add_parser("steer", help="the paper's multiplier steering, identical on every basis")
    add_common(p, "capitals", 64)
    p.add_argument("--k", default="10,100,1000", help="circuit sizes (default 10,100,1000)")
    p.add_argument("--alphas", default="-4,-2,-1,0,0.5,1,2,4",
                   help="multipliers; 1 is the unsteered model (default -4…4)")  # fmt: skip
    p.add_argument("--n-test", type=int, default=32)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bench.core.cache import write_json_atomic
    from bench.core.checks import CLI, check_int
    from bench.model.load import load_model
    from bench.studies.steer import steer
    from reports.figures import save_figure
    from reports.steering import steer_figure
    from tasks import get_task
    from tasks.capitals import state_of

    specs = check_common(args)
    ks = _numbers(args.k, "k", int)
    for k in ks:
        check_int(k, "k", 1, style=CLI, why="a circuit needs a node")
    alphas = _numbers(args.alphas, "alphas")
    check_int(args.n_test, "n_test", 1, style=CLI)
    handle = load_model(args.model, device=args.device, dtype=args.dtype)
    ds = get_task(args.task).build(handle.tokenizer, args.n_train, args.n_test, args.seed)
    bases = build_bases(handle, specs)
    intermediate = state_of if args.task == "capitals" else None
    data = steer(handle, ds, bases, ks, alphas, args.method, intermediate, seed=args.seed)
    write_json_atomic(args.out, data)
    files = save_figure(steer_figure(data), figure_path(args.out))
    for r in data["records"]:
        state = f" p_state {r['p_intermediate']:.3f}" if "p_intermediate" in r else ""
        print(
            f"{r['basis']:<28} k={r['k']:<6} α={r['alpha']:<5g} p_clean {r['p_clean']:.3f} "
            f"p_cf {r['p_counterfactual']:.3f} top1_cf {r['top1_counterfactual']:.2f}{state}"
        )
    print(f"-> {args.out}, {', '.join(map(str, files))}")
    return 0
