"""Steps 2-6 of :mod:`bench.training`: train local TopK SAEs with sae-lens, resumably, and
install them as a verified cache entry (:func:`train_local`); :func:`local_dictionary_dir` is
what ``dictionary="local"`` calls (:mod:`bench.bases.loading`) with the model handle.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from bench.core.cache import atomic_path, cache_lock, files_sha256
from bench.training import shards
from bench.training.activations import collect, mean_and_scale
from bench.training.config import (
    CLI_NAMES,
    DEFAULT_CONFIG,
    TrainConfig,
    check_config,
    max_positions,
    preset,
)
from bench.training.corpus import Corpus, wikipedia_corpus
from bench.training.entries import (
    DONE,
    entry_dirs,
    entry_problem,
    final_problem,
    finished_entry,
    is_finished,
    model_key,
    sae_lens_version,
)
from bench.training.steps import READ_SITE, layer_specs, train_layers

__all__ = [  # re-exported: what callers and tests use through this module
    "CLI_NAMES",
    "DEFAULT_CONFIG",
    "DONE",
    "TrainConfig",
    "check_config",
    "entry_dirs",
    "entry_problem",
    "is_finished",
    "local_dictionary_dir",
    "train_local",
]

log = logging.getLogger(__name__)


# -- steps 3-5: training with resumable checkpoints -------------------------------------------


def _layer_groups(handle, basis: str, site: str, layers: list[int], cfg: TrainConfig):
    """Layers whose collected activations fit ``cfg.max_buffer_gb`` together (step 4)."""
    width = handle.sites.width(site)
    if basis in READ_SITE:
        width += handle.sites.width(READ_SITE[basis])
    per_layer = cfg.n_tokens * width * 2  # bfloat16 rows
    size = max(1, int(cfg.max_buffer_gb * 2**30 // per_layer))
    return [layers[i : i + size] for i in range(0, len(layers), size)]


def _scale(buffers) -> dict[str, dict[str, Any]]:
    """Scale each hook's rows in place to mean norm sqrt(d) (sae-lens's
    ``expected_average_only_in``); the factors and the scaled target mean, for init and folding."""
    out = {}
    for hook, (read, write) in buffers.items():
        _, s_in = mean_and_scale(read)
        read.mul_(s_in)
        s_out = s_in
        if write is not None:
            _, s_out = mean_and_scale(write)
            write.mul_(s_out)
        mean, _ = mean_and_scale(read if write is None else write)
        out[hook] = {"s_in": s_in, "s_out": s_out, "mean": mean}
    return out


def _fit_group(handle, fwd_model, basis, site, group, cfg, windows, partial: Path, final: Path,
               on_batch, progress):  # fmt: skip
    """Steps 4-5 for one group of layers: collect (one forward per token, on ``fwd_model``),
    then train, fold and save to ``final`` (:func:`bench.training.steps.train_layers`; in child
    processes on a multi-core CPU, :mod:`bench.training.shards`), resuming from the last complete
    checkpoint; (the samples a resumed run started from, or None; the processes that trained)."""
    buffers = collect(
        fwd_model, READ_SITE.get(basis, site), site, group, windows, cfg.skip_first,
        cfg.windows_per_forward, progress,
    )  # fmt: skip
    scales = _scale(buffers)
    specs = layer_specs(handle, basis, site, group, cfg)
    span = list(range(group[0], group[-1] + 1)) == list(group)
    layers = f"layers {group[0]}-{group[-1]}" if span else f"{len(group)} layers"
    label = f"training {basis}s, {layers}"
    device = str(handle.device)
    n_shards = shards.shard_count(len(group), device, watched=on_batch is not None)
    result = None  # (resumed from, last losses); None: train in this process
    if n_shards > 1:
        result = shards.train_in_shards(
            specs, cfg, device, buffers, scales, partial, final, n_shards, label, progress
        )
    if result is None:
        n_shards = 1
        result = train_layers(
            specs, cfg, device, buffers, scales, partial, final, label, progress, on_batch
        )
    resumed, losses = result
    if losses:
        log.info("%s: last loss per dictionary: %s", label,
                 ", ".join(f"{hook} {loss:.4f}" for hook, loss in losses.items()))  # fmt: skip
    return resumed, n_shards


def _training_windows(windows: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """The ``n_tokens`` training tokens: a seeded sample of whole windows from the whole corpus."""
    used = cfg.ctx - cfg.skip_first
    need = -(-cfg.n_tokens // used)
    if need > len(windows):
        raise ValueError(
            f"n_tokens {cfg.n_tokens}: the corpus has {len(windows) * used} training tokens at "
            f"ctx {cfg.ctx} ({len(windows)} windows); ask for at most that many"
        )
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(cfg.seed))
    return windows[order[:need]]


def forward_copy(model, dtype: torch.dtype):
    """A copy of ``model`` whose parameters are ``dtype``, as ``from_pretrained(dtype=...)``
    loads it: buffers keep their own dtype. ``model.to(dtype)`` would also round buffers such
    as RoPE's float32 ``inv_freq`` to bf16, so a float32 handle (``python -m bench.training``,
    CPUs without bf16) collected different activations, and trained different SAEs under the
    same cache key, than the suite's bf16 handle."""
    out = copy.deepcopy(model)
    for param in out.parameters():
        if param.is_floating_point():
            param.data = param.data.to(dtype)
    return out


