"""Gemma Scope 2's own layout, for ``path:<dir>`` and offline ``release:gemma-scope-2-*``.

A Gemma Scope 2 dictionary is one folder per SAE (``mlp_out_all/layer_3_width_16k_l0_small``,
``transcoder_all/layer_3_width_16k_l0_small_affine``, ...) holding ``params.safetensors``
(``w_enc`` [d_in, d_sae], ``w_dec`` [d_sae, d_out], ``b_enc`` [d_sae], ``b_dec`` [d_out],
``threshold`` [d_sae], and ``affine_skip_connection`` [d_in, d_out] for affine transcoders) and
optionally ``config.json`` (``hf_hook_point_in`` / ``hf_hook_point_out``, ``affine_connection``).
The published maths is JumpReLU: ``pre = x @ w_enc + b_enc``, ``z = pre * 1[pre > threshold]``,
``decode = z @ w_dec + b_dec`` (``+ x_in @ affine_skip_connection`` for affine transcoders).

Steps (:func:`load_gemmascope_dir` for ``path:``, :func:`load_gemmascope_release` for a
release; both end in :func:`load_folder`, so the two routes give identical dictionaries):

1. find the folders: ``<dir>/*/params.safetensors`` (``path:``), or each sae_id's folder in the
   release's hub repo, resolved in the local Hugging Face cache first (no network) and fetched
   with ``hf_hub_download`` only when missing and the hub is online;
2. read shapes from the local safetensors header (:func:`header_shapes`; sae-lens's own Gemma 3
   config getter asks the hub for them over HTTP even when the file is cached) and the optional
   ``config.json``, and build a sae-lens config (:func:`sae_lens_config`): ``jumprelu`` SAEs,
   ``jumprelu_transcoder`` / ``jumprelu_skip_transcoder`` transcoders; hooks as Hugging Face
   module names (the post-feedforward-norm output is ``mlp_out``; a transcoder reads the
   pre-feedforward-norm output, ``mlp_in``), with the TransformerLens names sae-lens gives them;
3. check every config against the model (:func:`bench.bases.dictionary.check_config`) before
   any weights are read; one dictionary per layer;
4. build the sae-lens object from its config (``SAE.from_dict``) and load the renamed tensors
   (``W_skip`` = ``affine_skip_connection.T``, [d_out, d_in], as sae-lens stores it). sae-lens's
   JumpReLU is ``relu(pre) * 1[pre > threshold]``, equal to the published
   ``pre * 1[pre > threshold]`` only when every threshold is >= 0, so a negative threshold is
   refused; then frozen in the model's dtype, with decode checked affine.
"""

from __future__ import annotations

import json
import logging
import re
import struct
from pathlib import Path
from typing import Any

from bench.bases.dictionary import check_affine, check_config, prepare
from bench.bases.layers import group_layers
from bench.model.sites import SiteTable

log = logging.getLogger(__name__)

PARAMS, CONFIG = "params.safetensors", "config.json"
CONVERSION = "gemma_3"  # sae-lens's conversion_func for Gemma Scope 2 releases
# folder-name marker -> (TransformerLens hook, Hugging Face module output) read by the dictionary
READ_HOOKS = {
    "transcoder": ("blocks.{L}.hook_mlp_in", "model.layers.{L}.pre_feedforward_layernorm.output"),
    "mlp_out": ("blocks.{L}.hook_mlp_out", "model.layers.{L}.post_feedforward_layernorm.output"),
    "resid_post": ("blocks.{L}.hook_resid_post", "model.layers.{L}.output"),
}
WRITE_HOOK = ("blocks.{L}.hook_mlp_out", "model.layers.{L}.post_feedforward_layernorm.output")


def header_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor shapes from a local safetensors file's header (8-byte length, then JSON)."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return {name: info["shape"] for name, info in header.items() if name != "__metadata__"}


