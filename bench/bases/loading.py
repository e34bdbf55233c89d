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
     ``transcoder``, TopK transcoders) sparsebench trains for this model (:mod:`bench.training`);
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
from typing import TYPE_CHECKING

from bench.bases.dictionary import (
    TRANSCODER_READ_SITE,
    TRANSCODER_WRITE_SITE,
    DictionaryBasis,
    parse_dictionary,
)
from bench.bases.path import load_path

if TYPE_CHECKING:
    from bench.models import ModelHandle

log = logging.getLogger(__name__)


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
    if spec.kind == "path":
        saes, source, quality = load_path(sites, basis, site, spec.target)
    elif spec.kind == "release":
        from bench.bases.releases import load_release

        saes, source, quality = load_release(sites, basis, site, spec.target, spec.selector)
    else:
        from bench.training.train import local_dictionary_dir

        directory = local_dictionary_dir(handle, basis, site, spec.target, spec.options)
        saes, _, quality = load_path(sites, basis, site, str(directory))
        source = {"source": f"local:{directory.parent.name}/{directory.name}"}
    read_site = TRANSCODER_READ_SITE if basis == "transcoder" else site
    return DictionaryBasis(basis, site, read_site, saes, str(dictionary), source, quality)
