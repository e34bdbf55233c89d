"""sae-lens's ``MultiSAETrainer`` with one clean progress bar (step 4 of :mod:`bench.training`).

sae-lens writes every SAE's loss into its bar's description, so training 30 layers at once
gives one line the width of several screens. Here the bar says what is trained, counts
training tokens at every step (tqdm adds tokens/s and the ETA) and shows only the mean loss;
each layer's last loss is kept for the log once training ends. Training itself is sae-lens's,
unchanged.
"""

from __future__ import annotations

from functools import cache

BAR_EVERY = 1  # steps between bar updates (sae-lens's is 100: one update in a 128-step run)


@cache
def _trainer_class():
    from sae_lens.training import multi_sae_trainer
    from sae_lens.training.multi_sae_trainer import MultiSAETrainer

    class OneBarTrainer(MultiSAETrainer):
        """Trains exactly as :class:`MultiSAETrainer`; only the bar and the log differ."""

        label = "training"
        show_bar = True
        last_losses: dict[str, float]

        on_step = None  # called with each step's training samples (a parent's progress bar)

        def _update_pbar(self, step_outputs, pbar, update_interval: int = BAR_EVERY) -> None:
            if self.n_training_steps % update_interval:
                return
            self.last_losses = {name: out.loss.item() for name, out in step_outputs.items()}
            mean = sum(self.last_losses.values()) / max(1, len(self.last_losses))
            pbar.set_postfix_str(f"mean loss {mean:.4f}", refresh=False)
            pbar.update(update_interval * self.cfg.train_batch_size_samples)
            if self.on_step is not None:
                self.on_step(update_interval * self.cfg.train_batch_size_samples)

        def fit(self):
            self.last_losses = {}
            # sae-lens opens its bar inside fit(): give it our label, unit and on/off switch
            base = multi_sae_trainer.tqdm
            settings = {"desc": self.label, "unit": "tok", "disable": not self.show_bar}
            multi_sae_trainer.tqdm = lambda *a, **k: base(*a, **{**k, **settings})
            try:
                return super().fit()
            finally:
                multi_sae_trainer.tqdm = base

    return OneBarTrainer


def one_bar_trainer(*args, label: str, progress: bool = True, on_step=None, **kwargs):
    """A ``MultiSAETrainer(*args, **kwargs)`` whose bar reads ``label``, the token count, the
    rate, the ETA and the mean loss (no bar when ``progress`` is false); ``on_step(samples)``
    after each step; each layer's last loss in ``trainer.last_losses`` after ``fit()``."""
    trainer = _trainer_class()(*args, **kwargs)
    trainer.label = label
    trainer.show_bar = progress
    trainer.on_step = on_step
    return trainer
