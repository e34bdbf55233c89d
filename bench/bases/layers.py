"""One dictionary per layer, every layer: the checks every dictionary loader shares
(``path:``, ``release:``, Gemma Scope 2's and eai-sparsify's layouts)."""

from __future__ import annotations

from typing import Any

from bench.model.sites import SiteTable


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
