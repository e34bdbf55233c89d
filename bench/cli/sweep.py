"""``python -m bench sweep``: one cell, attribution + faithfulness sweep, written as a SweepResult.

Example::

    python -m bench sweep --model smollm2-135m --task sva_simple --basis neurons \\
        --site mlp_acts --method relp --out results/sva_simple_neurons_mlp_acts_relp.json
"""

from __future__ import annotations

import argparse

from bench.cell import CELL, RUN, SPLIT


def add_parser(sub) -> None:
    """Declare the command's options on the root parser's subparsers."""
    sw = sub.add_parser("sweep", help="run one cell: attribution + faithfulness sweep")
    sw.add_argument("--model", default="smollm2-135m")
    src = sw.add_mutually_exclusive_group(required=True)
    src.add_argument("--task", help="registered task name (python -m tasks list)")
    src.add_argument("--task-file", help="Marks-style JSONL of contrastive pairs")
    sw.add_argument("--basis", default=CELL.basis)
    sw.add_argument("--site", default=CELL.site)
    sw.add_argument("--method", default=CELL.method)
    sw.add_argument(
        "--ablation", default=CELL.ablation,
        help="the protocol, one reference for attribution and ablation: patch (default), mean, "
        "zero; or marks (unmatched: counterfactual attribution, mean ablation)",
    )  # fmt: skip
    sw.add_argument("--dictionary", default=None)
    sw.add_argument(
        "--error-mode", default=CELL.error_mode,
        help="SAE error nodes: ablate (ranked, counted, ablated; default) or keep (never "
        "ablated, not counted: an upper bound)",
    )  # fmt: skip
    sw.add_argument("--n-train", type=int, default=SPLIT[0])
    sw.add_argument("--n-test", type=int, default=SPLIT[1])
    sw.add_argument("--seed", type=int, default=CELL.seed)
    sw.add_argument("--batch-size", type=int, default=RUN.batch_size)
    sw.add_argument("--ig-steps", type=int, default=CELL.ig_steps)
    sw.add_argument("--n-bootstrap", type=int, default=RUN.n_bootstrap)
    sw.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    sw.add_argument(
        "--dtype", default=None,
        help="float32, bfloat16, float16 or auto (default: bfloat16 on CUDA, float32 on CPU)",
    )  # fmt: skip
    sw.add_argument("--out", required=True, help="where to write the SweepResult JSON")
    sw.add_argument("--quiet", action="store_true", help="no progress bars")
    sw.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bench.bases import make_basis
    from bench.cell import Cell, RunSettings
    from bench.cli.checks import check_sweep_args
    from bench.model.load import load_model
    from bench.pipeline import finish, measure, prepare
    from bench.training.local import ensure_quality
    from tasks import get_task, load_pairs

    check_sweep_args(args)  # every option, before the model loads or anything is written
    handle = load_model(args.model, device=args.device, dtype=args.dtype)
    if args.task_file:
        ds = load_pairs(args.task_file, handle.tokenizer, args.n_train, args.n_test, args.seed)
    else:
        ds = get_task(args.task).build(handle.tokenizer, args.n_train, args.n_test, args.seed)
    basis = make_basis(handle, args.basis, args.site, args.dictionary)
    ensure_quality(handle, basis)  # a published dictionary: measured once, cached, recorded
    cell = Cell(
        basis=args.basis, site=args.site, method=args.method, ablation=args.ablation,
        dictionary=args.dictionary, error_mode=args.error_mode, seed=args.seed,
        ig_steps=args.ig_steps,
    )  # fmt: skip
    settings = RunSettings(batch_size=args.batch_size, n_bootstrap=args.n_bootstrap)
    prep = prepare(handle, ds, cell, basis=basis, settings=settings)
    result = finish(prep, measure(prep, progress=not args.quiet))
    result.to_json(args.out)  # atomic: temp file, then rename
    k, lo, hi = (_k(v) for v in (result.k_at_0_8, *result.k_at_0_8_ci))
    t = result.timings
    print(
        f"{result.task} {result.basis}@{result.site} {result.method}: k@0.8 = {k} "
        f"[{lo}, {hi}] of {result.n_nodes} nodes, AUC {result.auc:.3f}; "
        f"attribution {t['attribution_s']:.1f} s (ratio {t.get('attribution_ratio', 0):.2f}), "
        f"sweep {t['sweep_s']:.1f} s (ratio {t.get('sweep_ratio', 0):.2f}) -> {args.out}"
    )
    c, p = result.consistency, result.protocol
    print(
        f"protocol {p['name']} ({'matched' if p['matched'] else 'UNMATCHED'}); consistency: "
        f"F of the {c['n_nonzero']} non-zero-score nodes = {c['f_nonzero']:.3f} "
        f"({c['zero_score_fraction']:.1%} of nodes score exactly 0)"
    )
    return 0


def _k(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f}"
