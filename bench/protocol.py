"""The protocol: one reference value r(x) per node, shared by attribution and ablation.

Attribution predicts what happens when a node is set to its reference; the sweep then sets
every node outside the circuit to a reference. They must be the *same* reference, or a node
scored 0 can still carry the task: in a causal LM every node before the first token where x
and x′ differ has a(x) = a(x′), so it scores 0 against x′, yet mean-ablating it destroys what
that position holds (a name in IOI, the century in greater-than). docs/METHOD.md, "Attribution
baseline and ablation: one reference, both stages"; MIB (Mueller et al. 2025) uses ``patch``.

Names only (no torch): a *protocol* (the ``ablation`` argument of ``run_sweep``, the CLI and
the suite) names a pair of *references*, the one attribution scores against and the one the
sweep ablates to; :func:`get_protocol` resolves it. What each reference computes is
:mod:`bench.sweep.references`. SAE error modes (docs/METHOD.md, "SAE error nodes") are
registered here too: ``ablate`` (default) ranks, counts and ablates one error node per
(layer, position) like any latent; ``keep`` never ablates it and does not count it, an upper
bound for dictionaries.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from typing import Any

REFERENCES = ("patch", "mean", "zero")  # what r(x) can be, in either stage


@dataclass(frozen=True)
class Protocol:
    name: str
    attribution_reference: str  # what attribution scores against: patch | mean | zero
    ablation_reference: str  # what the sweep sets nodes outside the circuit to
    description: str

    @property
    def matched(self) -> bool:
        return self.attribution_reference == self.ablation_reference

    def describe(self, error_mode: str | None) -> dict[str, Any]:
        """What a SweepResult records: both references, the error mode, matched or not."""
        out = {**asdict(self), "matched": self.matched, "error_mode": error_mode}
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
