"""Reports: the composition / steering table from saved schema-3 results."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bench.results.result import SweepResult
from reports.build import build_report
from reports.composition import composition_display, composition_frame

INPUTS = Path(__file__).parent / "fixtures" / "reports" / "inputs"


def _results(tmp_path: Path) -> list[Path]:
    out = []
    for p in sorted(INPUTS.glob("sva_simple/*.json")):
        r = SweepResult.from_json(p)
        r = dataclasses.replace(
            r, flip_rate=[0.0] * (len(r.sizes) - 1) + [0.9], k_at_flip_0_8=12.0,
            flip_rate_ci=[[0.0, 0.1]] * len(r.sizes),
            k_at_flip_0_8_ci=[8.0, None],
            composition={"k_at_0_8": {"k": 7, "error_nodes": 2 if r.basis == "sae" else 0,
                                      "error_share": 2 / 7 if r.basis == "sae" else 0.0,
                                      "by_layer": [1, 5, 1], "by_position": [0, 3, 4]},
                         "error_nodes_per_size": []},
        )  # fmt: skip
        path = tmp_path / "in" / p.name
        path.parent.mkdir(exist_ok=True)
        r.to_json(path)
        out.append(path)
    return out


def test_the_composition_table_counts_error_nodes_and_steering(tmp_path):
    paths = _results(tmp_path)
    frame = composition_frame([SweepResult.from_json(p) for p in paths])
    display, n_text = composition_display(frame)
    assert n_text == 3 and "random" not in set(frame["method"])
    sae = display[display["cell"].str.startswith("sae@")].iloc[0]
    assert sae["error nodes"] == "2 (29%)" and sae["most nodes at layer"] == "1"
    assert sae["at last position"] == "4" and sae["k@flip0.8 [95% CI]"] == "12.0 [8.00, n/r]"
    index = build_report([tmp_path / "in"], tmp_path / "report")
    assert (tmp_path / "report" / "tables" / "composition.md").is_file()
    assert "how many nodes steer" in index.read_text()
