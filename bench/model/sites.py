"""Site tables: where each basis lives, named once per architecture.

A *site* is a per-layer place in the model (see docs/METHOD.md, "Terms"):

- ``mlp_acts``  the input of the MLP down projection ("the neurons"), width d_mlp
- ``mlp_in``    the input of the MLP (after the pre-MLP norm), width d_model; transcoders read it
- ``mlp_out``   the MLP's contribution to the residual stream (after the post-MLP norm where the
                architecture has one, as Gemma does), width d_model
- ``attn_out``  the attention block's contribution to the residual stream, width d_model
- ``resid``     the block output, width d_model

Every architecture gets one :class:`ArchSpec` in :data:`ARCHITECTURES`; nothing else in the
code base knows module names. Each site also carries the hook name sae-lens (TransformerLens
naming) uses for it, so registry SAEs land on the right module.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

SITE_NAMES = ("mlp_acts", "mlp_in", "mlp_out", "attn_out", "resid")


@dataclass(frozen=True)
class SiteSpec:
    """One site: which module, which of its tensors, and how sae-lens names it."""

    module: str  # path relative to the layer module; "" is the layer itself
    tensor: Literal["input", "output"]  # the module's first positional input, or primary output
    hook_name: str  # sae-lens / TransformerLens hook name, "{layer}" filled in
    width: Literal["d_model", "d_mlp"]


def _standard_sites(
    down: str, mlp: str, attn_out: str, mlp_out: str | None = None
) -> dict[str, SiteSpec]:
    return {
        "mlp_acts": SiteSpec(down, "input", "blocks.{layer}.mlp.hook_post", "d_mlp"),
        "mlp_in": SiteSpec(mlp, "input", "blocks.{layer}.ln2.hook_normalized", "d_model"),
        "mlp_out": SiteSpec(mlp_out or mlp, "output", "blocks.{layer}.hook_mlp_out", "d_model"),
        "attn_out": SiteSpec(attn_out, "output", "blocks.{layer}.hook_attn_out", "d_model"),
        "resid": SiteSpec("", "output", "blocks.{layer}.hook_resid_post", "d_model"),
    }


@dataclass(frozen=True)
class ArchSpec:
    """Module names of one architecture family."""

    arch: str
    model_types: tuple[str, ...]  # HF config.model_type values that use this table
    layers: str  # path of the ModuleList of blocks, from the top model
    mlp_down: str  # down projection, relative to a layer
    post_mlp_norm: str | None  # norm applied to the MLP output before the residual add
    mlp_in_norm: str  # the norm whose output is the MLP's input (``mlp_in``), for HF hook names
    d_mlp_attr: str  # config attribute holding the MLP width
    d_model_attr: str
    n_layers_attr: str
    sites: dict[str, SiteSpec] = field(default_factory=dict)
    # What the RelP replacement model needs (relative to a layer):
    act_fn: str = ""  # the MLP's elementwise activation module
    gate_up: str | None = None  # the up projection multiplied by act(gate), for gated MLPs
    qk: tuple[str, ...] = ()  # modules whose outputs are queries/keys (or fused q|k|v)
    qk_layout: Literal["separate", "gpt2_fused", "neox_fused"] = "separate"


ARCHITECTURES: dict[str, ArchSpec] = {
    spec.arch: spec
    for spec in (
        ArchSpec(
            arch="llama",
            model_types=("llama", "mistral", "qwen2", "qwen3"),
            layers="model.layers",
            mlp_down="mlp.down_proj",
            post_mlp_norm=None,
            mlp_in_norm="post_attention_layernorm",
            d_mlp_attr="intermediate_size",
            d_model_attr="hidden_size",
            n_layers_attr="num_hidden_layers",
            sites=_standard_sites("mlp.down_proj", "mlp", "self_attn"),
            act_fn="mlp.act_fn",
            gate_up="mlp.up_proj",
            qk=("self_attn.q_proj", "self_attn.k_proj"),
        ),
        ArchSpec(
            arch="gemma",
            model_types=("gemma2", "gemma3", "gemma3_text"),
            layers="model.layers",
            mlp_down="mlp.down_proj",
            post_mlp_norm="post_feedforward_layernorm",
            mlp_in_norm="pre_feedforward_layernorm",
            d_mlp_attr="intermediate_size",
            d_model_attr="hidden_size",
            n_layers_attr="num_hidden_layers",
            sites=_standard_sites(
                "mlp.down_proj",
                "mlp",
                attn_out="post_attention_layernorm",
                mlp_out="post_feedforward_layernorm",
            ),
            act_fn="mlp.act_fn",
            gate_up="mlp.up_proj",
            qk=("self_attn.q_proj", "self_attn.k_proj"),
        ),
        ArchSpec(
            arch="gpt2",
            model_types=("gpt2",),
            layers="transformer.h",
            mlp_down="mlp.c_proj",
            post_mlp_norm=None,
            mlp_in_norm="ln_2",
            d_mlp_attr="n_inner",
            d_model_attr="n_embd",
            n_layers_attr="n_layer",
            sites=_standard_sites("mlp.c_proj", "mlp", "attn"),
            act_fn="mlp.act",
            qk=("attn.c_attn",),
            qk_layout="gpt2_fused",
        ),
        ArchSpec(
            arch="gpt_neox",
            model_types=("gpt_neox",),
            layers="gpt_neox.layers",
            mlp_down="mlp.dense_4h_to_h",
            post_mlp_norm=None,
            mlp_in_norm="post_attention_layernorm",
            d_mlp_attr="intermediate_size",
            d_model_attr="hidden_size",
            n_layers_attr="num_hidden_layers",
            sites=_standard_sites("mlp.dense_4h_to_h", "mlp", "attention"),
            act_fn="mlp.act",
            qk=("attention.query_key_value",),
            qk_layout="neox_fused",
        ),
    )
}

_BY_MODEL_TYPE = {mt: spec for spec in ARCHITECTURES.values() for mt in spec.model_types}


class UnsupportedArchitectureError(ValueError):
    pass


def arch_spec_for(config) -> ArchSpec:
    """The table for a HF config; raises naming the supported model types."""
    model_type = getattr(config, "model_type", None)
    spec = _BY_MODEL_TYPE.get(model_type)
    if spec is None:
        raise UnsupportedArchitectureError(
            f"architecture {model_type!r} has no site table; supported model types: "
            f"{', '.join(sorted(_BY_MODEL_TYPE))}"
        )
    return spec


def _get(module: nn.Module, path: str) -> nn.Module:
    return module.get_submodule(path) if path else module


@dataclass(frozen=True)
class SiteTable:
    """An :class:`ArchSpec` bound to one model: resolves (site, layer) to modules."""

    spec: ArchSpec
    model: nn.Module = field(repr=False, compare=False)

    @classmethod
    def for_model(cls, model: nn.Module) -> SiteTable:
        return cls(arch_spec_for(model.config), model)

    @property
    def arch(self) -> str:
        return self.spec.arch

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.spec.sites)

    @property
    def n_layers(self) -> int:
        return int(getattr(self.model.config, self.spec.n_layers_attr))

    def width(self, site: str) -> int:
        cfg = self.model.config
        if self.site(site).width == "d_model":
            return int(getattr(cfg, self.spec.d_model_attr))
        d_mlp = getattr(cfg, self.spec.d_mlp_attr, None)
        # GPT-2 leaves n_inner unset and means 4 * n_embd.
        return int(d_mlp) if d_mlp else 4 * int(getattr(cfg, self.spec.d_model_attr))

    def site(self, site: str) -> SiteSpec:
        try:
            return self.spec.sites[site]
        except KeyError:
            close = difflib.get_close_matches(site, self.names, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(
                f"unknown site {site!r}{hint}; valid sites for {self.arch}: {', '.join(self.names)}"
            ) from None

    def check_layer(self, layer: int) -> None:
        if not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise ValueError(
                f"layer {layer!r} out of range; {self.arch} model has layers 0..{self.n_layers - 1}"
            )

    def blocks(self) -> nn.ModuleList:
        """The model's list of blocks (layers), in order."""
        return _get(self.model, self.spec.layers)

    def layer_module(self, layer: int) -> nn.Module:
        self.check_layer(layer)
        return self.blocks()[layer]

    def module(self, site: str, layer: int) -> nn.Module:
        """The module whose input or output *is* the site at this layer."""
        return _get(self.layer_module(layer), self.site(site).module)

    def hook_name(self, site: str, layer: int) -> str:
        return self.site(site).hook_name.format(layer=layer)

    def parse_hook_name(self, hook_name: str) -> tuple[str, int]:
        """(site, layer) for a sae-lens hook name; the one place hook names are parsed."""
        for name, spec in self.spec.sites.items():
            pattern = re.escape(spec.hook_name).replace(re.escape("{layer}"), r"(\d+)")
            if m := re.fullmatch(pattern, hook_name):
                return name, int(m.group(1))
        valid = ", ".join(s.hook_name for s in self.spec.sites.values())
        raise ValueError(f"hook name {hook_name!r} matches no site of {self.arch}; known: {valid}")

    def layer_part(self, layer: int, path: str) -> nn.Module:
        """A named part of a block (paths come from this table's ArchSpec fields)."""
        return _get(self.layer_module(layer), path)

    def mlp_output_path(self, layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """Map ``mlp_acts`` to ``mlp_out`` at a layer: down projection, then post-MLP norm."""
        layer_mod = self.layer_module(layer)
        down = _get(layer_mod, self.spec.mlp_down)
        norm = _get(layer_mod, self.spec.post_mlp_norm) if self.spec.post_mlp_norm else None

        def apply(acts: torch.Tensor) -> torch.Tensor:  # [..., d_mlp] -> [..., d_model]
            out = down(acts)
            return norm(out) if norm is not None else out

        return apply
