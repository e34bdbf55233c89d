"""Dictionary bases (``sae``, ``transcoder``): sae-lens dictionaries as units of a site.

``make_dictionary_basis(sites, basis, site, dictionary)`` is what ``bench.bases.make_basis``
calls. Steps:

1. parse the ``dictionary`` string (:func:`parse_dictionary`):
   - ``path:<dir>``: SAEs saved by sae-lens (``sae.save_model``), one sub-directory per layer,
     conventionally ``<dir>/<hook_name>/`` (``cfg.json`` + ``sae_weights.safetensors``); layers
     are found from each config's hook name, not from directory names; an optional
     ``<dir>/quality.json`` (as ``python -m baselines quality`` writes) is the basis's quality;
   - ``release:<release>[:<sae_id template>]``: a sae-lens registry release
     (:mod:`baselines.releases`);
   - ``local[:width=W,k=K]``: SAEs sparsebench trains for this model (:mod:`baselines.training`);
2. read each dictionary's config first and check it against the model (:func:`check_config`):
   its hook maps onto this basis's site (read and write site for transcoders), its widths equal
   the site's, it is an SAE for ``sae`` and a transcoder for ``transcoder``, every layer has one;
3. load the weights with sae-lens (``SAE.load_from_disk`` / ``SAE.from_pretrained``) in the
   model's dtype and device, frozen, in eval mode;
4. check that decode is affine in the latents (``decode(u) = linear(u) + b_dec``, which
   ``decode_delta`` relies on); dictionaries whose decode depends on the input (run-time
   ``layer_norm`` normalization, hook-z reshaping) are refused;
5. wrap them in a :class:`DictionaryBasis`: encode/decode are sae-lens's own, the harness adds the
   error node ``x - decode(encode(x))``. A skip transcoder's skip term ``x @ W_skip.T`` is not a
   latent, so it lands in the error node (``describe()`` says so).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from baselines.hooks import cfg_field, resolve_hook
from bench.sites import SiteTable

log = logging.getLogger(__name__)

TRANSCODER_ARCHS = ("transcoder", "skip_transcoder", "jumprelu_transcoder")
SKIP_ARCHS = ("skip_transcoder", "jumprelu_skip_transcoder")
TRANSCODER_WRITE_SITE, TRANSCODER_READ_SITE = "mlp_out", "mlp_in"
SUPPORTED_NORMALIZATION = ("none", None)


@dataclass(frozen=True)
class DictionarySpec:
    kind: str  # "path" | "release" | "local"
    target: str  # directory, release name, or "" for local
    selector: str | None = None  # release sae_id template
    options: dict[str, int] = field(default_factory=dict)  # local: width, k


def parse_dictionary(dictionary: str | None) -> DictionarySpec:
    """``path:<dir>``, ``release:<name>[:<sae_id template>]`` or ``local[:width=W,k=K]``."""
    if not dictionary:
        raise ValueError(
            "dictionary bases need a dictionary: 'local', 'path:<dir>' or 'release:<name>'"
        )
    if dictionary.startswith("path:"):
        return DictionarySpec("path", dictionary[len("path:") :])
    if dictionary.startswith("release:"):
        release, _, selector = dictionary[len("release:") :].partition(":")
        return DictionarySpec("release", release, selector or None)
    if dictionary == "local" or dictionary.startswith("local:"):
        options: dict[str, int] = {}
        for item in filter(None, dictionary[len("local:") :].split(",")):
            key, _, value = item.partition("=")
            if key not in ("width", "k") or not value.isdigit():
                raise ValueError(f"bad local dictionary option {item!r}; use local:width=W,k=K")
            options[key] = int(value)
        return DictionarySpec("local", "", options=options)
    raise ValueError(
        f"unknown dictionary {dictionary!r}; use 'local', 'path:<dir>' or 'release:<name>'"
    )


def check_config(sites: SiteTable, basis: str, site: str, cfg: dict[str, Any], where: str) -> int:
    """The layer a dictionary config serves; raises naming both sites or shapes on a mismatch."""
    arch = cfg.get("architecture", "standard")
    is_transcoder = arch in TRANSCODER_ARCHS or arch in SKIP_ARCHS or "d_out" in cfg
    if basis == "sae" and is_transcoder:
        raise ValueError(f"{where} is a transcoder ({arch}); use basis 'transcoder'")
    if basis == "transcoder" and not is_transcoder:
        raise ValueError(f"{where} is an SAE ({arch}), not a transcoder; use basis 'sae'")
    if cfg.get("reshape_activations", "none") not in ("none", None):
        raise ValueError(f"{where} reshapes its input ({cfg['reshape_activations']}); unsupported")
    norm = cfg.get("normalize_activations", "none")
    if norm not in SUPPORTED_NORMALIZATION:
        raise ValueError(
            f"{where} normalizes activations at run time ({norm!r}), so its decode depends on the "
            "input; fold the normalization into the weights first (sae-lens "
            "fold_activation_norm_scaling_factor) or use another dictionary"
        )
    hook, hf_hook = cfg_field(cfg, "hook_name"), cfg_field(cfg, "hf_hook_name")
    read_site, layer = resolve_hook(sites, hook, hf_hook)
    want_read = TRANSCODER_READ_SITE if basis == "transcoder" else site
    if read_site != want_read:
        raise ValueError(
            f"{where} reads site {read_site!r} (hook {hook or hf_hook!r}), but basis {basis!r} at "
            f"site {site!r} needs a dictionary reading site {want_read!r}"
        )
    if basis == "transcoder":
        out_hook, out_hf = cfg_field(cfg, "hook_name_out"), cfg_field(cfg, "hf_hook_name_out")
        if out_hook or out_hf:
            write_site, out_layer = resolve_hook(sites, out_hook, out_hf)
            if (write_site, out_layer) != (site, layer):
                raise ValueError(
                    f"{where} writes site {write_site!r} layer {out_layer} (hook "
                    f"{out_hook or out_hf!r}), but it reads layer {layer} and basis 'transcoder' "
                    f"needs it to write site {site!r} of the same layer"
                )
    d_in, want_in = int(cfg["d_in"]), sites.width(read_site)
    if d_in != want_in:
        raise ValueError(
            f"{where} has d_in {d_in} (input shape [..., {d_in}]), but site {read_site!r} of this "
            f"model has width {want_in} (shape [..., {want_in}]); is it for another model?"
        )
    if basis == "transcoder":
        d_out, want_out = int(cfg["d_out"]), sites.width(site)
        if d_out != want_out:
            raise ValueError(
                f"{where} has d_out {d_out} (output shape [..., {d_out}]), but site {site!r} of "
                f"this model has width {want_out} (shape [..., {want_out}])"
            )
    return layer


def _linear_decode(sae, delta: torch.Tensor) -> torch.Tensor:
    """The latent-linear part of sae-lens's decode: ``delta @ W_dec`` (decoder-norm rescaled
    where the SAE's config says so).  # [..., d_sae] -> [..., d_out]"""
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        delta = delta / sae.W_dec.norm(dim=-1)
    return delta @ sae.W_dec


