"""Local SAE hyperparameters: :class:`TrainConfig`, and :func:`check_config`, its range check
(step 0 of :mod:`bench.training`), run before anything is trained or cached."""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from typing import Any

from bench.core.checks import API, FLOAT_DTYPES, check_int, check_positive_float, label
from bench.core.errors import BadInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of local SAEs and transcoders (measured on 2 CPU cores, smollm2-135m,
    30 layers; see the README's "Local dictionaries" section for the per-layer tables).

    Cost: one bf16 forward per distinct training token (~0.7 ms per token, both cores) to collect
    activations, then ~70 us per token per layer per epoch of SAE steps at width 2048 (bf16
    autocast, both cores), then quality (per layer, one forward on held-out text from that layer's
    block up: :func:`bench.training.quality.ce_loss`).

    ``skip_first``: a window's first position is left out of training and of every quality
    metric. Models without a BOS token write their attention-sink "massive activations" there
    (smollm2-135m's mlp_out at position 0 has norm ~22,000 at layer 11 and ~14,000 at layer 28,
    against ~30-500 elsewhere: >99% of the variance); kept, they dominate the MSE and the
    activation-norm estimate, and most latents die. In sweeps the SAE still encodes position 0;
    what it misses there is in that position's error node."""

    basis: str = "sae"  # "sae" (reads and writes the site) | "transcoder" (mlp_in -> mlp_out)
    width: int = 2048  # latents per layer
    k: int = 64  # TopK
    n_tokens: int = 65_536  # distinct training tokens, collected once (activations.collect)
    epochs: int = 2  # passes over them (steps, not distinct tokens, limit quality here: below)
    ctx: int = 65  # tokens per window
    skip_first: int = 1  # leading positions left out of training and quality (see below)
    batch_tokens: int = 1024  # SAE batch
    windows_per_forward: int = 16
    lr: float = 3e-3
    lr_end_frac: float = 0.01  # the rate the final decay ends at, as a fraction of lr
    warmup_frac: float = 0.02
    decay_frac: float = 0.3
    dead_tokens: int = 65_536  # a latent unfired for this many tokens is dead (TopK aux loss)
    n_checkpoints: int = 4
    max_buffer_gb: float = 6.0  # collected activations held at once; more layers train in groups
    forward_dtype: str = "bfloat16"
    autocast: bool = True  # bf16 autocast in SAE steps (sae-lens SAETrainerConfig.autocast)
    seed: int = 0
    eval_tokens: int = 4096  # held-out tokens for L0, FVU, dead fraction
    ce_tokens: int = 2048  # held-out tokens for CE-loss recovered

    @property
    def n_steps(self) -> int:
        return self.n_tokens * self.epochs // self.batch_tokens


# How ``python -m bench.training train`` spells the fields it sets.
BASES = ("sae", "transcoder")

CLI_NAMES = {
    "basis": "--basis",
    "epochs": "--epochs",
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
    if cfg.basis not in BASES:
        raise BadInputError(f"{label(name('basis'), cfg.basis)}: valid: {', '.join(BASES)}")
    for field in ("windows_per_forward", "epochs", "dead_tokens", "eval_tokens", "ce_tokens"):
        at_least(field, 1)
    at_least("n_checkpoints", 0)
    at_least("seed", 0)
    at_least("batch_tokens", 1)
    few = f"too few training tokens: at least one SAE batch, {name('batch_tokens')}"
    at_least("n_tokens", cfg.batch_tokens, None, few)
    check_positive_float(cfg.lr, name("lr"))
    check_positive_float(cfg.max_buffer_gb, name("max_buffer_gb"))
    for field in ("warmup_frac", "decay_frac", "lr_end_frac"):
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


# -- named local dictionaries: ``dictionary="local:<name>"`` (e.g. in the suite's --bases) ------

PRESETS: dict[str, dict[str, Any]] = {}  # name -> TrainConfig fields that differ from defaults


def register_preset(name: str, **changes: Any) -> str:
    """Name a local dictionary config, usable as ``local:<name>``; the name."""
    unknown = sorted(set(changes) - set(TrainConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"preset {name!r}: unknown TrainConfig fields {', '.join(unknown)}")
    PRESETS[name] = dict(changes)
    return name


def preset(name: str) -> dict[str, Any]:
    """The fields of a named config; an unknown name raises with the closest matches."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise BadInputError(
            f"dictionary local:{name}: no such local dictionary config{hint} "
            f"(valid: {', '.join(PRESETS)}, or local:width=W,k=K,tokens=N,epochs=E)"
        )
    return dict(PRESETS[name])


def short_tokens(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


# The quality ladder (reports: "the verdict against dictionary quality"): 3 token budgets x 2
# widths of local SAEs, all at the default k; `pytest bench --benchmark-only --ladder` sweeps them.
LADDER_TOKENS = (16_384, 32_768, 65_536)  # the top rung at width 2048 is the default
LADDER_WIDTHS = (1024, 2048)
LADDER = tuple(
    register_preset(f"w{w}-t{short_tokens(t)}", width=w, n_tokens=t)
    for w in LADDER_WIDTHS
    for t in LADDER_TOKENS
)
