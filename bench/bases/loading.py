"""Dictionary bases (``sae``, ``transcoder``): sae-lens dictionaries as units of a site.

``make_dictionary_basis(handle, basis, site, dictionary)`` is what ``bench.bases.make_basis``
calls. Steps:

1. parse the ``dictionary`` string (:func:`parse_dictionary`):
   - ``path:<dir>``: SAEs saved by sae-lens (``sae.save_model``), one sub-directory per layer,
     conventionally ``<dir>/<hook_name>/`` (``cfg.json`` + ``sae_weights.safetensors``); layers
     are found from each config's hook name, not from directory names; Gemma Scope 2's layout
     (``<dir>/*/params.safetensors``, :mod:`bench.bases.gemmascope`) and eai-sparsify's
     (``<dir>/*/sae.safetensors``, :mod:`bench.bases.sparsify`) are recognised too; an optional
     ``<dir>/quality.json`` (as ``python -m bench.training quality`` writes) is the basis's quality;
   - ``release:<release>[:<sae_id template>]``: a sae-lens registry release
     (:mod:`bench.bases.releases`; Gemma Scope 2 releases from the local cache, offline);
   - ``local``, ``local:<name>`` or ``local:width=W,k=K,tokens=N,epochs=E``: TopK SAEs (or, for
     ``transcoder``, TopK transcoders) sparsebench trains for this model: a source that
     :mod:`bench.training.local` registers (bases never import training);
   each source is a loader in :data:`DICTIONARY_SOURCES` (:func:`register_dictionary_source`);
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
   latent, so it lands in the error node (``describe()`` says so): the basis's decode is the
   latents' affine part, which ``decode_delta`` and the splice rely on, and the Basis protocol's
   decode sees latents only. Measured quality (:mod:`bench.training.quality`) counts the skip
   term as part of the reconstruction, so FVU and CE-loss recovered are the dictionary's own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bench.bases import TRANSCODER_READ_SITE, TRANSCODER_WRITE_SITE
from bench.bases.dictionary import (
    DictionaryBasis,
    DictionarySpec,
    parse_dictionary,
)
from bench.bases.path import load_path

if TYPE_CHECKING:
    from bench.model.handle import ModelHandle

log = logging.getLogger(__name__)


# kind -> loader(handle, basis, site, spec) -> (per-layer SAEs, source record, quality)
Loader = Callable[["ModelHandle", str, str, DictionarySpec], tuple[list, dict[str, Any], Any]]
DICTIONARY_SOURCES: dict[str, Loader] = {}


def register_dictionary_source(kind: str, loader: Loader) -> Loader:
    """Register where ``dictionary="<kind>:..."`` comes from (SAELens's registry pattern)."""
    DICTIONARY_SOURCES[kind] = loader
    return loader


def _load_path(handle, basis, site, spec):
    return load_path(handle.sites, basis, site, spec.target)


def _load_release(handle, basis, site, spec):
    from bench.bases.releases import load_release

    return load_release(handle.sites, basis, site, spec.target, spec.selector)


register_dictionary_source("path", _load_path)
register_dictionary_source("release", _load_release)


def make_dictionary_basis(
    handle: ModelHandle, basis: str, site: str, dictionary: str | None
) -> DictionaryBasis:
    """The ``sae`` or ``transcoder`` basis at ``site`` from ``dictionary`` (module docstring)."""
    sites = handle.sites
    if basis not in ("sae", "transcoder"):
        raise ValueError(f"make_dictionary_basis builds 'sae' or 'transcoder', not {basis!r}")
    sites.site(site)  # raises on an unknown site, naming the valid ones
    if basis == "transcoder" and site != TRANSCODER_WRITE_SITE:
        raise ValueError(
            f"basis 'transcoder' writes site {TRANSCODER_WRITE_SITE!r} (and reads "
            f"{TRANSCODER_READ_SITE!r}); pass site={TRANSCODER_WRITE_SITE!r}, not {site!r}"
        )
    spec = parse_dictionary(dictionary)
    if spec.kind not in DICTIONARY_SOURCES:
        raise ValueError(
            f"dictionary {dictionary!r}: source {spec.kind!r} is not registered (registered: "
            f"{', '.join(DICTIONARY_SOURCES)}); 'local' is registered by importing "
            "bench.training.local, as run_sweep and the suite do"
        )
    saes, source, quality = DICTIONARY_SOURCES[spec.kind](handle, basis, site, spec)
    read_site = TRANSCODER_READ_SITE if basis == "transcoder" else site
    return DictionaryBasis(basis, site, read_site, saes, str(dictionary), source, quality)
