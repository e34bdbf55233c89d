"""Dictionary quality on held-out text: L0, FVU, CE-loss recovered and dead-latent fraction.

:func:`measure_quality` (``saes`` maps layer -> sae-lens SAE or transcoder):

1. held-out windows measure reconstruction (``eval_tokens`` tokens) and the loss
   (``ce_tokens``); their first ``skip_first`` positions (where models without a BOS token write
   huge attention-sink activations; see ``TrainConfig``) are left out of every metric and never
   spliced or ablated;
2. reconstruction: float32 forwards capturing the read and write site on every layer; per layer
   ``u = encode(read)``, ``x_hat = decode(u)`` (sae-lens's own; plus ``read @ W_skip.T`` for
   skip transcoders, whose skip term is part of the reconstruction), and
   - L0 = mean number of non-zero latents per token,
   - FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (fraction of variance unexplained),
   - dead fraction = latents that are zero on every evaluated token;
3. loss: next-token cross-entropy of the model (CE_clean), and per layer with that one layer's site
   replaced by ``x_hat`` (CE_spliced) or by zeros (CE_zero); those forwards start at the
   layer's own block from the clean forward's block inputs (:mod:`bench.model.resume`), the
   layers side by side on the CPU, one thread each (:mod:`bench.model.replicas`);
   CE recovered = (CE_zero - CE_spliced) / (CE_zero - CE_clean);
4. a JSON-ready dict: means under the keys reports read (``l0``, ``fvu``, ``ce_loss_recovered``,
   ``dead_fraction``, ``width``) and per-layer lists under ``per_layer``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bench.model.interventions import intervene
from bench.model.load import configure_workers
from bench.model.replicas import parallel_map
from bench.model.resume import block_inputs, start_at

log = logging.getLogger(__name__)


def _encode(sae, x: torch.Tensor) -> torch.Tensor:  # [..., d_in] -> [..., d_sae]
    return sae.encode(x.to(sae.dtype))


def _reconstruct(sae, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``decode(u)``, plus a skip transcoder's skip term ``x @ W_skip.T`` (part of what the
    dictionary reconstructs, though not of its latents).  # [..., d_out]"""
    out = sae.decode(u)
    skip = getattr(sae, "W_skip", None)
    return out if skip is None else out + x.to(sae.dtype) @ skip.T


