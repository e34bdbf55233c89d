"""``topk_transcoder``: a sae-lens :class:`~sae_lens.Transcoder` whose activation is TopK.

sae-lens ships ReLU and JumpReLU transcoders; local transcoders (:mod:`bench.training`) are TopK,
like local SAEs. This module defines the inference class and registers it in sae-lens's registry
under ``"topk_transcoder"`` (where it is defined, as sae-lens registers its own), so
``SAE.load_from_disk`` loads a saved one like any other sae-lens dictionary. Encode is
``TopK(x @ W_enc + b_enc)``, decode ``u @ W_dec + b_dec``: affine in the latents, as the dictionary
basis requires.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sae_lens.registry import SAE_CLASS_REGISTRY, register_sae_class
from sae_lens.saes.topk_sae import TopK
from sae_lens.saes.transcoder import Transcoder, TranscoderConfig

ARCHITECTURE = "topk_transcoder"


@dataclass
class TopKTranscoderConfig(TranscoderConfig):
    k: int = 64  # latents kept per token

    @classmethod
    def architecture(cls) -> str:
        return ARCHITECTURE

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "k": self.k}

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> TopKTranscoderConfig:
        cfg = super().from_dict(config_dict)
        cfg.k = int(config_dict.get("k", cfg.k))
        return cfg


class TopKTranscoder(Transcoder):
    """A transcoder (reads one site, writes another) with a TopK activation."""

    cfg: TopKTranscoderConfig

    def get_activation_fn(self):
        return TopK(self.cfg.k)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> TopKTranscoder:
        return cls(TopKTranscoderConfig.from_dict(config_dict))


if ARCHITECTURE not in SAE_CLASS_REGISTRY:
    register_sae_class(ARCHITECTURE, TopKTranscoder, TopKTranscoderConfig)
