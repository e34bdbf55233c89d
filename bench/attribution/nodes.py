"""NodeScores: one attribution score per node (layer, position, unit), plus error nodes."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class NodeScores:
    """Scores of every node; error scores only for dictionary bases."""

    units: torch.Tensor  # [layers, pos, n_units]
    error: torch.Tensor | None  # [layers, pos]
    method: str

    def flat(self, include_error: bool) -> torch.Tensor:
        """All node scores in node order: units first, then error nodes.  # [n_nodes]"""
        parts = [self.units.reshape(-1)]
        if include_error and self.error is not None:
            parts.append(self.error.reshape(-1))
        return torch.cat(parts)
