"""Dictionary bases (``sae``, ``transcoder``): one sae-lens dictionary per layer as units.

- :func:`parse_dictionary`: the ``dictionary`` string (``path:``, ``release:``, ``local``);
- :func:`check_config`: a dictionary's config against the model (hook -> site and layer through
  :mod:`bench.bases.hooks`, widths, SAE vs transcoder, no run-time normalization);
- :func:`check_affine`: decode must be ``linear(u) + b_dec`` (``decode_delta`` relies on it);
- :func:`prepare`: frozen, eval mode, the model's dtype and device;
- :class:`DictionaryBasis`: encode/decode are sae-lens's own; the harness adds the error node
  ``x - decode(encode(x))``. A skip transcoder's skip term ``x @ W_skip.T`` is not a latent, so
  it lands in the error node (``describe()`` says so).

Loading (path / release / local) is in :mod:`bench.bases.loading`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from bench.bases import (
    TRANSCODER_READ_SITE,
    topk_transcoder,  # noqa: F401  (registers topk_transcoder in sae-lens)
)
from bench.bases.hooks import cfg_field, resolve_hook
from bench.model.sites import SiteTable

log = logging.getLogger(__name__)

TRANSCODER_ARCHS = ("transcoder", "skip_transcoder", "jumprelu_transcoder", "topk_transcoder")
SKIP_ARCHS = ("skip_transcoder", "jumprelu_skip_transcoder", "topk_skip_transcoder")
SUPPORTED_NORMALIZATION = ("none", None)
LOCAL_OPTIONS = {"width": "width", "k": "k", "tokens": "n_tokens", "epochs": "epochs"}


@dataclass(frozen=True)
class DictionarySpec:
    kind: str  # "path" | "release" | "local"
    target: str  # directory, release name, local config name ("" for the default)
    selector: str | None = None  # release sae_id template
    options: dict[str, int] = field(default_factory=dict)  # local: TrainConfig fields


def parse_dictionary(dictionary: str | None) -> DictionarySpec:
    """``path:<dir>``, ``release:<name>[:<sae_id template>]``, ``local``, ``local:<name>`` (a
    named config) or ``local:width=W,k=K,tokens=N,epochs=E`` (any of them)."""
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
        rest = dictionary[len("local:") :]
        if rest and "=" not in rest:  # a named config (bench.training.config.PRESETS)
            return DictionarySpec("local", rest)
        options: dict[str, int] = {}
        for item in filter(None, rest.split(",")):
            key, _, value = item.partition("=")
            if key not in LOCAL_OPTIONS or not value.isdigit():
                raise ValueError(
                    f"bad local dictionary option {item!r}; use local:<name> or "
                    f"local:{','.join(f'{k}=N' for k in LOCAL_OPTIONS)}"
                )
            options[LOCAL_OPTIONS[key]] = int(value)
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

    def straight_through(self, layer: int, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """x with the gradient routed to the leaf latents u through the linear decoder."""
        dec = self.decode_delta(layer, u)  # [..., w]
        return x + (dec - dec.detach())

    def splice(
        self, layer: int, x: torch.Tensor, new: torch.Tensor, old: torch.Tensor
    ) -> torch.Tensor:
        """The site's value x with its latents ``old`` replaced by ``new`` (error kept)."""
        return x + self.decode_delta(layer, new - old)  # [..., w]

    def pullback(self, layer: int, g: torch.Tensor, n_units: int) -> torch.Tensor:
        """∂m/∂u from the site gradient g: the (linear) decoder's transpose applied to g."""
        z = torch.zeros(
            (*g.shape[:-1], n_units), dtype=g.dtype, device=g.device, requires_grad=True
        )
        with torch.enable_grad():
            (gu,) = torch.autograd.grad(self.decode_delta(layer, z), z, g)
        return gu  # [..., n_units]

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


def prepare(sae, sites: SiteTable):
    """A loaded SAE frozen, in eval mode, in the model's dtype and device."""
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