def _kind(label: str, raw: dict[str, Any]) -> str:
    """Which of READ_HOOKS a folder is: its config's ``type`` and ``hf_hook_point_in`` (as the
    published ``config.json`` has them), else its path in the release (``mlp_out_all/...``)."""
    hf_in, hf_out = raw.get("hf_hook_point_in"), raw.get("hf_hook_point_out")
    if raw.get("type") == "transcoder" or (hf_in and hf_out and hf_in != hf_out):
        return "transcoder"
    for marker, (_, hf) in READ_HOOKS.items():
        if hf_in and re.fullmatch(re.escape(hf).replace(re.escape("{L}"), r"\d+"), hf_in):
            return marker
    for marker in READ_HOOKS:
        if not hf_in and marker in label:
            return marker
    raise ValueError(
        f"Gemma Scope folder {label!r} reads {hf_in or 'an unknown hook'}: supported are "
        f"{', '.join(READ_HOOKS)} folders (named so in the release, or with hf_hook_point_in in "
        f"their {CONFIG}); attention-output SAEs (hook_z) are unsupported"
    )


def sae_lens_config(label: str, raw: dict[str, Any], shapes: dict[str, list[int]]) -> dict:
    """The sae-lens config dict of one Gemma Scope folder (module docstring, step 2)."""
    if raw.get("architecture", "jump_relu") != "jump_relu":
        raise ValueError(f"Gemma Scope folder {label!r}: architecture {raw['architecture']!r}")
    for key in ("w_enc", "w_dec", "b_enc", "b_dec", "threshold"):
        if key not in shapes:
            raise ValueError(f"Gemma Scope folder {label!r}: {PARAMS} has no {key!r} tensor")
    d_in, d_sae = shapes["w_enc"]  # [d_in, d_sae]
    d_out = shapes["w_dec"][-1]  # [d_sae, d_out]
    hf_in = raw.get("hf_hook_point_in")
    m = re.search(r"layers\.(\d+)\.", hf_in or "") or re.search(r"layer_(\d+)", label)
    if m is None:
        raise ValueError(f"Gemma Scope folder {label!r}: no layer in its name or {CONFIG}")
    layer = int(m.group(1))
    kind = _kind(label, raw)
    transcoder = kind == "transcoder"
    tl_in, hf_default = (h.format(L=layer) for h in READ_HOOKS[kind])
    affine = "affine_skip_connection" in shapes
    if raw.get("affine_connection") and not affine:
        raise ValueError(f"Gemma Scope folder {label!r}: affine, but no affine_skip_connection")
    meta: dict[str, Any] = {
        "hook_name": tl_in,
        "hf_hook_name": hf_in or hf_default,
        "model_name": raw.get("model_name"),
    }
    cfg: dict[str, Any] = {
        "architecture": "jumprelu",
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "float32",
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "reshape_activations": "none",
    }
    if transcoder:
        tl_out, hf_out = (h.format(L=layer) for h in WRITE_HOOK)
        meta |= {"hook_name_out": tl_out, "hf_hook_name_out": raw.get("hf_hook_point_out", hf_out)}
        cfg["architecture"] = "jumprelu_skip_transcoder" if affine else "jumprelu_transcoder"
        cfg["d_out"] = d_out
    elif d_out != d_in:
        raise ValueError(f"Gemma Scope SAE {label!r}: w_dec writes {d_out}, reads {d_in}")
    return {**cfg, "metadata": meta}


def read_folder(label: str, params: Path, config: Path | None) -> dict[str, Any]:
    raw = json.loads(Path(config).read_text()) if config is not None else {}
    return sae_lens_config(label, raw, header_shapes(params))


