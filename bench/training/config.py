"""Local SAE hyperparameters: :class:`TrainConfig`, and :func:`check_config`, its range check
(step 0 of :mod:`bench.training`), run before anything is trained or cached."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bench.validate import API, FLOAT_DTYPES, BadInputError, check_int, check_positive_float, label

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of local SAEs. The defaults train all 30 layers of smollm2-135m (d_model
    576) on 2 CPU cores in about 6 minutes (+2 for quality): the SAE steps (~50 ms per layer
    per batch on one core) dominate the bf16 forwards (~1.4 s per 1024 tokens on the other).
    Halving the tokens from 131,072 (14 min) cost little: mean FVU 0.335 -> 0.368, CE loss
    recovered 0.717 -> 0.701, dead latents 4.7% -> 6.0%.

    ``skip_first``: a window's first position is left out of training and of every quality
    metric. Models without a BOS token write their attention-sink "massive activations" there
    (smollm2-135m's mlp_out at position 0 has norm ~22,000 at layer 11 and ~14,000 at layer 28,
    against ~30-500 elsewhere: >99% of the variance); kept, they dominate the MSE and the
    activation-norm estimate, and most latents die. In sweeps the SAE still encodes position 0;
    what it misses there is in that position's error node."""

    width: int = 2048  # latents per layer
    k: int = 32  # TopK
    n_tokens: int = 65_536  # training tokens, each used by every layer's SAE
    ctx: int = 65  # tokens per window
    skip_first: int = 1  # leading positions left out of training and quality (see below)
    batch_tokens: int = 512  # SAE batch
    windows_per_forward: int = 16
    forwards_per_chunk: int = 4  # a chunk's tokens are shuffled together (64 x 64 = 8 batches)
    lr: float = 3e-3
    warmup_frac: float = 0.05
    decay_frac: float = 0.2
    dead_tokens: int = 16_384  # a latent unfired for this many tokens is dead (TopK aux loss)
    n_norm_batches: int = 4  # batches for the activation norm estimate
    n_checkpoints: int = 4
    prefetch_batches: int = 16  # activation batches computed ahead, in a producer thread
    forward_dtype: str = "bfloat16"
    autocast: bool = True  # bf16 autocast in SAE steps (sae-lens SAETrainerConfig.autocast)
    seed: int = 0
    eval_tokens: int = 4096  # held-out tokens for L0, FVU, dead fraction
    ce_tokens: int = 1024  # held-out tokens for CE-loss recovered

    @property
    def n_steps(self) -> int:
        return self.n_tokens // self.batch_tokens


# How ``python -m bench.training train`` spells the fields it sets.
CLI_NAMES = {
    "width": "--width",
    "k": "--k",
    "n_tokens": "--tokens",
    "ctx": "--ctx",
    "batch_tokens": "--batch",
    "lr": "--lr",
}


def check_config(
    cfg: TrainConfig, names: dict[str, str] | None = None, max_ctx: int | None = None
) -> None:
    """Range-check ``cfg`` before anything trains; ``names``: how the entry point spells each
    field (default ``TrainConfig.<field>``); ``max_ctx``: the model's positions."""
    names = names or {}

    def name(field: str) -> str:
        return names.get(field, f"TrainConfig.{field}")

    def at_least(field: str, minimum: int, maximum: int | None = None, why: str = "") -> None:
        check_int(getattr(cfg, field), name(field), minimum, maximum, API, why)

    at_least("width", 1)
    at_least(
        "k", 1, cfg.width if isinstance(cfg.width, int) else None, f"the width, {name('width')}"
    )
    at_least("skip_first", 0)
    at_least("ctx", cfg.skip_first + 1, max_ctx, "a window needs a position to train on"
             + (f" and must fit the model's {max_ctx} positions" if max_ctx else ""))  # fmt: skip
    for field in ("windows_per_forward", "forwards_per_chunk", "n_norm_batches",
                  "prefetch_batches", "dead_tokens", "eval_tokens", "ce_tokens"):  # fmt: skip
        at_least(field, 1)
    at_least("n_checkpoints", 0)
    at_least("seed", 0)
    chunk = cfg.windows_per_forward * cfg.forwards_per_chunk * (cfg.ctx - cfg.skip_first)
    at_least("batch_tokens", 1, chunk, f"the {chunk} training tokens of one chunk of windows")
    few = f"too few training tokens: at least one SAE batch, {name('batch_tokens')}"
    at_least("n_tokens", cfg.batch_tokens, None, few)
    check_positive_float(cfg.lr, name("lr"))
    for field in ("warmup_frac", "decay_frac"):
        value = getattr(cfg, field)
        if not isinstance(value, int | float) or not 0 <= value <= 1:
            raise BadInputError(f"{label(name(field), value)}: must be a number in [0, 1]")
    if cfg.forward_dtype not in FLOAT_DTYPES:
        raise BadInputError(
            f"{label(name('forward_dtype'), cfg.forward_dtype)}: valid: {', '.join(FLOAT_DTYPES)}"
        )


def max_positions(model) -> int | None:
    config = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


DEFAULT_CONFIG = TrainConfig()
