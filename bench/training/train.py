"""Steps 2-6 of :mod:`bench.training`: train local TopK SAEs with sae-lens, resumably, and
install them as a verified cache entry (:func:`train_local`); :func:`local_dictionary_dir` is
what ``dictionary="local"`` calls (:mod:`bench.bases.loading`) with the model handle.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from bench.cache import atomic_path, cache_lock, files_sha256
from bench.training.activations import activation_batches
from bench.training.config import (
    CLI_NAMES,
    DEFAULT_CONFIG,
    TrainConfig,
    check_config,
    max_positions,
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


def _new_saes(handle, site: str, layers: list[int], cfg: TrainConfig) -> dict[str, Any]:
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(cfg.seed)
    saes = {}
    for layer in layers:
        hook = handle.sites.hook_name(site, layer)
        meta = SAEMetadata(
            model_name=handle.name,
            hook_name=hook,
            context_size=cfg.ctx,
            prepend_bos=bool(handle.tokenizer("").input_ids),
            sparsebench_site=site,
            sparsebench_layer=layer,
        )
        sae_cfg = TopKTrainingSAEConfig(
            d_in=handle.sites.width(site),
            d_sae=cfg.width,
            k=cfg.k,
            dtype="float32",
            device=str(handle.device),
            normalize_activations="expected_average_only_in",
            metadata=meta,
        )
        saes[hook] = TopKTrainingSAE(sae_cfg)
    return saes


def _latest_checkpoint(partial: Path) -> Path | None:
    done = [p.parent for p in (partial / "checkpoints").glob(f"*/{DONE}")]
    return max(done, key=lambda p: int(p.name)) if done else None


def _trainer_config(handle, cfg: TrainConfig, partial: Path):
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    steps = cfg.n_steps
    return SAETrainerConfig(
        total_training_samples=steps * cfg.batch_tokens,
        train_batch_size_samples=cfg.batch_tokens,
        lr=cfg.lr,
        lr_end=cfg.lr,
        lr_warm_up_steps=int(cfg.warmup_frac * steps),
        lr_decay_steps=int(cfg.decay_frac * steps),
        device=str(handle.device),
        autocast=cfg.autocast,
        dead_feature_window=max(1, cfg.dead_tokens // cfg.batch_tokens),
        feature_sampling_window=max(1, steps),
        n_checkpoints=cfg.n_checkpoints,
        checkpoint_path=str(partial / "checkpoints"),
        save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=False),
        n_batches_for_norm_estimate=cfg.n_norm_batches,
    )


def _fit(handle, site, layers, cfg: TrainConfig, train_windows, partial: Path, on_batch, progress):
    """Steps 3-5: train (resuming from the last complete checkpoint); the folded SAEs."""
    from sae_lens.training.multi_sae_trainer import MultiSAETrainer
    from sae_lens.training.prefetch import PrefetchingIterator

    saes = _new_saes(handle, site, layers, cfg)
    resume = _latest_checkpoint(partial)

    def mark_done(checkpoint_path: Path | None) -> None:
        if checkpoint_path is None:
            return
        (checkpoint_path / DONE).write_text("complete\n")
        for old in (partial / "checkpoints").iterdir():
            if old != checkpoint_path:
                shutil.rmtree(old, ignore_errors=True)

    fwd_model = handle.model
    dtype = getattr(torch, cfg.forward_dtype)
    if dtype != handle.dtype:
        fwd_model = copy.deepcopy(handle.model).to(dtype)
    trainer_cfg = _trainer_config(handle, cfg, partial)
    holder: dict[str, Any] = {}

    def stream() -> Iterator[dict[str, torch.Tensor]]:  # started lazily, after any resume
        start = 0 if resume is None else cfg.n_norm_batches + holder["done"] // cfg.batch_tokens
        total = cfg.n_norm_batches + cfg.n_steps
        desc = f"{site} batches ({len(layers)} layers per forward)"
        batches = activation_batches(fwd_model, site, layers, train_windows, cfg, start, on_batch)
        with tqdm(total=total, initial=start, desc=desc, disable=not progress) as bar:
            for batch in itertools.islice(batches, total - start):  # what fit() will consume
                yield batch
                bar.update(1)

    trainer = MultiSAETrainer(
        trainer_cfg, saes, {h: h for h in saes}, iter(()), save_checkpoint_fn=mark_done
    )
    if resume is not None:
        log.info("resuming local SAE training from %s", resume)
        try:
            trainer.load_checkpoint(resume)
        except Exception as err:  # a damaged checkpoint: start over rather than fail every run
            log.warning("checkpoint %s is unreadable (%s); training from the start", resume, err)
            shutil.rmtree(partial / "checkpoints", ignore_errors=True)
            return _fit(handle, site, layers, cfg, train_windows, partial, on_batch, progress)
        holder["done"] = trainer.n_training_samples
        for t in (trainer, *trainer.trainers.values()):
            t.checkpoint_thresholds = [
                c for c in t.checkpoint_thresholds if c >= trainer.n_training_samples
            ]
    # The model forwards run in a producer thread while the SAEs train (sae-lens's prefetcher);
    # one intra-op thread each, so the two overlap on two cores instead of oversubscribing.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    trainer.data_provider = PrefetchingIterator(stream(), prefetch=cfg.prefetch_batches)
    try:
        trained = trainer.fit()
    finally:
        trainer.data_provider.close()
        torch.set_num_threads(threads)
    return trained, (None if resume is None else int(resume.name))


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
    """Train (or find) local SAEs; the finished entry directory (module docstring).
    ``names``: how the caller spells the config's fields in messages (:func:`check_config`)."""
    from bench.bases.path import load_dir
    from bench.training.quality import measure_quality

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
    train_windows, held_out = corpus.windows(handle.tokenizer, cfg.ctx)
    final = partial / "final"
    start = time.perf_counter()
    resumed_from = None
    if (final / DONE).exists() and (problem := final_problem(final)):
        log.warning("trained SAEs in %s are corrupt (%s); training again", final, problem)
        shutil.rmtree(final)
    if not (final / DONE).exists():
        trained, resumed_from = _fit(
            handle, site, layers, cfg, train_windows, partial, on_batch, progress
        )
        shutil.rmtree(final, ignore_errors=True)
        for hook, sae in trained.items():
            sae.save_inference_model(final / hook)
        (final / "training.json").write_text(
            json.dumps({"seconds": time.perf_counter() - start, "resumed_from": resumed_from})
        )
        files = files_sha256(final, exclude=(DONE,))
        (final / DONE).write_text(json.dumps({"files": files}) + "\n")
    training = json.loads((final / "training.json").read_text())
    log.info("measuring quality on %d held-out windows", len(held_out))
    qstart = time.perf_counter()
    saes = load_dir(handle.sites, "sae", site, final)
    quality = measure_quality(
        handle, site, site, saes, held_out, cfg.eval_tokens, cfg.ce_tokens, cfg.skip_first, progress
    )
    quality["corpus"] = {"name": corpus.name, "sha256": corpus.sha256}
    quality["training"] = {
        **training,
        "tokens": cfg.n_steps * cfg.batch_tokens,
        "steps": cfg.n_steps,
        "quality_seconds": time.perf_counter() - qstart,
        "quality_threads": torch.get_num_threads(),  # training: 1 per thread, 2 threads
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
    return entry


# -- on first use of dictionary="local" ----------------------------------------------------------


def default_corpus() -> Corpus:
    return wikipedia_corpus()


def local_dictionary_dir(handle, site: str, options: dict[str, int]) -> Path:
    """The finished local entry for every layer of ``site`` of ``handle``'s model (a
    :class:`~bench.models.ModelHandle`), trained now if missing."""
    cfg = replace(DEFAULT_CONFIG, **options)
    names = {"width": "local:width", "k": "local:k"}  # as the dictionary string spells them
    check_config(cfg, names, max_ctx=max_positions(handle.model))
    layers = list(range(handle.sites.n_layers))
    corpus = default_corpus()
    entry, _ = entry_dirs(handle.model, site, layers, cfg, corpus)
    if finished_entry(entry):
        return entry
    with cache_lock(entry, f"local {site} SAEs for {handle.name}"):  # one process trains
        if finished_entry(entry):  # another process trained them while this one waited
            return entry
        log.warning("no local %s SAEs for %s yet: training them now (once)", site, handle.name)
        return train_local(handle, site, layers, cfg, corpus)
