"""Where a sae-lens dictionary lives in a model: its hook names mapped onto sparsebench sites.

sae-lens names hook points the TransformerLens way (``blocks.3.hook_mlp_out``); some of its
loaders also record the Hugging Face module that was read (``hf_hook_name``, e.g.
``model.layers.3.pre_feedforward_layernorm.output``). :func:`resolve_hook` maps either onto a
(site, layer) of the model's :class:`~bench.model.sites.SiteTable`:

1. the Hugging Face name, when present: ``<module path>[.input|.output]`` is compared with the
   module and tensor of every site (module identity, not string guessing), plus the one
   equivalence per architecture that the site table names separately
   (``ArchSpec.mlp_in_norm``): the pre-MLP norm's output *is* the MLP input (``mlp_in``);
2. the TransformerLens name through ``SiteTable.parse_hook_name`` (the one place hook names are
   parsed), then the MLP-input aliases that sae-lens loaders use (``blocks.L.mlp.hook_in``);
3. both present and disagreeing, or neither resolving, raises naming the hook and the sites.

``blocks.L.hook_mlp_in`` is TransformerLens's *pre*-norm MLP input, yet sae-lens's Gemma Scope 2
loader uses it for the post-norm one; it is accepted only when a Hugging Face name confirms it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from bench.model.sites import SiteTable

log = logging.getLogger(__name__)

# TransformerLens-style names sae-lens loaders give the (post-norm) MLP input.
TL_MLP_IN_ALIASES = (r"blocks\.(\d+)\.mlp\.hook_in",)
TL_AMBIGUOUS_MLP_IN = r"blocks\.(\d+)\.hook_mlp_in"


def cfg_field(cfg: Mapping[str, Any], key: str) -> Any:
    """A field of a sae-lens config dict, top level (pre-6.0 layout) or under ``metadata``."""
    if cfg.get(key) is not None:
        return cfg[key]
    meta = cfg.get("metadata") or {}
    return meta.get(key) if isinstance(meta, Mapping) else getattr(meta, key, None)


def _resolve_hf(sites: SiteTable, hf_name: str) -> tuple[str, int] | None:
    name, tensor = hf_name, "output"
    for suffix in (".input", ".output"):
        if hf_name.endswith(suffix):
            name, tensor = hf_name[: -len(suffix)], suffix[1:]
    layers_path = sites.spec.layers
    m = re.fullmatch(re.escape(layers_path) + r"\.(\d+)(?:\.(.+))?", name)
    if m is None:
        return None
    layer, rel = int(m.group(1)), m.group(2) or ""
    if not 0 <= layer < sites.n_layers:
        return None
    if rel == sites.spec.mlp_in_norm and tensor == "output":
        return "mlp_in", layer
    try:
        module = sites.layer_part(layer, rel)
    except AttributeError:
        return None
    for site in sites.names:
        spec = sites.site(site)
        if spec.tensor == tensor and sites.module(site, layer) is module:
            return site, layer
    return None


def _resolve_tl(sites: SiteTable, hook: str, hf_confirms_mlp_in: bool) -> tuple[str, int] | None:
    try:
        return sites.parse_hook_name(hook)
    except ValueError:
        pass
    for pattern in TL_MLP_IN_ALIASES:
        if m := re.fullmatch(pattern, hook):
            return "mlp_in", int(m.group(1))
    if (m := re.fullmatch(TL_AMBIGUOUS_MLP_IN, hook)) and hf_confirms_mlp_in:
        return "mlp_in", int(m.group(1))
    return None


def resolve_hook(sites: SiteTable, hook: str | None, hf_hook: str | None) -> tuple[str, int]:
    """(site, layer) of a dictionary's hook; raises naming the hook when it matches no site."""
    from_hf = _resolve_hf(sites, hf_hook) if hf_hook else None
    from_tl = None
    if hook:
        from_tl = _resolve_tl(sites, hook, from_hf is not None and from_hf[0] == "mlp_in")
    if from_hf and from_tl and from_hf != from_tl:
        raise ValueError(
            f"dictionary hook {hook!r} means {from_tl[0]} layer {from_tl[1]}, but its Hugging "
            f"Face hook {hf_hook!r} means {from_hf[0]} layer {from_hf[1]}; refusing to guess"
        )
    found = from_hf or from_tl
    if found is not None:
        sites.check_layer(found[1])
        return found
    valid = ", ".join(sites.hook_name(s, 0).replace(".0.", ".{layer}.") for s in sites.names)
    hint = ""
    if hook and re.fullmatch(TL_AMBIGUOUS_MLP_IN, hook):
        hint = (
            " (TransformerLens's hook_mlp_in is the pre-norm residual, not a sparsebench site; "
            "it is accepted only with an hf_hook_name naming the pre-MLP norm's output)"
        )
    raise ValueError(
        f"dictionary hook {hook or hf_hook!r} matches no site of this {sites.arch} model with "
        f"{sites.n_layers} layers{hint}; known hooks: {valid}"
    )