def _ce(model, ids: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy of a batch of windows.  # scalar"""
    logits = model(input_ids=ids).logits[:, :-1].float()  # [b, ctx-1, vocab]
    return F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum")


@torch.no_grad()
def reconstruction(
    handle, site, read_site, saes, windows, skip_first: int = 0, batch: int = 16
) -> dict[str, list]:
    """Step 2: per-layer L0, FVU and dead fraction over positions ``skip_first:`` of
    ``windows`` ([n, ctx])."""
    layers = sorted(saes)
    keys = sorted({(s, layer) for layer in layers for s in (site, read_site)})
    stats = {
        layer: {"err": 0.0, "sum": 0.0, "sq": 0.0, "l0": 0.0, "fired": None} for layer in layers
    }
    n_tokens = 0
    for group in windows.to(handle.device).split(batch):
        with intervene(handle.sites, capture=keys) as acts:
            handle.model.base_model(input_ids=group)
        n_tokens += group[:, skip_first:].numel()
        for layer in layers:
            sae, st = saes[layer], stats[layer]
            x = acts[(site, layer)][:, skip_first:].flatten(0, -2).double()  # [tokens, d]
            read = acts[(read_site, layer)][:, skip_first:]
            u = _encode(sae, read.flatten(0, -2))  # [tokens, d_sae]
            x_hat = _reconstruct(sae, read.flatten(0, -2), u).double()
            st["err"] += (x - x_hat).pow(2).sum().item()
            st["sum"] = st["sum"] + x.sum(0)
            st["sq"] += x.pow(2).sum().item()
            st["l0"] += (u != 0).sum().item()
            fired = (u != 0).any(0)
            st["fired"] = fired if st["fired"] is None else st["fired"] | fired
    out: dict[str, list] = {"l0": [], "fvu": [], "dead_fraction": []}
    for layer in layers:
        st = stats[layer]
        total_var = st["sq"] - st["sum"].pow(2).sum().item() / n_tokens
        out["l0"].append(st["l0"] / n_tokens)
        out["fvu"].append(st["err"] / total_var if total_var > 0 else float("nan"))
        out["dead_fraction"].append(1.0 - st["fired"].float().mean().item())
    return out


def _baseline_path(handle, site: str, windows: torch.Tensor, skip_first: int):
    """Where CE_clean and the per-layer CE_zero of these windows are cached: they depend on the
    model, the site and the text, never on the dictionary."""
    import hashlib

    from bench.core.cache import cache_dir
    from bench.training.entries import model_key

    h = hashlib.sha256(windows.cpu().numpy().tobytes())
    h.update(f"{site}:{skip_first}:{handle.dtype}".encode())
    return cache_dir("quality-baselines") / f"{model_key(handle.model)}-{h.hexdigest()[:16]}.json"


def _load_baseline(path) -> dict | None:
    import json

    try:
        data = json.loads(path.read_text())
        return {"clean": float(data["clean"]), "zero": {int(k): v for k, v in data["zero"].items()}}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


@torch.no_grad()
def ce_loss(
    handle, site, read_site, saes, windows, skip_first=0, batch: int = 8, progress: bool = True
):
    """Step 3: (CE_clean, per-layer CE_spliced, per-layer CE_zero), mean nats per token; the
    first ``skip_first`` positions keep their clean values. CE_zero is cached on disk
    (:func:`_baseline_path`, CE_clean beside it): a dictionary's quality costs one clean forward
    per batch, which also captures every block's input, and one forward per layer that starts at
    that layer's block (:mod:`bench.model.resume`; the blocks below are not run again, and the
    values are the same bit for bit)."""
    import json

    from bench.core.cache import atomic_path

    layers = sorted(saes)
    groups = list(windows.to(handle.device).split(batch))
    n_pred = sum(g[:, 1:].numel() for g in groups)
    path = _baseline_path(handle, site, windows, skip_first)
    base = _load_baseline(path) or {"clean": None, "zero": {}}
    inputs = []  # per batch: {layer: [b, ctx, d_model]}, the clean input of each block
    clean = 0.0
    for g in groups:
        with block_inputs(handle.sites, layers) as got:
            clean += _ce(handle.model, g).item()
        inputs.append(dict(got))
    base["clean"] = clean / n_pred  # the same value a cached baseline holds
    missing = [layer for layer in layers if layer not in base["zero"]]

    def one_layer(h, layer: int) -> tuple[float, float | None]:  # (CE_spliced, CE_zero or None)
        sae, key, read_key = saes[layer], (site, layer), (read_site, layer)
        capture = [read_key] if read_key != key else []
        holder: dict[str, Any] = {}

        def splice(x: torch.Tensor) -> torch.Tensor:
            src = holder["acts"].get(read_key, x)
            new = x.clone()
            src = src[:, skip_first:]
            new[:, skip_first:] = _reconstruct(sae, src, _encode(sae, src)).to(x.dtype)
            return new

        def zero(x: torch.Tensor) -> torch.Tensor:
            new = x.clone()
            new[:, skip_first:] = 0
            return new

        out: list[float | None] = [None, None]
        for i, replacement in enumerate([splice, zero] if layer in missing else [splice]):
            total = 0.0
            for g, hidden in zip(groups, inputs, strict=True):
                with (
                    torch.no_grad(),
                    start_at(h.sites, layer, hidden[layer]),
                    intervene(h.sites, capture=capture, replace={key: replacement}) as acts,
                ):
                    holder["acts"] = acts
                    total += _ce(h.model, g).item()
            out[i] = total / n_pred
        return out[0], out[1]

    bar = tqdm(total=len(layers), desc="CE loss per layer", disable=not progress, leave=False)
    with bar:  # layers side by side on the CPU (bench.model.replicas), each summed in order
        per_layer = parallel_map(handle, one_layer, layers, configure_workers(), bar.update)
    spliced = [ce for ce, _ in per_layer]
    for layer, (_, ce_zero) in zip(layers, per_layer, strict=True):
        if ce_zero is not None:
            base["zero"][layer] = ce_zero
    if missing:
        with atomic_path(path, kind="file") as tmp:
            tmp.write_text(json.dumps(base))
    return base["clean"], spliced, [base["zero"][layer] for layer in layers]


def _mean(values: list[float]) -> float:
    good = [v for v in values if v == v]
    return sum(good) / len(good) if good else float("nan")


def measure_quality(
    handle,
    site: str,
    read_site: str,
    saes: dict[int, Any],  # layer -> sae-lens SAE (or transcoder)
    windows: torch.Tensor,  # [n, ctx] held-out token windows
    eval_tokens: int = 4096,
    ce_tokens: int = 2048,
    skip_first: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Steps 1-4 of the module docstring."""
    ctx = windows.shape[1]
    per_window = ctx - skip_first  # tokens measured per window
    rec_windows = windows[: max(1, eval_tokens // per_window)]
    ce_windows = windows[: max(1, ce_tokens // per_window)]
    per_layer = reconstruction(handle, site, read_site, saes, rec_windows, skip_first)
    clean, spliced, zero = ce_loss(
        handle, site, read_site, saes, ce_windows, skip_first, progress=progress
    )
    per_layer["ce_spliced"], per_layer["ce_zero_ablation"] = spliced, zero
    per_layer["ce_loss_recovered"] = [
        (z - s) / (z - clean) if z != clean else float("nan")
        for s, z in zip(spliced, zero, strict=True)
    ]
    first = saes[min(saes)]
    return _no_nan(
        {
            "l0": _mean(per_layer["l0"]),
            "fvu": _mean(per_layer["fvu"]),
            "ce_loss_recovered": _mean(per_layer["ce_loss_recovered"]),
            "dead_fraction": _mean(per_layer["dead_fraction"]),
            "width": int(first.cfg.d_sae),
            "architecture": first.cfg.architecture(),
            "layers": sorted(saes),
            "ce_clean": clean,
            "eval_tokens": int(rec_windows[:, skip_first:].numel()),
            "ce_tokens": int(ce_windows[:, 1:].numel()),  # next-token predictions
            "skip_first": skip_first,
            "per_layer": per_layer,
        }
    )


def _no_nan(value: Any) -> Any:
    """NaN (an undefined ratio) as None, so the dict is strict JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value
