"""``release:<name>[:<sae_id template>]``: one dictionary per layer from a sae-lens release.

Steps of :func:`load_release`:

1. look the release up in sae-lens's directory (``pretrained_saes.yaml``); an unknown name raises
   with close matches;
2. choose its sae_ids: all of them, or those matching the template (``{layer}`` stands for a
   layer number, e.g. ``layer_{layer}_width_16k_l0_small``; a template without ``{layer}`` is a
   substring filter); ids that differ other than in numbers (``..._l0_small``, ``..._l0_big``)
   are variants, and choosing among them needs a template;
3. fetch each chosen SAE's config only (``load_sae_config_from_huggingface``, small files) and
   map its hook onto (site, layer) with :func:`bench.bases.dictionary.check_config`, which also
   checks widths and kinds against the model before any weights are fetched;
4. load the weights with ``SAE.from_pretrained(release, sae_id)`` — sae-lens's own loader, which
   folds a registry norm scaling factor into the weights where the release has one; Gemma Scope 2
   releases (conversion ``gemma_3``) instead go through :mod:`bench.bases.gemmascope` (steps 3-4
   from the local cache, shapes from the safetensors headers, no network when cached);
5. quality: ``quality.json`` under ``cache_dir("saes", "releases", <release>)`` if
   ``python -m bench.training quality`` measured it for this selection, else None.

Network: sae-lens fetches through ``huggingface_hub``; offline, its cache (``HF_HUB_CACHE``) must
already hold the files. Tests populate that cache in the hub's own layout.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from pathlib import Path
from typing import Any

from bench.bases.dictionary import check_affine, check_config, prepare
from bench.bases.layers import every_layer, group_layers
from bench.core.cache import cache_dir
from bench.model.sites import SiteTable

log = logging.getLogger(__name__)


def release_ids(release: str, selector: str | None) -> list[str]:
    """The release's sae_ids, filtered by ``selector`` (module docstring, step 2)."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    if release not in directory:
        close = difflib.get_close_matches(release, list(directory), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown sae-lens release {release!r}{hint}")
    ids = list(directory[release].saes_map)
    if selector is None:
        return ids
    if "{layer}" in selector:
        pattern = re.escape(selector).replace(re.escape("{layer}"), r"\d+")
        chosen = [i for i in ids if re.fullmatch(pattern, i)]
    else:
        chosen = [i for i in ids if selector in i]
    if not chosen:
        raise ValueError(
            f"no sae_id of release {release!r} matches {selector!r}; some ids: {ids[:6]}"
        )
    return chosen


def quality_path(release: str, selector: str | None, basis: str, site: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{basis}-{site}-{selector or 'all'}")
    return cache_dir("saes", "releases", release) / f"{name}.quality.json"


def load_release(
    sites: SiteTable, basis: str, site: str, release: str, selector: str | None
) -> tuple[list, dict[str, Any], dict[str, Any] | None]:
    """(one SAE per layer, source description, quality or None); see the module docstring."""
    from sae_lens import SAE
    from sae_lens.loading.pretrained_sae_loaders import load_sae_config_from_huggingface
    from sae_lens.loading.pretrained_saes_directory import get_norm_scaling_factor

    ids = release_ids(release, selector)
    kinds: dict[str, str] = {}  # ids with their digits blanked: one kind per variant
    for sae_id in ids:
        kinds.setdefault(re.sub(r"\d+", "#", sae_id), sae_id)
    if len(kinds) > 1:
        examples = ", ".join(list(kinds.values())[:5])
        raise ValueError(
            f"release {release!r} has {len(ids)} SAEs of {len(kinds)} kinds"
            f"{f' matching {selector!r}' if selector else ''} (e.g. {examples}); choose one per "
            f"layer with 'release:{release}:<template>', {{layer}} standing for the layer number, "
            f"e.g. {re.sub(r'(?<=layer_)[0-9]+', '{layer}', ids[0])!r}"
        )
    from bench.bases.gemmascope import is_gemmascope_release, load_gemmascope_release

    if is_gemmascope_release(release):  # Gemma Scope 2: from the local cache, shapes from headers
        saes, chosen = load_gemmascope_release(sites, basis, site, release, ids)
        return (
            saes,
            {"source": f"release:{release}", "sae_ids": chosen},
            _quality(release, selector, basis, site),
        )
    param = next(sites.model.parameters())
    layer_of: dict[str, int] = {}
    for sae_id in ids:
        cfg = load_sae_config_from_huggingface(release, sae_id, device=str(param.device))
        if get_norm_scaling_factor(release, sae_id) is not None:
            cfg = {**cfg, "normalize_activations": "none"}  # from_pretrained folds it (step 4)
        layer_of[sae_id] = check_config(sites, basis, site, cfg, f"{release}/{sae_id}")
    what = f"release {release!r}"
    chosen = every_layer(sites, group_layers(layer_of, what), what)
    saes = []
    for sae_id in chosen:
        log.info("loading %s / %s", release, sae_id)
        sae = SAE.from_pretrained(release, sae_id, device=str(param.device))
        sae = prepare(sae, sites)
        check_affine(sae, f"{release}/{sae_id}")
        saes.append(sae)
    source = {"source": f"release:{release}", "sae_ids": chosen}
    return saes, source, _quality(release, selector, basis, site)


def _quality(release: str, selector: str | None, basis: str, site: str) -> dict | None:
    """Step 5: the measured quality of this selection, or None."""
    qpath = quality_path(release, selector, basis, site)
    quality = None
    if qpath.exists():
        try:
            quality = json.loads(qpath.read_text())
        except (OSError, ValueError) as err:  # a damaged cache file: ignored, not fatal
            log.warning("cached quality %s is unreadable (%s); ignoring it", qpath, err)
    return quality
