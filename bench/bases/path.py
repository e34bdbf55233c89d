"""``path:<dir>`` dictionaries: SAEs saved by sae-lens, one sub-directory per layer.

Steps (:func:`load_path`):

1. read every ``<dir>/*/cfg.json`` (:func:`read_dir_configs`; older sae-lens layouts converted
   as sae-lens's own loader does); Gemma Scope 2's layout (``<dir>/*/params.safetensors``) and
   eai-sparsify's (``<dir>/*/sae.safetensors``) go to :mod:`bench.bases.gemmascope` and
   :mod:`bench.bases.sparsify`, which do steps 2-4 the same way;
2. check each config against the model (:func:`bench.bases.dictionary.check_config`), which
   also gives its layer; layers come from hook names, not directory names;
3. keep one dictionary per layer (:func:`group_layers`) and require every layer
   (:func:`every_layer`);
4. load the weights (``SAE.load_from_disk``), frozen, in the model's dtype, and check that
   decode is affine (:func:`bench.bases.dictionary.check_affine`);
5. an optional ``<dir>/quality.json`` (as ``python -m bench.training quality`` writes) is the
   basis's quality.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from bench.bases.dictionary import check_affine, check_config, prepare
from bench.bases.layers import every_layer, group_layers
from bench.model.sites import SiteTable

log = logging.getLogger(__name__)


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


def load_dir(sites: SiteTable, basis: str, site: str, directory: Path) -> dict[int, Any]:
    """The checked, frozen SAEs of a ``path:`` directory, by layer (any subset of layers)."""
    from sae_lens import SAE

    from bench.bases import gemmascope, sparsify

    if gemmascope.is_gemmascope_dir(directory):  # Gemma Scope 2's layout (params.safetensors)
        return gemmascope.load_gemmascope_dir(sites, basis, site, directory)
    if sparsify.is_sparsify_dir(directory):  # eai-sparsify's layout (sae.safetensors)
        return sparsify.load_sparsify_dir(sites, basis, site, directory)
    configs = read_dir_configs(directory)
    layer_of = {
        sub: check_config(sites, basis, site, cfg, f"dictionary {sub}")
        for sub, cfg in configs.items()
    }
    out = {}
    for layer, sub in group_layers(layer_of, f"dictionary directory {directory}").items():
        try:
            sae = prepare(SAE.load_from_disk(sub), sites)
        except Exception as err:  # a truncated or damaged weights file: name it and the fix
            raise ValueError(
                f"dictionary {sub}: its weights cannot be read ({type(err).__name__}: {err}); "
                "the files are damaged or incomplete: copy or download them again (a local "
                "entry: delete the directory and it is trained again)"
            ) from None
        check_affine(sae, f"dictionary {sub}")
        out[layer] = sae
    return out


def load_path(sites: SiteTable, basis: str, site: str, directory: str):
    root = Path(directory).expanduser()
    saes = every_layer(sites, load_dir(sites, basis, site, root), f"dictionary directory {root}")
    quality_file = root / "quality.json"
    quality = _read_json(quality_file) if quality_file.exists() else None
    return saes, {"source": f"path:{root.resolve()}"}, quality