def _fit(handle, basis, site, layers, cfg: TrainConfig, train_windows, partial: Path, on_batch,
         progress):  # fmt: skip
    """Steps 3-5 for every layer group; trained groups are saved to ``partial/final`` as they
    finish, so an interrupted run redoes only the group it was in; (the samples a resumed run
    started from, or None; the most processes a group trained in)."""
    windows = _training_windows(train_windows, cfg)
    final = partial / "final"
    resumed_from, processes = None, 1
    fwd_model = handle.model  # the forwards' model: one bf16 copy (by default) for every group
    if getattr(torch, cfg.forward_dtype) != handle.dtype:
        fwd_model = forward_copy(handle.model, getattr(torch, cfg.forward_dtype))
    for i, group in enumerate(_layer_groups(handle, basis, site, layers, cfg)):
        marker = partial / f"group-{i}.done"
        if marker.exists():
            continue
        gpartial = partial / f"group-{i}"
        resumed, n = _fit_group(
            handle, fwd_model, basis, site, group, cfg, windows, gpartial, final, on_batch,
            progress,
        )  # fmt: skip
        resumed_from = resumed_from if resumed is None else resumed
        processes = max(processes, n)
        marker.write_text("complete\n")
        shutil.rmtree(gpartial, ignore_errors=True)
    return resumed_from, processes


def train_local(
    handle,
    site: str = "mlp_out",
    layers: list[int] | None = None,
    cfg: TrainConfig | None = None,
    corpus: Corpus | None = None,
    on_batch: Callable[[int], None] | None = None,
    progress: bool = True,
    names: dict[str, str] | None = None,
) -> Path:
    """Train (or find) local SAEs; the finished entry directory (module docstring). One
    process trains an entry at a time (:func:`bench.core.cache.cache_lock`): a second caller waits,
    then finds it. ``names``: how the caller spells the config's fields in messages
    (:func:`check_config`)."""
    cfg = cfg or DEFAULT_CONFIG
    check_config(cfg, names, max_ctx=max_positions(handle.model))
    layers = sorted(layers) if layers is not None else list(range(handle.sites.n_layers))
    handle.sites.site(site)
    for layer in layers:
        handle.sites.check_layer(layer)
    corpus = corpus or default_corpus()
    entry, partial = entry_dirs(handle.model, site, layers, cfg, corpus)
    if finished_entry(entry):
        return entry
    with cache_lock(entry, f"local {site} {cfg.basis}s for {handle.name}"):  # one process trains
        if finished_entry(entry):  # another process trained them while this one waited
            return entry
        log.warning(
            "no local %s %ss for %s yet: training them now (once)", site, cfg.basis, handle.name
        )
        return _build(handle, site, layers, cfg, corpus, entry, partial, on_batch, progress)


