"""What a circuit is made of: its error nodes, and its nodes per layer and per position.

Node order is the sweep's (:meth:`bench.attribution.nodes.NodeScores.flat`): every unit node
(layer, position, unit) in row-major order, then — for dictionary bases whose error nodes
are ablated — one error node per (layer, position). C_k holds the k nodes of lowest rank
(:func:`bench.sweep.sweep.node_ranks`). Steps of :func:`composition`:

1. the k@0.8 circuit: C_k with k = ⌈k@0.8⌉ (k@0.8 is interpolated between grid sizes; its
   circuit is the smallest whole one at least that large); none when F never reaches 0.8;
2. its counts: error nodes, nodes per layer, nodes per position (the last position included);
3. per grid size, the error-node count of every C_k (cheap: ranks only).

An SAE circuit made mostly of error nodes says little about the SAE's latents.
"""

from __future__ import annotations

import math

import numpy as np


def circuit_counts(
    ranks: np.ndarray, k: int, n_layers: int, seq: int, n_units: int
) -> dict[str, object]:
    """Counts of C_k (the k nodes of lowest rank). ranks: [n_nodes] in node order."""
    members = np.flatnonzero(ranks < k)  # [k] node indices
    n_unit_nodes = n_layers * seq * n_units
    units, errors = members[members < n_unit_nodes], members[members >= n_unit_nodes]
    unit_layer, unit_pos = units // (seq * n_units), (units // n_units) % seq
    err = errors - n_unit_nodes
    err_layer, err_pos = err // seq, err % seq
    layers = np.concatenate([unit_layer, err_layer])
    positions = np.concatenate([unit_pos, err_pos])
    return {
        "k": int(k),
        "error_nodes": len(errors),
        "error_share": len(errors) / k if k else 0.0,
        "by_layer": np.bincount(layers, minlength=n_layers).astype(int).tolist(),
        "by_position": np.bincount(positions, minlength=seq).astype(int).tolist(),
    }


def composition(
    ranks: np.ndarray,  # [n_nodes]: rank of each node, 0 = most important
    sizes: list[int],
    k_at_0_8: float | None,
    n_layers: int,
    seq: int,
    n_units: int,
) -> dict[str, object]:
    """Steps 1-3: ``{"k_at_0_8": counts or None, "error_nodes_per_size": [...]}``."""
    ranks = np.asarray(ranks)
    n_unit_nodes = n_layers * seq * n_units
    err_ranks = np.sort(ranks[n_unit_nodes:])  # [error nodes]
    per_size = [int(np.searchsorted(err_ranks, k)) for k in sizes]  # error ranks below k
    at = None
    if k_at_0_8 is not None:
        k = min(math.ceil(k_at_0_8 - 1e-9), len(ranks))
        at = circuit_counts(ranks, k, n_layers, seq, n_units)
    return {"k_at_0_8": at, "error_nodes_per_size": per_size}
