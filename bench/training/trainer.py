"""sae-lens's ``MultiSAETrainer`` with one clean progress bar (step 4 of :mod:`bench.training`).

sae-lens writes every SAE's loss into its bar's description, so training 30 layers at once
gives one line the width of several screens. Here the bar says what is trained, counts
training tokens at every step (tqdm adds tokens/s and the ETA) and shows only the mean loss;
each layer's last loss goes to the log once training ends. Training itself is sae-lens's, unchanged.

:func:`train_shard` trains a shard of a group's layers with it, resuming from the shard's last
complete checkpoint (several shards may train side by side, one per thread: each thread's bar
settings are its own).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import shutil
import threading
from functools import cache
from pathlib import Path

from bench.training.activations import batches
from bench.training.config import TrainConfig
from bench.training.entries import DONE

log = logging.getLogger(__name__)

BAR_EVERY = 1  # steps between bar updates (sae-lens's is 100: one update in a 128-step run)

_BAR = threading.local()  # this thread's bar settings, read by the patched tqdm
_PATCH = {"lock": threading.Lock(), "users": 0, "original": None}


@contextlib.contextmanager
def _our_bar(settings: dict):
    """sae-lens opens its bar inside ``fit()``: while any trainer fits (several may, one per
    thread), its module's ``tqdm`` takes each calling thread's ``settings``; the original is put
    back when the last one ends."""
    from sae_lens.training import multi_sae_trainer

    with _PATCH["lock"]:
        if _PATCH["users"] == 0:
            base = _PATCH["original"] = multi_sae_trainer.tqdm
            multi_sae_trainer.tqdm = lambda *a, **k: base(*a, **{**k, **_BAR.settings})
        _PATCH["users"] += 1
    _BAR.settings = settings
    try:
        yield
    finally:
        with _PATCH["lock"]:
            _PATCH["users"] -= 1
            if _PATCH["users"] == 0:
                multi_sae_trainer.tqdm = _PATCH["original"]


@cache
def _trainer_class():
    from sae_lens.training.multi_sae_trainer import MultiSAETrainer

    class OneBarTrainer(MultiSAETrainer):
        """Trains exactly as :class:`MultiSAETrainer`; only the bar and the log differ."""

        label = "training"
        show_bar = True
        last_losses: dict[str, float]

        def _update_pbar(self, step_outputs, pbar, update_interval: int = BAR_EVERY) -> None:
            if self.n_training_steps % update_interval:
                return
            self.last_losses = {name: out.loss.item() for name, out in step_outputs.items()}
            mean = sum(self.last_losses.values()) / max(1, len(self.last_losses))
            pbar.set_postfix_str(f"mean loss {mean:.4f}", refresh=False)
            pbar.update(update_interval * self.cfg.train_batch_size_samples)

        def fit(self):
            self.last_losses = {}
            settings = {"desc": self.label, "unit": "tok", "disable": not self.show_bar}
            with _our_bar(settings):
                trained = super().fit()
            if self.last_losses:
                log.info(
                    "%s: last loss per dictionary: %s",
                    self.label,
                    ", ".join(f"{name} {loss:.4f}" for name, loss in self.last_losses.items()),
                )
            return trained

    return OneBarTrainer


def one_bar_trainer(*args, label: str, progress: bool = True, **kwargs):
    """A ``MultiSAETrainer(*args, **kwargs)`` whose bar reads ``label``, the token count, the
    rate, the ETA and the mean loss (no bar when ``progress`` is false)."""
    trainer = _trainer_class()(*args, **kwargs)
    trainer.label = label
    trainer.show_bar = progress
    return trainer


def latest_checkpoint(partial: Path) -> Path | None:
    done = [p.parent for p in (partial / "checkpoints").glob(f"*/{DONE}")]
    return max(done, key=lambda p: int(p.name)) if done else None


def trainer_config(handle, cfg: TrainConfig, partial: Path):
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    steps = cfg.n_steps
    return SAETrainerConfig(
        total_training_samples=steps * cfg.batch_tokens,
        train_batch_size_samples=cfg.batch_tokens,
        lr=cfg.lr,
        lr_end=cfg.lr * cfg.lr_end_frac,
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
        n_batches_for_norm_estimate=1,
    )


def train_shard(handle, cfg, start, buffers, partial: Path, on_batch, label, progress):
    """Steps 4-5 for a shard: the dictionaries (``start``: per hook, a module in its initial
    state, copied for each start) train on ``buffers`` from the last complete checkpoint in
    ``partial``, if any; ``({hook: trained module}, resumed-from samples or None)``."""

    def mark_done(checkpoint_path: Path | None) -> None:
        if checkpoint_path is None:
            return
        (checkpoint_path / DONE).write_text("complete\n")
        for old in (partial / "checkpoints").iterdir():
            if old != checkpoint_path:
                shutil.rmtree(old, ignore_errors=True)

    def new_trainer():
        saes = {hook: copy.deepcopy(sae) for hook, sae in start.items()}
        return one_bar_trainer(
            trainer_config(handle, cfg, partial), saes, {h: h for h in saes}, iter(()),
            save_checkpoint_fn=mark_done, label=label, progress=progress,
        )  # fmt: skip

    trainer, first = new_trainer(), 0
    resume = latest_checkpoint(partial)
    if resume is not None:
        log.info("resuming local dictionary training from %s", resume)
        try:
            trainer.load_checkpoint(resume)
        except Exception as err:  # a damaged checkpoint: start over rather than fail every run
            log.warning("checkpoint %s is unreadable (%s); training from the start", resume, err)
            shutil.rmtree(partial / "checkpoints", ignore_errors=True)
            trainer, resume = new_trainer(), None  # the collected activations are kept
    if resume is not None:
        first = trainer.n_training_samples // cfg.batch_tokens
        for t in (trainer, *trainer.trainers.values()):
            t.checkpoint_thresholds = [
                c for c in t.checkpoint_thresholds if c >= trainer.n_training_samples
            ]
    trainer.data_provider = batches(buffers, cfg.batch_tokens, cfg.seed, first, on_batch)
    return trainer.fit(), (None if resume is None else int(resume.name))
