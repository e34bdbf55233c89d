"""Steps 3 and 5 of :mod:`bench.training` for one set of layers: the SAE steps, with no model.

1. :func:`layer_specs`: what training each layer's dictionary needs, read off the model once (its
   hook, the widths it reads and writes, sae-lens's metadata), so the steps themselves need no
   model and can run in a child process (:mod:`bench.training.shards`);
2. :func:`train_layers`: one sae-lens training module per layer (a TopK SAE, or a TopK
   transcoder), seeded per layer so a layer's weights do not depend on which layers train
   beside it, ``b_dec`` at the mean of the (scaled) target; sae-lens's ``MultiSAETrainer`` on
   the replayed batches (:func:`bench.training.activations.batches`), resuming from the last
   complete checkpoint under ``partial``; the training scale folded back into the weights; each
   dictionary saved to ``final/<hook>`` in sae-lens's inference format.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.training.activations import Buffers, batches
from bench.training.config import TrainConfig
from bench.training.entries import DONE
from bench.training.transcoder import new_transcoder, save_transcoder

log = logging.getLogger(__name__)

READ_SITE = {"transcoder": "mlp_in"}  # the site a basis's dictionary reads, where not its own


@dataclass(frozen=True)
class LayerSpec:
    """One layer's dictionary, as training needs it (step 1)."""

    layer: int
    hook: str  # the hook of the site it writes: its name in buffers, checkpoints and final/
    d_in: int
    d_out: int
    metadata: dict[str, Any] = field(default_factory=dict)  # sae-lens SAEMetadata fields


def layer_specs(handle, basis: str, site: str, layers: list[int], cfg: TrainConfig):
    """Step 1: a :class:`LayerSpec` per layer of ``layers``."""
    read_site = READ_SITE.get(basis, site)
    specs = []
    for layer in layers:
        meta = {
            "model_name": handle.name,
            "hook_name": handle.sites.hook_name(read_site, layer),
            "context_size": cfg.ctx,
            "prepend_bos": bool(handle.tokenizer("").input_ids),
            "sparsebench_site": site,
            "sparsebench_layer": layer,
        }
        if basis in READ_SITE:
            meta["hook_name_out"] = handle.sites.hook_name(site, layer)
        hook, d_in, d_out = (
            handle.sites.hook_name(site, layer),
            handle.sites.width(read_site),
            handle.sites.width(site),
        )
        specs.append(LayerSpec(layer, hook, d_in, d_out, meta))
    return specs


def _new_dictionary(spec: LayerSpec, cfg: TrainConfig, device: str):
    """One sae-lens training module (TopK SAE, or TopK transcoder for ``cfg.basis``)."""
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    meta = SAEMetadata(**spec.metadata)
    if cfg.basis == "transcoder":
        return new_transcoder(spec.d_in, spec.d_out, cfg.width, cfg.k, device, meta)
    sae_cfg = TopKTrainingSAEConfig(
        d_in=spec.d_in, d_sae=cfg.width, k=cfg.k, dtype="float32", device=device,
        normalize_activations="none", metadata=meta,
    )  # fmt: skip
    return TopKTrainingSAE(sae_cfg)


def _latest_checkpoint(partial: Path) -> Path | None:
    done = [p.parent for p in (partial / "checkpoints").glob(f"*/{DONE}")]
    return max(done, key=lambda p: int(p.name)) if done else None


def _trainer_config(device: str, cfg: TrainConfig, partial: Path):
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    steps = cfg.n_steps
    return SAETrainerConfig(
        total_training_samples=steps * cfg.batch_tokens,
        train_batch_size_samples=cfg.batch_tokens,
        lr=cfg.lr,
        lr_end=cfg.lr * cfg.lr_end_frac,
        lr_warm_up_steps=int(cfg.warmup_frac * steps),
        lr_decay_steps=int(cfg.decay_frac * steps),
        device=device,
        autocast=cfg.autocast,
        dead_feature_window=max(1, cfg.dead_tokens // cfg.batch_tokens),
        feature_sampling_window=max(1, steps),
        n_checkpoints=cfg.n_checkpoints,
        checkpoint_path=str(partial / "checkpoints"),
        save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=False),
        n_batches_for_norm_estimate=1,
    )


@torch.no_grad()
def _fold(module, s_in: float, s_out: float) -> None:
    """Undo the training scale in the weights: encode reads x, decode writes x."""
    module.W_enc.mul_(s_in)
    module.W_dec.div_(s_out)
    module.b_dec.div_(s_out)


def train_layers(
    specs: list[LayerSpec],
    cfg: TrainConfig,
    device: str,
    buffers: Buffers,  # hook -> (read rows, write rows or None), scaled
    scales: dict[str, dict[str, Any]],  # hook -> {"s_in", "s_out", "mean"}
    partial: Path,  # this set's checkpoints
    final: Path,  # where each trained dictionary is saved, as final/<hook>
    label: str,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> tuple[int | None, dict[str, float]]:
    """Step 2: train, fold and save the dictionaries of ``specs``; (the samples a resumed run
    started from, or None; each dictionary's last loss). ``on_step`` is called with the training
    samples of each step (progress in a parent process)."""
    from bench.training.trainer import one_bar_trainer

    def mark_done(checkpoint_path: Path | None) -> None:
        if checkpoint_path is None:
            return
        (checkpoint_path / DONE).write_text("complete\n")
        for old in (partial / "checkpoints").iterdir():
            if old != checkpoint_path:
                shutil.rmtree(old, ignore_errors=True)

    def new_trainer():
        saes = {}
        for spec in specs:  # seeded per layer: the same weights whichever layers train beside it
            torch.manual_seed(cfg.seed * 1_000_003 + spec.layer)
            sae = _new_dictionary(spec, cfg, device)
            with torch.no_grad():
                sae.b_dec.copy_(scales[spec.hook]["mean"])  # start at the (scaled) mean output
            saes[spec.hook] = sae
        return one_bar_trainer(
            _trainer_config(device, cfg, partial), saes, {h: h for h in saes}, iter(()),
            save_checkpoint_fn=mark_done, label=label, progress=progress, on_step=on_step,
        )  # fmt: skip

    trainer, start = new_trainer(), 0
    resume = _latest_checkpoint(partial)
    if resume is not None:
        log.info("resuming local dictionary training from %s", resume)
        try:
            trainer.load_checkpoint(resume)
        except Exception as err:  # a damaged checkpoint: start over rather than fail every run
            log.warning("checkpoint %s is unreadable (%s); training from the start", resume, err)
            shutil.rmtree(partial / "checkpoints", ignore_errors=True)
            trainer, resume = new_trainer(), None  # the collected activations are kept
    if resume is not None:
        start = trainer.n_training_samples // cfg.batch_tokens
        for t in (trainer, *trainer.trainers.values()):
            t.checkpoint_thresholds = [
                c for c in t.checkpoint_thresholds if c >= trainer.n_training_samples
            ]
    trainer.data_provider = batches(buffers, cfg.batch_tokens, cfg.seed, start, on_batch)
    trained = trainer.fit()
    for hook, sae in trained.items():
        _fold(sae, scales[hook]["s_in"], scales[hook]["s_out"])
        shutil.rmtree(final / hook, ignore_errors=True)
        if cfg.basis == "transcoder":
            save_transcoder(sae, final / hook)
        else:
            sae.save_inference_model(final / hook)
    return (None if resume is None else int(resume.name)), trainer.last_losses
