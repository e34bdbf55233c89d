"""Results as plain data: :class:`SweepResult` with a schema version and JSON round trip.

A SweepResult identifies its cell (model, task, basis, site, dictionary, method, ablation),
holds the curves on the shared size grid with bootstrap CI bands, the scalar scores with CIs,
and the provenance a reader needs (seed, split sizes, library versions, git commit, timings).
Reports read only these files.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.cache import write_json_atomic

SCHEMA_VERSION = 3  # 2: protocol and consistency; 3: flip rate and composition


class ResultSchemaError(ValueError):
    pass


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_shapes(data: dict[str, Any], origin: str) -> None:
    """Types and lengths a reader relies on: one curve value and one [lo, hi] per size."""

    def bad(field: str, what: str) -> ResultSchemaError:
        return ResultSchemaError(f"{origin}: field {field} {what}; the file is damaged or was "
                                 "not written by sparsebench (rerun the cell)")  # fmt: skip

    sizes = data["sizes"]
    if not isinstance(sizes, list) or not sizes or not all(isinstance(k, int) for k in sizes):
        raise bad("sizes", "must be a non-empty list of integers")
    for name in ("faithfulness", "completeness", "flip_rate"):
        curve = data.get(name)
        if curve is None and name == "flip_rate":
            continue
        if not isinstance(curve, list) or not all(_number(v) for v in curve):
            raise bad(name, "must be a list of numbers")
        if len(curve) != len(sizes):
            raise bad(name, f"has {len(curve)} values for {len(sizes)} sizes")
        band = data.get(f"{name}_ci")
        if not isinstance(band, list) or len(band) != len(sizes):
            raise bad(f"{name}_ci", f"must hold one [lo, hi] per size ({len(sizes)})")
        if not all(isinstance(b, list) and len(b) == 2 for b in band):
            raise bad(f"{name}_ci", "must hold [lo, hi] pairs")
    for name in ("auc", "cpr", "cmd", "m_full", "m_empty", "n_nodes"):
        if not _number(data[name]):
            raise bad(name, f"must be a number, not {data[name]!r}")
    if data["k_at_0_8"] is not None and not _number(data["k_at_0_8"]):
        raise bad("k_at_0_8", f"must be a number or null, not {data['k_at_0_8']!r}")


@dataclass
class SweepResult:
    # -- the cell
    model: str
    task: str
    task_version: str
    basis: str  # neurons | sae | transcoder
    site: str
    method: str  # atp | ig | relp | exact | random
    ablation: str  # the protocol: patch | mean | zero | marks (unmatched)
    dictionary: str | None  # sae/transcoder source ("local", "release:...", "path:..."), else None
    error_mode: str | None  # sae error nodes: keep | ablate; None for neurons
    # -- the curves on the shared grid (index i is circuit size sizes[i])
    n_nodes: int
    sizes: list[int]
    faithfulness: list[float]
    faithfulness_ci: list[list[float]]  # [[lo, hi], ...] bootstrap 95% per size
    completeness: list[float]
    completeness_ci: list[list[float]]
    # -- scalars, each with a bootstrap 95% CI [lo, hi]
    k_at_0_8: float | None  # None when F never reaches 0.8
    k_at_0_8_ci: list[float | None]
    auc: float
    auc_ci: list[float]
    cpr: float
    cpr_ci: list[float]
    cmd: float
    cmd_ci: list[float]
    m_full: float  # mean metric of the unablated model on the test split
    m_empty: float  # mean metric with every ablatable node ablated
    # -- provenance
    seed: int
    n_train: int
    n_test: int
    seq_len: int
    # -- the protocol (bench.protocol: references of both stages, error mode, matched) and the
    # consistency check (zero_score_fraction, n_nonzero, f_nonzero: F of the circuit of every
    # node with a non-zero score, ≈ 1 under a matched protocol)
    protocol: dict[str, Any] = field(default_factory=dict)
    consistency: dict[str, Any] = field(default_factory=dict)
    dictionary_quality: dict[str, Any] | None = None
    # -- steering by interchange (schema 3; None in older results): per size, the fraction of
    # test pairs whose prediction flips to the counterfactual answer when only C_k is set to
    # its reference; the smallest k flipping 80% (log-interpolated), each with a CI
    flip_rate: list[float] | None = None
    flip_rate_ci: list[list[float | None]] | None = None
    k_at_flip_0_8: float | None = None
    k_at_flip_0_8_ci: list[float | None] | None = None
    # -- what the k@0.8 circuit is made of (bench.sweep.composition; schema 3)
    composition: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, path: str | Path | None = None) -> str:
        """The JSON text; with ``path``, also written atomically there."""
        data = self.to_dict()
        if path is not None:
            write_json_atomic(path, data)  # as given: a trailing '/' is refused
        return json.dumps(data, indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "<dict>") -> SweepResult:
        version = data.get("schema_version")
        if not isinstance(version, int):
            raise ResultSchemaError(f"{origin}: no integer schema_version; not a SweepResult?")
        if version > SCHEMA_VERSION:
            raise ResultSchemaError(
                f"{origin}: schema_version {version} is newer than this sparsebench reads "
                f"({SCHEMA_VERSION}); upgrade sparsebench"
            )
        fields = {f.name: f for f in dataclasses.fields(cls)}
        required = [
            n
            for n, f in fields.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if version == 1 and "protocol" not in data:  # v1 always attributed against x′
            ablation = data.get("ablation")
            data = {**data, "protocol": {
                "name": ablation, "attribution_reference": "patch", "ablation_reference": ablation,
                "matched": ablation == "patch", "error_mode": data.get("error_mode"),
            }}  # fmt: skip
        missing = [n for n in required if n not in data]
        if missing:
            raise ResultSchemaError(f"{origin}: missing field(s) {', '.join(missing)}")
        _check_shapes(data, origin)
        return cls(**{k: v for k, v in data.items() if k in fields})

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> SweepResult:
        """Parse JSON text, or read a file when given a path."""
        origin = "<text>"
        text = str(text_or_path)
        if isinstance(text_or_path, Path) or not text.lstrip().startswith("{"):
            origin = str(text_or_path)
            text = Path(text_or_path).read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ResultSchemaError(f"{origin}: not valid JSON ({err})") from err
        return cls.from_dict(data, origin)
