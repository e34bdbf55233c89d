"""eai-sparsify's layout (EleutherAI's ``sparsify``): TopK SAEs and (skip) transcoders.

``SparseCoder.save_to_disk`` writes one folder per hookpoint, named by the hookpoint relative
to the model's base model (``layers.3.mlp``), holding ``cfg.json`` (``SparseCoderConfig`` plus
``d_in``) and ``sae.safetensors``: ``encoder.weight`` [M, d_in], ``encoder.bias`` [M],
``W_dec`` [M, d_in], ``b_dec`` [d_in] and, with ``skip_connection``, ``W_skip`` [d_in, d_in]
(M = ``num_latents`` or ``d_in * expansion_factor``). Its maths (``SparseCoder.forward``):

- encode: ``pre = relu((x - b_dec) @ encoder.weight.T + encoder.bias)`` (an SAE subtracts
  ``b_dec`` from its input, a transcoder does not), then the top ``k`` of ``pre`` per token;
- decode: ``z @ W_dec + b_dec``, plus ``x_in @ W_skip.T`` with a skip connection;
- a transcoder reads its hookpoint module's input and predicts its output; no other
  normalisation of inputs or outputs. ``W_dec`` writes ``d_in`` wide, so d_out = d_in.

Steps of :func:`load_sparsify_dir` (``path:<dir>``):

1. read every ``<dir>/*/cfg.json`` beside a ``sae.safetensors`` (:func:`is_sparsify_dir`);
2. map the hookpoint onto sites through Hugging Face module names (``model.layers.3.mlp.input``
   read, ``.output`` written) and build a sae-lens config (:func:`sae_lens_config`): ``topk``
   (``apply_b_dec_to_input``) for SAEs, ``topk_transcoder`` or ``topk_skip_transcoder``
   (:class:`TopKSkipTranscoder`, registered here in sae-lens's registry) for transcoders;
3. check the config against the model (:func:`bench.bases.dictionary.check_config`);
4. build the sae-lens object and load the renamed tensors (``W_enc`` = ``encoder.weight.T``);
   frozen, in the model's dtype, decode checked affine.

sae-lens's TopK is ``relu(topk(pre))`` where sparsify's is ``topk(relu(pre))``: the same
dense latents (if fewer than k are positive, the extra picks are zero in both). The skip term
is not a latent: like every skip transcoder's, it lands in the error node (see
:mod:`bench.bases.dictionary`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sae_lens.registry import SAE_CLASS_REGISTRY, register_sae_class
from sae_lens.saes.transcoder import SkipTranscoder

from bench.bases.dictionary import check_affine, check_config, prepare
from bench.bases.layers import group_layers
from bench.bases.topk_transcoder import TopKTranscoder, TopKTranscoderConfig
from bench.model.sites import SiteTable

log = logging.getLogger(__name__)

CFG, WEIGHTS = "cfg.json", "sae.safetensors"
SKIP_ARCHITECTURE = "topk_skip_transcoder"


@dataclass
class TopKSkipTranscoderConfig(TopKTranscoderConfig):
    @classmethod
    def architecture(cls) -> str:
        return SKIP_ARCHITECTURE


class TopKSkipTranscoder(TopKTranscoder, SkipTranscoder):
    """A TopK transcoder with sae-lens's linear skip connection ``W_skip`` [d_out, d_in]:
    ``forward(x) = decode(encode(x)) + x @ W_skip.T``; ``decode`` is the latents' part."""

    cfg: TopKSkipTranscoderConfig

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> TopKSkipTranscoder:
        return cls(TopKSkipTranscoderConfig.from_dict(config_dict))


if SKIP_ARCHITECTURE not in SAE_CLASS_REGISTRY:
    register_sae_class(SKIP_ARCHITECTURE, TopKSkipTranscoder, TopKSkipTranscoderConfig)


def _folders(directory: Path) -> list[Path]:
    return sorted(
        p.parent for p in Path(directory).glob(f"*/{WEIGHTS}") if (p.parent / CFG).exists()
    )


