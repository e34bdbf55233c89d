"""Command line: ``python -m bench sweep ...`` runs one cell and writes its SweepResult;
``python -m bench compare RESULTS... --reference baselines/`` checks saved results against the
committed references (exit 1 when a cell moved); ``python -m bench ray [suite options]`` runs
the suite's cells as Ray tasks (:mod:`bench.distributed`) into one results directory.

Example::

    python -m bench sweep --model smollm2-135m --task sva_simple --basis neurons \\
        --site mlp_acts --method relp --out results/sva_simple_neurons_mlp_acts_relp.json
"""

from __future__ import annotations

import argparse
import logging
import sys

from bench.suite import SUITE_OPTIONS


def _sweep(args: argparse.Namespace) -> int:
    from bench import load_model, run_sweep
    from bench.validate import check_sweep_args
    from tasks import get_task, load_pairs

    check_sweep_args(args)  # every option, before the model loads or anything is written
    handle = load_model(args.model, device=args.device, dtype=args.dtype)
    if args.task_file:
        ds = load_pairs(args.task_file, handle.tokenizer, args.n_train, args.n_test, args.seed)
    else:
        ds = get_task(args.task).build(handle.tokenizer, args.n_train, args.n_test, args.seed)
    result = run_sweep(
        handle,
        ds,
        basis=args.basis,
        site=args.site,
        method=args.method,
        ablation=args.ablation,
        dictionary=args.dictionary,
        error_mode=args.error_mode,
        seed=args.seed,
        batch_size=args.batch_size,
        ig_steps=args.ig_steps,
        n_bootstrap=args.n_bootstrap,
        progress=not args.quiet,
    )
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


def _correlate(args: argparse.Namespace) -> int:
    import json

    from bench import load_model
    from bench.correlate import attribution_vs_exact
    from bench.validate import check_correlate_args
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


def _compare(args: argparse.Namespace) -> int:
    from bench import reference
    from bench.result import SweepResult
    from bench.validate import check_compare_args

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


def _ray(args: argparse.Namespace) -> int:
    from bench import reference
    from bench.distributed import run_on_ray
    from bench.suite import ArgsOptions, parse_cells
    from bench.verdict import verdict_text

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


def _json_files(arg: str):
    from pathlib import Path

    p = Path(arg)
    return sorted(p.rglob("*.json")) if p.is_dir() else [p]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sw = sub.add_parser("sweep", help="run one cell: attribution + faithfulness sweep")
    sw.add_argument("--model", default="smollm2-135m")
    src = sw.add_mutually_exclusive_group(required=True)
    src.add_argument("--task", help="registered task name (python -m tasks list)")
    src.add_argument("--task-file", help="Marks-style JSONL of contrastive pairs")
    sw.add_argument("--basis", default="neurons")
    sw.add_argument("--site", default="mlp_acts")
    sw.add_argument("--method", default="relp")
    sw.add_argument(
        "--ablation", default="patch",
        help="the protocol, one reference for attribution and ablation: patch (default), mean, "
        "zero; or marks (unmatched: counterfactual attribution, mean ablation)",
    )  # fmt: skip
    sw.add_argument("--dictionary", default=None)
    sw.add_argument(
        "--error-mode", default="ablate",
        help="SAE error nodes: ablate (ranked, counted, ablated; default) or keep (never "
        "ablated, not counted: an upper bound)",
    )  # fmt: skip
    sw.add_argument("--n-train", type=int, default=300)
    sw.add_argument("--n-test", type=int, default=40)
    sw.add_argument("--seed", type=int, default=0)
    sw.add_argument("--batch-size", type=int, default=32)
    sw.add_argument("--ig-steps", type=int, default=10)
    sw.add_argument("--n-bootstrap", type=int, default=1000)
    sw.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    sw.add_argument(
        "--dtype", default=None,
        help="float32, bfloat16, float16 or auto (default: bfloat16 on CUDA, float32 on CPU)",
    )  # fmt: skip
    sw.add_argument("--out", required=True, help="where to write the SweepResult JSON")
    sw.add_argument("--quiet", action="store_true", help="no progress bars")
    cp = sub.add_parser("compare", help="check saved results against reference results")
    cp.add_argument("results", nargs="+", help="SweepResult JSON files or directories")
    cp.add_argument("--reference", default="baselines", help="reference directory")
    cp.add_argument("--update", action="store_true", help="write the results as references")
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
    co = sub.add_parser("correlate", help="correlate relp/atp scores with exact patching")
    co.add_argument("--model", default="smollm2-135m")
    co.add_argument("--task", default="sva_simple")
    co.add_argument("--site", default="mlp_acts")
    co.add_argument("--methods", default="relp,atp")
    co.add_argument("--n-top", type=int, default=500)
    co.add_argument("--n-random", type=int, default=500)
    co.add_argument("--n-pairs", type=int, default=48)
    co.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    quiet = getattr(args, "quiet", True)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    try:
        commands = {"sweep": _sweep, "compare": _compare, "correlate": _correlate, "ray": _ray}
        return commands[args.command](args)
    except (ValueError, RuntimeError, OSError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