def _build(handle, site, layers, cfg, corpus, entry, partial, on_batch, progress) -> Path:
    """:func:`train_local` under the entry's lock: train (or resume), measure, install."""
    from bench.bases.path import load_dir
    from bench.training.quality import measure_quality

    train_windows, held_out = corpus.windows(handle.tokenizer, cfg.ctx)
    partial.mkdir(parents=True, exist_ok=True)  # only now: a finished entry leaves none
    final = partial / "final"
    start = time.perf_counter()
    resumed_from = None
    if (final / DONE).exists() and (problem := final_problem(final)):
        log.warning("trained SAEs in %s are corrupt (%s); training again", final, problem)
        shutil.rmtree(final)
    if not (final / DONE).exists():
        resumed_from, processes = _fit(
            handle, cfg.basis, site, layers, cfg, train_windows, partial, on_batch, progress
        )
        (final / "training.json").write_text(
            json.dumps(
                {
                    "seconds": time.perf_counter() - start,
                    "resumed_from": resumed_from,
                    # the torch threads each training process ran on, and the processes
                    # (several: child processes of one thread each, bench.training.shards)
                    "threads": 1 if processes > 1 else torch.get_num_threads(),
                    "processes": processes,
                }
            )
        )
        files = files_sha256(final, exclude=(DONE,))
        (final / DONE).write_text(json.dumps({"files": files}) + "\n")
    training = json.loads((final / "training.json").read_text())
    log.info("measuring quality on %d held-out windows", len(held_out))
    qstart = time.perf_counter()
    saes = load_dir(handle.sites, cfg.basis, site, final)
    read_site = READ_SITE.get(cfg.basis, site)
    quality = measure_quality(
        handle, site, read_site, saes, held_out, cfg.eval_tokens, cfg.ce_tokens, cfg.skip_first,
        progress,
    )  # fmt: skip
    quality["corpus"] = {"name": corpus.name, "sha256": corpus.sha256}
    quality["training"] = {
        **training,
        "tokens": cfg.n_tokens,  # distinct training tokens
        "epochs": cfg.epochs,
        "samples": cfg.n_steps * cfg.batch_tokens,  # tokens seen, all epochs
        "steps": cfg.n_steps,
        "quality_seconds": time.perf_counter() - qstart,
        "quality_threads": torch.get_num_threads(),
    }
    manifest = {
        "model": handle.name,
        "model_key": model_key(handle.model),
        "site": site,
        "layers": layers,
        "config": asdict(cfg),
        "corpus": quality["corpus"],
        "sae_lens": sae_lens_version(),
        "hooks": {layer: handle.sites.hook_name(site, layer) for layer in layers},
    }
    with atomic_path(entry, kind="dir") as tmp:  # replaces a corrupt entry (inside the cache)
        shutil.copytree(final, tmp, ignore=shutil.ignore_patterns(DONE, "training.json"))
        (tmp / "quality.json").write_text(json.dumps(quality, indent=2) + "\n")
        manifest["files"] = files_sha256(tmp)  # verified on every later use
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(partial, ignore_errors=True)
    for parent in (partial.parent, partial.parent.parent):  # .partial/<model>, .partial
        with contextlib.suppress(OSError):
            parent.rmdir()  # only when empty: another run's partial work stays
    return entry


# -- on first use of dictionary="local" ----------------------------------------------------------


def default_corpus() -> Corpus:
    return wikipedia_corpus()


def local_dictionary_dir(
    handle, basis: str, site: str, name: str = "", options: dict[str, int] | None = None
) -> Path:
    """The finished local entry for every layer of ``site`` of ``handle``'s model (a
    :class:`~bench.model.handle.ModelHandle`), trained now if missing: the default config, the named
    config ``name`` (:data:`bench.training.config.PRESETS`), changed by ``options``."""
    from bench.bases.dictionary import LOCAL_OPTIONS

    cfg = replace(DEFAULT_CONFIG, basis=basis, **(preset(name) if name else {}), **(options or {}))
    names = {f: f"local:{k}" for k, f in LOCAL_OPTIONS.items()}  # as the dictionary spells them
    return train_local(handle, site, None, cfg, names=names)  # found, or trained under its lock
