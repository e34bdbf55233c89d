"""Training-time TopK transcoder: sae-lens's ``TopKTrainingSAE`` with a decoder that writes
another site, trained by sae-lens's own trainer (``MultiSAETrainer``), then saved as the
inference class :class:`bench.bases.topk_transcoder.TopKTranscoder`.

sae-lens's trainer hands a training SAE one tensor per step, so a batch here is
``[B, d_in + d_out]``: the MLP input, then the MLP output it must predict
(:func:`bench.training.activations.batches`). The loss is sae-lens's: MSE of the prediction
against the target, plus the TopK auxiliary loss on dead latents, whose residual is
``target - prediction``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY, register_sae_training_class
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput
from torch import nn

from bench.bases.topk_transcoder import ARCHITECTURE, TopKTranscoder, TopKTranscoderConfig


@dataclass
class TopKTranscoderTrainingConfig(TopKTrainingSAEConfig):
    d_out: int = 0  # width of the site the decoder writes (0: d_in)

    @classmethod
    def architecture(cls) -> str:
        return ARCHITECTURE  # saved as the inference class TopKTranscoder (save_transcoder)


class TopKTranscoderTraining(TopKTrainingSAE):
    """Encodes the first ``d_in`` columns of a batch; decodes onto the last ``d_out``."""

    cfg: TopKTranscoderTrainingConfig

    def initialize_weights(self) -> None:
        super().initialize_weights()
        d_out = self.cfg.d_out or self.cfg.d_in
        if d_out != self.cfg.d_in:
            w_dec = torch.empty(self.cfg.d_sae, d_out, dtype=self.dtype, device=self.device)
            nn.init.kaiming_uniform_(w_dec)
            with torch.no_grad():
                w_dec /= w_dec.norm(dim=-1, keepdim=True)
                w_dec *= self.cfg.decoder_init_norm or 1.0
            self.W_dec = nn.Parameter(w_dec)
            self.b_dec = nn.Parameter(torch.zeros(d_out, dtype=self.dtype, device=self.device))

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        d_in = self.cfg.d_in
        x, target = step_input.sae_in[..., :d_in], step_input.sae_in[..., d_in:]
        feature_acts, hidden_pre = self.encode_with_hidden_pre(x)  # [B, d_sae]
        sae_out = self.decode(feature_acts)  # [B, d_out]
        mse = self.mse_loss_fn(sae_out, target).sum(dim=-1).mean()
        aux = self.calculate_topk_aux_loss(target, sae_out, hidden_pre, step_input.dead_neuron_mask)
        return TrainStepOutput(
            sae_in=target,
            sae_out=sae_out,
            feature_acts=feature_acts,
            hidden_pre=hidden_pre,
            loss=mse + aux,
            losses={"mse_loss": mse, "auxiliary_reconstruction_loss": aux},
        )


if ARCHITECTURE not in SAE_TRAINING_CLASS_REGISTRY:
    register_sae_training_class(ARCHITECTURE, TopKTranscoderTraining, TopKTranscoderTrainingConfig)


def new_transcoder(d_in: int, d_out: int, width: int, k: int, device: str, metadata):
    cfg = TopKTranscoderTrainingConfig(
        d_in=d_in,
        d_sae=width,
        d_out=d_out,
        k=k,
        dtype="float32",
        device=device,
        apply_b_dec_to_input=False,
        normalize_activations="none",
        metadata=metadata,
    )
    return TopKTranscoderTraining(cfg)


def save_transcoder(trained: TopKTranscoderTraining, path: Path) -> None:
    """Save ``trained`` as a :class:`TopKTranscoder` in sae-lens's inference format."""
    cfg = trained.cfg
    out = TopKTranscoder(
        TopKTranscoderConfig(
            d_in=cfg.d_in,
            d_sae=cfg.d_sae,
            d_out=int(trained.W_dec.shape[1]),
            k=cfg.k,
            dtype="float32",
            device="cpu",
            apply_b_dec_to_input=False,
            normalize_activations="none",
            metadata=cfg.metadata,
        )
    )
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(out, name).copy_(getattr(trained, name).detach().cpu())
    out.save_model(path)