def load_folder(cfg: dict[str, Any], params: Path, where: str):
    """The sae-lens SAE / transcoder of one folder, from its config and the published tensors."""
    from sae_lens import SAE
    from safetensors.torch import load_file

    raw = load_file(str(params))
    threshold = raw["threshold"].float()  # [d_sae]
    if (threshold < 0).any():
        raise ValueError(
            f"{where}: {(threshold < 0).sum().item()} negative JumpReLU thresholds; sae-lens's "
            "JumpReLU (relu(pre) * 1[pre > threshold]) differs from the published "
            "pre * 1[pre > threshold] there, so this dictionary cannot be loaded faithfully"
        )
    state = {
        "W_enc": raw["w_enc"],  # [d_in, d_sae]
        "W_dec": raw["w_dec"],  # [d_sae, d_out]
        "b_enc": raw["b_enc"],  # [d_sae]
        "b_dec": raw["b_dec"],  # [d_out]
        "threshold": raw["threshold"],  # [d_sae]
    }
    if "affine_skip_connection" in raw:  # [d_in, d_out]; sae-lens's W_skip is [d_out, d_in]
        state["W_skip"] = raw["affine_skip_connection"].T.contiguous()
    sae = SAE.from_dict(cfg)
    sae.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return sae


def _load_checked(sites, basis, site, found: dict[Any, tuple[dict, Path]], what: str) -> dict:
    """Steps 3-4 over ``found`` (key -> (config, params path)): layer -> (key, frozen SAE)."""
    layer_of = {
        key: check_config(sites, basis, site, cfg, f"{what}: {key}")
        for key, (cfg, _) in found.items()
    }
    out = {}
    for layer, key in group_layers(layer_of, what).items():
        cfg, params = found[key]
        sae = prepare(load_folder(cfg, params, f"{what}: {key}"), sites)
        check_affine(sae, f"{what}: {key}")
        out[layer] = (key, sae)
    return out


def is_gemmascope_dir(directory: Path) -> bool:
    return any(Path(directory).glob(f"*/{PARAMS}"))


def load_gemmascope_dir(sites: SiteTable, basis: str, site: str, directory: Path) -> dict:
    """``path:<dir>`` with ``<dir>/*/params.safetensors``: the checked SAEs by layer."""
    directory = Path(directory)
    found = {}
    for params in sorted(directory.glob(f"*/{PARAMS}")):
        folder = params.parent
        config = folder / CONFIG
        # the label keeps the parent's name (``mlp_out_all/layer_3_...``), as a release path has
        label = f"{directory.name}/{folder.name}"
        cfg = read_folder(label, params, config if config.exists() else None)
        found[folder] = (cfg, params)
    what = f"Gemma Scope directory {directory}"
    return {
        layer: sae for layer, (_, sae) in _load_checked(sites, basis, site, found, what).items()
    }


def _cached(repo_id: str, filename: str, required: bool) -> Path | None:
    """A repo file from the local Hugging Face cache (no network); fetched only when missing
    and the hub is online. ``None`` for a missing optional file."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id, filename)
    if isinstance(hit, str):
        return Path(hit)
    if constants.HF_HUB_OFFLINE or hit is not None:  # offline, or cached as known-missing
        if required:
            raise FileNotFoundError(
                f"{repo_id}/{filename} is not in the local Hugging Face cache "
                f"({constants.HF_HUB_CACHE}) and the hub is offline (HF_HUB_OFFLINE=1)"
            )
        return None
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, filename))
    except EntryNotFoundError:
        if required:
            raise
        return None


def is_gemmascope_release(release: str) -> bool:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return get_pretrained_saes_directory()[release].conversion_func == CONVERSION


def load_gemmascope_release(
    sites: SiteTable, basis: str, site: str, release: str, ids: list[str]
) -> tuple[list, list[str]]:
    """(one SAE per layer, their sae_ids) of a Gemma Scope 2 release, cache first."""
    from sae_lens.loading.pretrained_saes_directory import get_repo_id_and_folder_name

    from bench.bases.layers import every_layer

    found = {}
    for sae_id in ids:
        repo_id, folder = get_repo_id_and_folder_name(release, sae_id=sae_id)
        params = _cached(repo_id, f"{folder}/{PARAMS}", required=True)
        config = _cached(repo_id, f"{folder}/{CONFIG}", required=False)
        found[sae_id] = (read_folder(folder, params, config), params)
    what = f"release {release!r}"
    chosen = every_layer(sites, _load_checked(sites, basis, site, found, what), what)
    return [sae for _, sae in chosen], [sae_id for sae_id, _ in chosen]