def check_affine(sae, where: str) -> None:
    """Refuse dictionaries whose decode is not ``linear(u) + b_dec`` (decode_delta needs it)."""
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(3, sae.cfg.d_sae, generator=gen).to(sae.W_dec)
    with torch.no_grad():
        got = sae.decode(u)
        want = _linear_decode(sae, u) + sae.b_dec
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-4):
        raise ValueError(
            f"{where} ({type(sae).__name__}) has a decode that is not affine in its latents; "
            "unsupported as a basis"
        )


class DictionaryBasis:
    """Latents of one sae-lens dictionary per layer, plus one error node per (layer, position)."""

    has_error = True
    identity = False

    def __init__(
        self,
        name: str,  # "sae" | "transcoder"
        site: str,  # the site written (and read, for SAEs)
        read_site: str,
        saes: list,  # one sae-lens SAE per layer, index = layer
        dictionary: str,
        source: dict[str, Any],
        quality: dict[str, Any] | None = None,
    ):
        widths = {int(s.cfg.d_sae) for s in saes}
        if len(widths) != 1:
            raise ValueError(f"dictionary {dictionary!r} mixes latent widths {sorted(widths)}")
        self.name, self.site, self.read_site = name, site, read_site
        self.saes = saes
        self.dictionary = dictionary
        self.source = source
        self._quality = quality
        self._width = widths.pop()
        self.fingerprint = _fingerprint(saes)

    def n_units(self) -> int:
        return self._width

    def encode(self, layer: int, x: torch.Tensor) -> torch.Tensor:  # [..., d_in] -> [..., d_sae]
        sae = self.saes[layer]
        return sae.encode(x.to(sae.dtype))

    def decode(self, layer: int, units: torch.Tensor) -> torch.Tensor:  # [..., d_sae] -> [..., w]
        return self.saes[layer].decode(units)

    def decode_delta(self, layer: int, delta: torch.Tensor) -> torch.Tensor:  # -> [..., w]
        return _linear_decode(self.saes[layer], delta)

    def quality(self) -> dict[str, Any] | None:
        return self._quality

    def describe(self) -> dict[str, Any]:
        first = self.saes[0].cfg
        out = {
            "basis": self.name,
            "site": self.site,
            "read_site": self.read_site,
            "dictionary": self.dictionary,
            "architecture": first.architecture(),
            "d_sae": self._width,
            "weights_sha256": self.fingerprint,
            **self.source,
        }
        if first.architecture() in SKIP_ARCHS:
            out["skip_connection"] = "in the error node"
        return out


