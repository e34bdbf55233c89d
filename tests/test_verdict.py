"""The verdict's second axis (steering), error-node shares and its refusals, on saved results."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from bench.results.result import SweepResult
from bench.results.verdict import task_notes, verdict_frame, verdict_text

INPUTS = Path(__file__).parent / "fixtures" / "reports" / "inputs"


def _pair():
    """A neurons@mlp_acts and an SAE cell of one group (fixture results), with schema 3 keys."""
    results = [SweepResult.from_json(p) for p in sorted(INPUTS.glob("*/*.json"))]
    group = [r for r in results if r.method == "relp" and r.task == "sva_simple"]
    neurons = next(r for r in group if (r.basis, r.site) == ("neurons", "mlp_acts"))
    sae = next(r for r in group if r.basis == "sae")
    flips = [min(1.0, i / 5) for i in range(len(neurons.sizes))]
    neurons = dataclasses.replace(
        neurons, flip_rate=flips, k_at_flip_0_8=10.0, k_at_flip_0_8_ci=[6.0, 18.0],
        extra={**neurons.extra, "test_accuracy": 0.95},
    )  # fmt: skip
    sae = dataclasses.replace(
        sae, flip_rate=flips, k_at_flip_0_8=40.0, k_at_flip_0_8_ci=[20.0, 90.0],
        composition={"k_at_0_8": {"k": 20, "error_nodes": 3, "error_share": 0.15,
                                  "by_layer": [], "by_position": []}},
        extra={**sae.extra, "test_accuracy": 0.95,
               "k_flip_ratio_vs_neurons": {"ratio": 4.0, "ci": [1.5, 9.0], "paired": True}},
    )  # fmt: skip
    return neurons, sae


def test_the_verdict_shows_steering_beside_sparsity_and_error_node_shares():
    neurons, sae = _pair()
    row = verdict_frame([neurons, sae]).iloc[0]
    label = "sae@mlp_out:" + sae.dictionary
    assert row[f"{label} steer / neurons@mlp_acts"] == "4 [1.5, 9]"
    assert row["steering verdict"] == "neurons sparser"
    assert row[f"{label} error nodes"] == "3/20 (15%)"
    assert "k@flip0.8(dictionary)" in verdict_text([neurons, sae])


def test_no_verdict_on_a_task_the_model_cannot_do():
    neurons, sae = _pair()
    low = [dataclasses.replace(r, extra={**r.extra, "test_accuracy": 0.55}) for r in (neurons, sae)]
    row = verdict_frame(low).iloc[0]
    assert row["verdict"].startswith("none: the model gets 55% of test pairs right (< 70%)")
    assert row["steering verdict"] == "none (accuracy)"
    assert any("55% of the test pairs right" in line for line in task_notes(low))


def test_pairs_a_task_lost_are_reported_with_counts():
    neurons, _ = _pair()
    r = dataclasses.replace(neurons, extra={**neurons.extra, "dataset_dropped": {
        "multi_token_answer": 7, "length_mismatch": 0}})  # fmt: skip
    (line,) = task_notes([r])
    assert "multi_token_answer 7" in line and "length_mismatch" not in line


def test_results_before_schema_3_still_give_a_verdict():
    results = [SweepResult.from_json(p) for p in sorted(INPUTS.glob("*/*.json"))]
    assert all(r.flip_rate is None for r in results)
    frame = verdict_frame(results)
    assert "steering verdict" not in frame.columns and len(frame)
    json.dumps(frame.to_dict())  # plain data


def test_a_steering_verdict_where_no_circuit_flips_80_percent_says_so():
    neurons, sae = _pair()
    never = [dataclasses.replace(r, k_at_flip_0_8=None, k_at_flip_0_8_ci=[None, None])
             for r in (neurons, sae)]  # fmt: skip
    row = verdict_frame(never).iloc[0]
    assert row["steering verdict"] == "neither flips 80% of pairs"
    assert row["verdict"] != row["steering verdict"]  # the sparsity verdict is unaffected
