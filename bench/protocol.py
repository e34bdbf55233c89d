"""The protocol: one reference value r(x) per node, shared by attribution and ablation.

Attribution predicts what happens when a node is set to its reference; the sweep then sets
every node outside the circuit to a reference. They must be the *same* reference, or a node
scored 0 can still carry the task: in a causal LM every node before the first token where x
and x′ differ has a(x) = a(x′), so it scores 0 against x′, yet mean-ablating it destroys what
that position holds (a name in IOI, the century in greater-than). docs/METHOD.md, "Attribution
baseline and ablation: one reference, both stages"; MIB (Mueller et al. 2025) uses ``patch``.

Steps:

1. :func:`get_protocol` resolves a protocol name (the ``ablation`` argument of ``run_sweep``,
   the CLI and the suite) to a :class:`Protocol`: the reference attribution scores against,
   the reference the sweep ablates to, and whether the two match;
2. :func:`mean_units` gives the per-position mean of every unit and error node over a split's
   counterfactual prompts (``mean``: the train split for attribution, the test split for the
   sweep);
3. :func:`batch_reference` gives r(x) for one batch, shaped like the batch's own units
   (``patch``: the pair's counterfactual; ``mean``: the mean, broadcast; ``zero``: 0).

SAE error modes (docs/METHOD.md, "SAE error nodes") are registered here too: ``ablate`` (default)
ranks, counts and ablates one error node per (layer, position) like any latent; ``keep`` never
ablates it and does not count it, an upper bound for dictionaries.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from typing import Any

import torch

from bench.bases import Basis
from bench.models import ModelHandle
from bench.patching import LayerUnits, unit_values

REFERENCES = ("patch", "mean", "zero")  # what r(x) can be, in either stage


@dataclass(frozen=True)
class Protocol:
    name: str
    attribution: str  # the reference attribution scores against: patch | mean | zero
    ablation: str  # the reference the sweep sets nodes outside the circuit to
    description: str

    @property
    def matched(self) -> bool:
        return self.attribution == self.ablation

    def describe(self, error_mode: str | None) -> dict[str, Any]:
        """What a SweepResult records: both references, the error mode, matched or not."""
        out = {
            **asdict(self),
            "attribution_reference": self.attribution,
            "ablation_reference": self.ablation,
            "matched": self.matched,
            "error_mode": error_mode,
        }
        del out["attribution"], out["ablation"]
        if error_mode is not None:
            out["error_mode_description"] = ERROR_MODES[error_mode]
        return out


PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(name: str, attribution: str, ablation: str, description: str) -> Protocol:
    if attribution not in REFERENCES or ablation not in REFERENCES:
        raise ValueError(f"protocol {name!r}: references must be among {', '.join(REFERENCES)}")
    PROTOCOLS[name] = Protocol(name, attribution, ablation, description)
    return PROTOCOLS[name]


register_protocol("patch", "patch", "patch", "r(x) = a(x′), the pair's own counterfactual (MIB)")
register_protocol(
    "mean", "mean", "mean",
    "r = per-position mean over counterfactual prompts (train split for attribution, "
    "test split for the sweep)",
)  # fmt: skip
register_protocol("zero", "zero", "zero", "r = 0 in both stages")
register_protocol(
    "marks", "patch", "mean",
    "UNMATCHED: counterfactual attribution, mean ablation (Marks et al. 2024 and Arora et al. "
    "2026's code); only for reproducing their SVA numbers",
)  # fmt: skip

DEFAULT_PROTOCOL = "patch"

ERROR_MODES = {
    "ablate": "error nodes ranked, counted and ablated like any latent",
    "keep": "error nodes never ablated and not counted: an upper bound for dictionaries",
}
DEFAULT_ERROR_MODE = "ablate"


def get_protocol(name: str) -> Protocol:
    """The registered protocol ``name``; unknown names raise naming the close matches."""
    if name in PROTOCOLS:
        return PROTOCOLS[name]
    close = difflib.get_close_matches(str(name), list(PROTOCOLS), n=2)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(f"unknown ablation {name!r}{hint}; valid: {', '.join(PROTOCOLS)}")


def check_error_mode(error_mode: str) -> None:
    if error_mode not in ERROR_MODES:
        raise ValueError(f"unknown error mode {error_mode!r}; valid: {', '.join(ERROR_MODES)}")


def mean_units(
    handle: ModelHandle, basis: Basis, ids: torch.Tensor, batch_size: int = 32
) -> list[LayerUnits]:
    """Step 2: per layer, each unit's (and error node's) mean over the prompts ``ids``, per
    position: units [pos, n], error [pos, width]. Accumulated in float64, batch by batch, so a
    node with the same value on every prompt has exactly that value as its mean."""
    sums: list[LayerUnits] = []
    for start in range(0, ids.shape[0], batch_size):
        with torch.no_grad(), unit_values(handle, basis) as vals:
            handle.model(input_ids=ids[start : start + batch_size], logits_to_keep=1)
        for layer in range(handle.sites.n_layers):
            u = vals[layer].units.double().sum(0)  # [pos, n]
            e = vals[layer].error.double().sum(0) if vals[layer].error is not None else None
            if len(sums) <= layer:
                sums.append(LayerUnits(u, e))
            else:
                sums[layer].units += u
                if e is not None:
                    sums[layer].error += e
    n = ids.shape[0]
    dtype = handle.dtype
    return [
        LayerUnits(
            s.units.div(n).to(dtype), s.error.div(n).to(dtype) if s.error is not None else None
        )
        for s in sums
    ]


def batch_reference(
    handle: ModelHandle,
    basis: Basis,
    batch: dict[str, torch.Tensor],
    kind: str,
    clean: dict[int, LayerUnits],
    means: list[LayerUnits] | None = None,
) -> dict[int, LayerUnits]:
    """Step 3: r(x) of every unit and error node for ``batch``, shaped like ``clean``."""
    if kind == "patch":
        with torch.no_grad(), unit_values(handle, basis) as vals:
            handle.model(input_ids=batch["cf_ids"], logits_to_keep=1)
        return dict(vals)
    out = {}
    for layer, lu in clean.items():
        if kind == "mean":
            assert means is not None, "the mean reference needs mean_units of the split"
            m = means[layer]
            err = m.error.expand_as(lu.error) if lu.error is not None else None
            out[layer] = LayerUnits(m.units.expand_as(lu.units), err)
        elif kind == "zero":
            err = torch.zeros_like(lu.error) if lu.error is not None else None
            out[layer] = LayerUnits(torch.zeros_like(lu.units), err)
        else:
            raise ValueError(f"unknown reference {kind!r}; valid: {', '.join(REFERENCES)}")
    return out
