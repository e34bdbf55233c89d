"""Command line for dictionaries: ``python -m bench.training train|quality ...``.

Examples::

    # local TopK SAEs for every layer (defaults: bench.training.config.TrainConfig); cached;
    # prints the per-layer quality table (L0, FVU, CE-loss recovered, dead fraction)
    python -m bench.training train --model smollm2-135m --site mlp_out

    # local TopK transcoders (read mlp_in, write mlp_out); CE-loss recovered splices each
    # one in place of its MLP
    python -m bench.training train --basis transcoder

    # one rung of the quality ladder (bench.training.config.LADDER)
    python -m bench.training train --preset w1024-t16k

    # measure (and store beside it) the quality of a saved or registry dictionary
    python -m bench.training quality --model smollm2-135m --basis sae --site mlp_out \\
        --dictionary path:/some/dir
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from bench.core.logs import configure_cli_logging


def _layers(text: str | None, n_layers: int | None = None) -> list[int] | None:
    """``--layers 0-3,7`` as a sorted list; a malformed or out-of-range part is refused."""
    if text is None:
        return None
    top = f"0..{n_layers - 1}" if n_layers else "0..n_layers-1"
    usage = f"write layers and ascending ranges such as 0-3,7 (layers {top})"
    out: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise ValueError(f"--layers {text}: malformed part {part!r}; {usage}")
        first, last = int(lo), int(hi) if dash else int(lo)
        if last < first:
            raise ValueError(f"--layers {text}: range {part!r} runs backwards; {usage}")
        if n_layers is not None and last >= n_layers:
            raise ValueError(f"--layers {text}: layer {last} does not exist; {usage}")
        out += list(range(first, last + 1))
    return sorted(set(out))


def _check_numbers(args: argparse.Namespace) -> None:
    """Every number of ``train``/``quality`` in range, before the model loads."""
    from bench.core.checks import check_int

    if args.threads is not None:
        check_int(args.threads, "--threads", 1)
    if args.command == "quality":
        check_int(args.ctx, "--ctx", args.skip_first + 1 if args.skip_first >= 0 else 1)
        check_int(args.skip_first, "--skip-first", 0, args.ctx - 1)
        check_int(args.eval_tokens, "--eval-tokens", 1)
        check_int(args.ce_tokens, "--ce-tokens", 1)
    else:
        _layers(args.layers)  # malformed ranges; their upper end once the model is known


def quality_table(quality: dict) -> str:
    """A plain-text per-layer table of a quality dict, with the means last."""
    per = quality["per_layer"]
    rows = [f"{'layer':>5} {'L0':>7} {'FVU':>7} {'CE rec.':>8} {'dead':>7}"]
    fmt = "{:>5} {:>7.1f} {:>7.3f} {:>8.3f} {:>7.3f}"

    def num(v):
        return float("nan") if v is None else v

    for i, layer in enumerate(quality["layers"]):
        rows.append(
            fmt.format(
                layer,
                num(per["l0"][i]),
                num(per["fvu"][i]),
                num(per["ce_loss_recovered"][i]),
                num(per["dead_fraction"][i]),
            )
        )
    rows.append(
        fmt.format(
            "mean",
            num(quality["l0"]),
            num(quality["fvu"]),
            num(quality["ce_loss_recovered"]),
            num(quality["dead_fraction"]),
        )
    )
    return "\n".join(rows)


def _train(args: argparse.Namespace) -> int:
    from bench.model.load import load_model
    from bench.training import train as training

    changes = {
        "basis": args.basis,
        "epochs": args.epochs,
        "width": args.width,
        "k": args.k,
        "n_tokens": args.tokens,
        "ctx": args.ctx,
        "batch_tokens": args.batch,
        "lr": args.lr,
    }
    from bench.training.config import preset

    base = replace(training.DEFAULT_CONFIG, **(preset(args.preset) if args.preset else {}))
    cfg = replace(base, **{k: v for k, v in changes.items() if v is not None})
    training.check_config(cfg, training.CLI_NAMES)  # before the model loads
    handle = load_model(args.model, device=args.device)
    layers = _layers(args.layers, handle.sites.n_layers)
    start = time.perf_counter()
    entry = training.train_local(
        handle, args.site, layers, cfg, progress=not args.quiet, names=training.CLI_NAMES
    )
    quality = json.loads((entry / "quality.json").read_text())
    training = quality.get("training", {})
    print(quality_table(quality))
    print(
        f"{len(quality['layers'])} {'SAEs' if cfg.basis == 'sae' else 'transcoders'} (width "
        f"{cfg.width}, k {cfg.k}) at {args.site}: training "
        f"{training.get('seconds', 0):.0f} s on {training.get('tokens', 0)} tokens, quality "
        f"{training.get('quality_seconds', 0):.0f} s; this call {time.perf_counter() - start:.0f}"
        f" s -> {entry}"
    )
    return 0


def _quality(args: argparse.Namespace) -> int:
    from bench.bases.dictionary import parse_dictionary
    from bench.bases.loading import make_dictionary_basis
    from bench.bases.releases import quality_path
    from bench.model.load import load_model
    from bench.training import local as _local_source  # noqa: F401 (registers "local")
    from bench.training.quality import measure_quality
    from bench.training.train import default_corpus

    handle = load_model(args.model, device=args.device)
    basis = make_dictionary_basis(handle, args.basis, args.site, args.dictionary)
    spec = parse_dictionary(args.dictionary)
    _, held_out = default_corpus().windows(handle.tokenizer, args.ctx)
    saes = dict(enumerate(basis.saes))
    quality = measure_quality(
        handle,
        basis.site,
        basis.read_site,
        saes,
        held_out,
        args.eval_tokens,
        args.ce_tokens,
        args.skip_first,
        progress=not args.quiet,
    )
    if spec.kind == "path":
        target = Path(spec.target).expanduser() / "quality.json"
    elif spec.kind == "release":
        target = quality_path(spec.target, spec.selector, args.basis, args.site)
    else:
        target = None  # local entries store their quality when trained
    if target is not None:
        target.write_text(json.dumps(quality, indent=2) + "\n")
    print(quality_table(quality))
    print(f"-> {target}" if target else "")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Every command and option (the README's examples are parsed by a test)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.training", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser(
        "train", help="train local TopK SAEs or transcoders for a model and site (cached)"
    )
    tr.add_argument("--model", default="smollm2-135m")
    tr.add_argument("--site", default="mlp_out")
    tr.add_argument("--basis", choices=("sae", "transcoder"), help="default sae")
    tr.add_argument("--preset", help="a named config, e.g. w1024-t16k (the quality ladder)")
    tr.add_argument("--epochs", type=int, help="passes over the training tokens")
    tr.add_argument("--layers", help="e.g. 0-3,7 (default: all)")
    tr.add_argument("--width", type=int)
    tr.add_argument("--k", type=int)
    tr.add_argument("--tokens", type=int, help="training tokens")
    tr.add_argument("--ctx", type=int)
    tr.add_argument("--batch", type=int, help="SAE batch, tokens")
    tr.add_argument("--lr", type=float)
    qu = sub.add_parser("quality", help="measure a dictionary's quality on held-out text")
    qu.add_argument("--model", default="smollm2-135m")
    qu.add_argument("--basis", default="sae", choices=("sae", "transcoder"))
    qu.add_argument("--site", default="mlp_out")
    qu.add_argument("--dictionary", required=True)
    qu.add_argument("--ctx", type=int, default=65)
    qu.add_argument("--skip-first", type=int, default=1, help="leading positions left out")
    qu.add_argument("--eval-tokens", type=int, default=4096)
    qu.add_argument("--ce-tokens", type=int, default=1024)
    for p in (tr, qu):
        p.add_argument("--device", default="cpu")
        p.add_argument(
            "--threads", type=int, help="torch CPU threads and workers (as SPARSEBENCH_THREADS)"
        )
        p.add_argument("--quiet", action="store_true")
    return parser


def _use_threads(n: int) -> None:
    """``--threads N`` as ``SPARSEBENCH_THREADS=N`` (:mod:`bench.core.env`): torch threads and
    workers. Setting torch's count alone was undone when the model loaded, since ``load_model``
    makes the process's thread choice from the variable or the free cores."""
    import os

    import torch

    from bench.core.env import THREADS_VAR

    os.environ[THREADS_VAR] = str(n)
    torch.set_num_threads(n)  # where this process already made its choice


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_cli_logging(args.quiet)  # sparsebench at INFO, other libraries at WARNING
    try:
        _check_numbers(args)
        if args.threads:
            _use_threads(args.threads)
        return _train(args) if args.command == "train" else _quality(args)
    except (ValueError, RuntimeError, OSError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
