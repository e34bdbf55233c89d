"""Bootstrap CIs (bench.sweep.scores) when some resamples have F undefined: m(M) − m(∅) = 0.

Small bfloat16 runs meet it: a resample drawing only pairs whose clean and ablated metrics
round to the same value has no normalising difference. Such resamples are left out and
counted; with none, the CI is scipy's own, bit for bit."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

from bench import load_model, run_sweep
from bench.sweep.scores import bootstrap, curve, paired_k_ratio
from tasks import get_task

SIZES = np.array([1, 2, 4])


def _cell(rng, n, degenerate=0, noise=0.1):
    m_full = rng.normal(2.0, 1.0, n)
    m_empty = rng.normal(0.0, 1.0, n)
    m_empty[:degenerate] = m_full[:degenerate]  # pairs whose m(M) − m(∅) is exactly 0
    frac = np.array([0.2, 0.6, 1.0])[:, None]
    m_faith = m_empty + frac * (m_full - m_empty) + rng.normal(0, noise, (3, n))
    return m_faith, m_full, m_empty


def test_without_undefined_resamples_the_ci_is_scipys_bit_for_bit():
    m_faith, m_full, m_empty = _cell(np.random.default_rng(0), 12)
    out = bootstrap(SIZES, m_faith, m_faith, m_full, m_empty, 4, n_resamples=200, seed=3)
    assert out["undefined_resamples"] == 0

    def faith(idx, axis=-1):
        return np.moveaxis(curve(m_faith[:, idx], m_full[idx], m_empty[idx]), 0, -1).T

    want = stats.bootstrap((np.arange(12),), faith, vectorized=True, n_resamples=200,
                           method="percentile", random_state=np.random.default_rng(3))  # fmt: skip
    assert np.array_equal(out["faithfulness"][:, 0], want.confidence_interval.low)
    assert np.array_equal(out["faithfulness"][:, 1], want.confidence_interval.high)


def test_undefined_resamples_are_left_out_and_counted():
    # 4 pairs, 3 of them with m(M) = m(∅): a resample of only those has F undefined
    m_faith, m_full, m_empty = _cell(np.random.default_rng(1), 4, degenerate=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning escapes either
        out = bootstrap(SIZES, m_faith, m_faith, m_full, m_empty, 4, n_resamples=500, seed=0)
    assert 0 < out["undefined_resamples"] < 500
    for key in ("faithfulness", "completeness", "auc", "cpr", "cmd"):
        assert np.isfinite(out[key]).all(), key
    # the bounds are percentiles of the defined resamples only
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 4, (500, 4))  # scipy's resampling, one batch
    d = m_full[idx].mean(-1) - m_empty[idx].mean(-1)
    assert out["undefined_resamples"] == int((d == 0).sum())
    # without noise F = (0.2, 0.6, 1) on every defined resample: a ratio of 1 against itself
    exact = _cell(np.random.default_rng(1), 4, degenerate=3, noise=0.0)
    cell = (SIZES, exact[0], exact[1], exact[2])
    ratio = paired_k_ratio(cell, cell, n_resamples=500)
    assert ratio["ratio"] == 1.0 and ratio["ci"] == [1.0, 1.0]
    assert ratio["undefined_resamples"] == out["undefined_resamples"]


def test_a_small_bfloat16_run_keeps_its_result(tmp_path):
    """Issue: tiny-llama, sva_simple, neurons@mlp_acts, relp, 12/8 pairs in bfloat16 computed
    every cell, then refused to write it (faithfulness_ci[9][0] = nan)."""
    h = load_model("tiny-llama", dtype="bfloat16")
    ds = get_task("sva_simple").build(h.tokenizer, n_train=12, n_test=8, seed=0)
    res = run_sweep(h, ds, basis="neurons", site="mlp_acts", method="relp")
    assert res.extra["bootstrap_undefined_resamples"] > 0  # the case the issue met
    res.to_json(tmp_path / "r.json")  # refused before: NaN in the CIs
    for lo, hi in res.faithfulness_ci:
        assert np.isfinite(lo) and np.isfinite(hi)