def _fingerprint(saes: list) -> str:
    """sha256 over every layer's tensors: identifies the weights in attribution cache keys."""
    h = hashlib.sha256()
    for sae in saes:
        for name, tensor in sorted(sae.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _prepare(sae, sites: SiteTable):
    if sae.cfg.normalize_activations not in SUPPORTED_NORMALIZATION:
        raise ValueError(
            f"{type(sae).__name__} at {cfg_field(sae.cfg.to_dict(), 'hook_name')} still normalizes "
            f"activations at run time ({sae.cfg.normalize_activations!r}); unsupported"
        )
    param = next(sites.model.parameters())
    sae = sae.to(device=param.device, dtype=param.dtype)
    sae.eval()
    sae.requires_grad_(False)
    return sae


# -- path: ---------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); fix or remove it") from None


def read_dir_configs(directory: Path) -> dict[Path, dict[str, Any]]:
    """Every ``<directory>/*/cfg.json`` (sae-lens's own layout), by sub-directory."""
    from sae_lens.constants import SAE_CFG_FILENAME
    from sae_lens.loading.pretrained_sae_loaders import handle_config_defaulting

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"dictionary directory {directory} does not exist")
    found = {  # older sae-lens layouts converted as sae-lens's own loader does
        p.parent: handle_config_defaulting(_read_json(p))
        for p in sorted(directory.glob(f"*/{SAE_CFG_FILENAME}"))
    }
    if not found:
        raise FileNotFoundError(
            f"{directory} holds no SAEs: expected one sub-directory per layer, each with "
            f"{SAE_CFG_FILENAME} and weights as sae-lens's save_model writes them"
        )
    return found


def group_layers(found: dict[Any, int], what: str) -> dict[int, Any]:
    """Items by layer; raises naming a layer that has more than one."""
    layers: dict[int, list] = {}
    for item, layer in found.items():
        layers.setdefault(layer, []).append(item)
    dupes = {layer: items for layer, items in layers.items() if len(items) > 1}
    if dupes:
        layer, items = min(dupes.items())
        raise ValueError(
            f"{what} has {len(items)} dictionaries for layer {layer} "
            f"({', '.join(map(str, items))}); keep one per layer"
        )
    return {layer: items[0] for layer, items in sorted(layers.items())}


def every_layer(sites: SiteTable, per_layer: dict[int, Any], what: str) -> list:
    """``per_layer`` as a list over layers 0..n-1; raises naming the missing layers."""
    missing = [layer for layer in range(sites.n_layers) if layer not in per_layer]
    if missing:
        raise ValueError(
            f"{what} covers layers {sorted(per_layer)} but the model has {sites.n_layers} layers; "
            f"missing: {missing} (a basis needs a dictionary on every layer)"
        )
    return [per_layer[layer] for layer in range(sites.n_layers)]


def load_dir(sites: SiteTable, basis: str, site: str, directory: Path) -> dict[int, Any]:
    """The checked, frozen SAEs of a ``path:`` directory, by layer (any subset of layers)."""
    from sae_lens import SAE

    configs = read_dir_configs(directory)
    layer_of = {
        sub: check_config(sites, basis, site, cfg, f"dictionary {sub}")
        for sub, cfg in configs.items()
    }
    out = {}
    for layer, sub in group_layers(layer_of, f"dictionary directory {directory}").items():
        sae = _prepare(SAE.load_from_disk(sub), sites)
        check_affine(sae, f"dictionary {sub}")
        out[layer] = sae
    return out


def load_path(sites: SiteTable, basis: str, site: str, directory: str):
    root = Path(directory).expanduser()
    saes = every_layer(sites, load_dir(sites, basis, site, root), f"dictionary directory {root}")
    quality_file = root / "quality.json"
    quality = _read_json(quality_file) if quality_file.exists() else None
    return saes, {"source": f"path:{root.resolve()}"}, quality


# -- the harness's entry point --------------------------------------------------------------------


def make_dictionary_basis(
    sites: SiteTable, basis: str, site: str, dictionary: str | None
) -> DictionaryBasis:
    """The ``sae`` or ``transcoder`` basis at ``site`` from ``dictionary`` (module docstring)."""
    if basis not in ("sae", "transcoder"):
        raise ValueError(f"make_dictionary_basis builds 'sae' or 'transcoder', not {basis!r}")
    sites.site(site)  # raises on an unknown site, naming the valid ones
    if basis == "transcoder" and site != TRANSCODER_WRITE_SITE:
        raise ValueError(
            f"basis 'transcoder' writes site {TRANSCODER_WRITE_SITE!r} (and reads "
            f"{TRANSCODER_READ_SITE!r}); pass site={TRANSCODER_WRITE_SITE!r}, not {site!r}"
        )
    spec = parse_dictionary(dictionary)
    if spec.kind == "path":
        saes, source, quality = load_path(sites, basis, site, spec.target)
    elif spec.kind == "release":
        from baselines.releases import load_release

        saes, source, quality = load_release(sites, basis, site, spec.target, spec.selector)
    else:
        if basis != "sae":
            raise ValueError(
                "local dictionaries are SAEs (sae-lens has no transcoder trainer); for basis "
                "'transcoder' use dictionary 'path:<dir>' or 'release:<name>'"
            )
        from baselines.training import local_dictionary_dir

        directory = local_dictionary_dir(sites, site, spec.options)
        saes, _, quality = load_path(sites, basis, site, str(directory))
        source = {"source": f"local:{directory.parent.name}/{directory.name}"}
    read_site = TRANSCODER_READ_SITE if basis == "transcoder" else site
    return DictionaryBasis(basis, site, read_site, saes, str(dictionary), source, quality)