def is_sparsify_dir(directory: Path) -> bool:
    return bool(_folders(directory))


def _hf_name(sites: SiteTable, hookpoint: str) -> str:
    """A sparsify hookpoint (relative to ``model.base_model``) as a full module path."""
    prefix = getattr(sites.model, "base_model_prefix", "")
    if prefix and not hookpoint.startswith(f"{prefix}.") and hasattr(sites.model, prefix):
        return f"{prefix}.{hookpoint}"
    return hookpoint


def sae_lens_config(sites: SiteTable, hookpoint: str, raw: dict[str, Any], where: str) -> dict:
    """The sae-lens config dict of one sparsify folder (module docstring, step 2)."""
    if raw.get("activation", "topk") != "topk":
        raise ValueError(f"{where}: activation {raw['activation']!r} is unsupported (only topk)")
    d_in = int(raw["d_in"])
    d_sae = int(raw.get("num_latents") or 0) or d_in * int(raw["expansion_factor"])
    module = _hf_name(sites, hookpoint)
    transcode, skip = bool(raw.get("transcode")), bool(raw.get("skip_connection"))
    cfg: dict[str, Any] = {
        "d_in": d_in,
        "d_sae": d_sae,
        "k": int(raw["k"]),
        "dtype": "float32",
        "normalize_activations": "none",
        "reshape_activations": "none",
    }
    if transcode:
        meta = {"hf_hook_name": f"{module}.input", "hf_hook_name_out": f"{module}.output"}
        arch = SKIP_ARCHITECTURE if skip else "topk_transcoder"
        cfg |= {"architecture": arch, "d_out": d_in, "apply_b_dec_to_input": False}
    else:
        if skip:
            raise ValueError(f"{where}: an SAE with a skip connection is unsupported")
        meta = {"hf_hook_name": f"{module}.output"}
        cfg |= {"architecture": "topk", "apply_b_dec_to_input": True}
    return {**cfg, "metadata": meta}


def _state(folder: Path) -> dict:
    """sparsify's tensors under sae-lens's names (float32)."""
    from safetensors.torch import load_file

    raw = load_file(str(folder / WEIGHTS))
    state = {
        "W_enc": raw["encoder.weight"].T.contiguous(),  # [M, d_in] -> [d_in, M]
        "b_enc": raw["encoder.bias"],  # [M]
        "W_dec": raw["W_dec"],  # [M, d_in]
        "b_dec": raw["b_dec"],  # [d_in]
    }
    if "W_skip" in raw:  # [d_out, d_in]: sparsify adds x @ W_skip.mT, as sae-lens does
        state["W_skip"] = raw["W_skip"]
    return {k: v.float() for k, v in state.items()}


def load_sparsify_dir(sites: SiteTable, basis: str, site: str, directory: Path) -> dict:
    """``path:<dir>`` in eai-sparsify's layout: the checked, frozen dictionaries by layer."""
    from sae_lens import SAE

    what = f"sparsify directory {directory}"
    configs, layer_of = {}, {}
    for folder in _folders(directory):
        raw = json.loads((folder / CFG).read_text())
        cfg = sae_lens_config(sites, folder.name, raw, f"{what}: {folder.name}")
        layer = check_config(sites, basis, site, cfg, f"{what}: {folder.name}")
        # sae-lens metadata also carries the TransformerLens names of the sites found
        cfg["metadata"]["hook_name"] = sites.hook_name("mlp_in" if "d_out" in cfg else site, layer)
        configs[folder], layer_of[folder] = cfg, layer
    out = {}
    for layer, folder in group_layers(layer_of, what).items():
        sae = SAE.from_dict(configs[folder])
        sae.load_state_dict(_state(folder), strict=True)
        sae = prepare(sae, sites)
        check_affine(sae, f"{what}: {folder.name}")
        out[layer] = sae
    return out
