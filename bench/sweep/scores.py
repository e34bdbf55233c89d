"""Scores: pure functions over per-pair metric values (numpy in, numbers out).

- faithfulness F(k) = (m(C_k) − m(∅)) / (m(M) − m(∅)) on means over test pairs; completeness
  uses m(M∖C_k) in place of m(C_k);
- ``k_at``: the smallest k with F ≥ 0.8, interpolated linearly in log10 k between grid points;
- ``auc_log``: area under F over log10 k, normalised by the span of log10 k (1 .. all nodes);
- ``cpr`` / ``cmd`` (MIB; Mueller et al. 2025): area under F, and under |1 − F|, over the
  fraction of nodes in the circuit (grid extended with k = 0, F = 0);
- ``bootstrap``: percentile 95% CIs of every curve point and scalar, resampling test pairs
  (scipy.stats.bootstrap, paired, one seeded generator);
- ``paired_k_ratio``: k@0.8(a) / k@0.8(b) for two cells swept on the same test pairs, with a
  paired bootstrap CI: each resample draws one set of pairs and scores both cells on it;
- ``flip_curve``: the flip rate per size — the fraction of test pairs the model gets right
  (m(M) > 0) whose prediction flips to the counterfactual answer (m(M∖C_k) < 0) when only C_k
  is set to its reference (under ``patch``, an interchange intervention from x′); its
  ``k@flip0.8`` (log-interpolated like k@0.8) and ``paired_flip_ratio``, as for k@0.8;
- ``bootstrap_metrics`` / ``paired_k_ratio_metrics``: the same, taking a sweep's
  ``bench.sweep.sweep.SweepMetrics`` (what ``bench.pipeline.finish`` calls).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import stats

from bench.cell import RUN


def curve(m_k: np.ndarray, m_full: np.ndarray, m_empty: np.ndarray) -> np.ndarray:
    """F per size from per-pair metrics. m_k: [sizes, pairs]; m_full, m_empty: [pairs]."""
    denom = m_full.mean(-1) - m_empty.mean(-1)
    return (m_k.mean(-1) - m_empty.mean(-1)) / denom


def flip_curve(m_comp: np.ndarray, m_full: np.ndarray) -> np.ndarray:
    """Flip rate per size: the fraction of pairs the model gets right (m(M) > 0) whose
    prediction flips to the counterfactual answer (m(M∖C_k) < 0) when only C_k is set to its
    reference. m_comp: [sizes, pairs]; m_full: [pairs]. 0 at k = 0 by construction."""
    return ((m_full > 0) & (m_comp < 0)).mean(-1)


def k_at(sizes: np.ndarray, f: np.ndarray, threshold: float = 0.8) -> float:
    """Smallest k with F ≥ threshold, log-interpolated; nan if never reached."""
    above = np.nonzero(f >= threshold)[0]
    if len(above) == 0:
        return float("nan")
    i = int(above[0])
    if i == 0:
        return float(sizes[0])
    lo, hi = np.log10(sizes[i - 1]), np.log10(sizes[i])
    t = (threshold - f[i - 1]) / (f[i] - f[i - 1])
    return float(10 ** (lo + t * (hi - lo)))


def auc_log(sizes: np.ndarray, f: np.ndarray) -> float:
    x = np.log10(np.asarray(sizes, dtype=float))
    span = x[-1] - x[0]
    return float(np.trapezoid(f, x) / span) if span > 0 else float(f[-1])


def _with_zero(sizes, f, n_nodes):
    x = np.concatenate([[0.0], np.asarray(sizes, dtype=float) / n_nodes])
    return x, np.concatenate([[0.0], f])


def cpr(sizes: np.ndarray, f: np.ndarray, n_nodes: int) -> float:
    x, y = _with_zero(sizes, f, n_nodes)
    return float(np.trapezoid(y, x))


def cmd(sizes: np.ndarray, f: np.ndarray, n_nodes: int) -> float:
    x, y = _with_zero(sizes, f, n_nodes)
    return float(np.trapezoid(np.abs(1 - y), x))


def scalars(sizes, f, n_nodes) -> dict[str, float]:
    return {
        "k_at_0_8": k_at(sizes, f),
        "auc": auc_log(sizes, f),
        "cpr": cpr(sizes, f, n_nodes),
        "cmd": cmd(sizes, f, n_nodes),
    }


def _over_pairs(
    statistic, n: int, n_resamples: int, seed: int, defined=None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Percentile 95% CI of ``statistic`` (vectorized over resampled pair indices [..., n]).

    ``defined(idx) -> bool [...]``: whether a resample's statistic is defined at all (F is not
    where its normalising difference m(M) − m(∅) is exactly 0, as small bfloat16 runs meet).
    Undefined resamples are left out of the percentiles and counted (the third value); with
    none, the CI is scipy's own, unchanged. A statistic that is NaN on a defined resample
    (a k never reached) keeps its NaN, as before."""

    def with_flag(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):  # undefined resamples: flagged
            values = np.atleast_1d(statistic(idx, axis))  # [rows, ...] (or [...] for a scalar)
        values = values if values.ndim == np.asarray(idx).ndim else values[None]
        ok = np.ones(np.asarray(idx).shape[:-1]) if defined is None else defined(idx)
        return np.concatenate([values, np.asarray(ok, dtype=float)[None]], 0)

    with warnings.catch_warnings():  # NaN rows (k never reached, undefined F): handled here
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.bootstrap(
            (np.arange(n),),
            with_flag,
            vectorized=True,
            n_resamples=n_resamples,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
    ok = res.bootstrap_distribution[-1] > 0  # [n_resamples]
    n_undefined = int((~ok).sum())
    if n_undefined == 0:
        return res.confidence_interval.low[:-1], res.confidence_interval.high[:-1], 0
    dist = res.bootstrap_distribution[:-1, ok]  # [rows, defined resamples]
    if dist.shape[-1] == 0:
        nan = np.full(dist.shape[0], np.nan)
        return nan, nan, n_undefined
    ci = stats.quantile(dist, np.array([0.025, 0.975]), axis=-1)  # [rows, 2]
    return ci[..., 0], ci[..., 1], n_undefined


def _normaliser_defined(m_full: np.ndarray, m_empty: np.ndarray):
    """``defined`` for :func:`_over_pairs`: m(M) − m(∅) of the resample is finite and non-zero."""

    def defined(idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=int)
        d = m_full[idx].mean(-1) - m_empty[idx].mean(-1)  # [...]
        return np.isfinite(d) & (d != 0)

    return defined


def bootstrap(
    sizes: np.ndarray,
    m_faith: np.ndarray,  # [sizes, pairs]
    m_comp: np.ndarray,  # [sizes, pairs]
    m_full: np.ndarray,  # [pairs]
    m_empty: np.ndarray,  # [pairs]
    n_nodes: int,
    n_resamples: int = RUN.n_bootstrap,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """95% percentile CIs: keys faithfulness, completeness, flip_rate ([sizes, 2]) and the
    scalars k_at_0_8, auc, cpr, cmd, k_at_flip_0_8 ([2]), and ``undefined_resamples``:
    resamples left out because their m(M) − m(∅) is 0."""
    n_sizes, n = m_faith.shape
    names = ("k_at_0_8", "auc", "cpr", "cmd")

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.asarray(idx, dtype=int)  # [..., n]
        lead = idx.shape[:-1]
        fa = curve(m_faith[:, idx], m_full[idx], m_empty[idx])  # [sizes, ...] -> moveaxis
        co = curve(m_comp[:, idx], m_full[idx], m_empty[idx])
        fa = np.moveaxis(fa, 0, -1)  # [..., sizes]
        co = np.moveaxis(co, 0, -1)
        sc = np.empty((*lead, len(names)))
        for pos in np.ndindex(*lead):
            s = scalars(sizes, fa[pos], n_nodes)
            sc[pos] = [s[k] for k in names]
        # appended after the F rows, so those rows' CIs are what they were without them
        fl = np.moveaxis(flip_curve(m_comp[:, idx], m_full[idx]), 0, -1)  # [..., sizes]
        kf = np.empty((*lead, 1))
        for pos in np.ndindex(*lead):
            kf[pos] = k_at(sizes, fl[pos])
        return np.moveaxis(np.concatenate([fa, co, sc, fl, kf], -1), -1, 0)  # [3*sizes+5, ...]

    if n < 2:
        raise ValueError("bootstrap needs at least 2 test pairs")
    lo, hi, n_undefined = _over_pairs(
        statistic, n, n_resamples, seed, _normaliser_defined(m_full, m_empty)
    )
    band = np.stack([lo, hi], -1)  # [3*sizes+5, 2]
    out: dict[str, Any] = {
        "faithfulness": band[:n_sizes],
        "completeness": band[n_sizes : 2 * n_sizes],
        "undefined_resamples": n_undefined,
    }
    for i, name in enumerate(names):
        out[name] = band[2 * n_sizes + i]
    start = 2 * n_sizes + len(names)
    out["flip_rate"] = band[start : start + n_sizes]
    out["k_at_flip_0_8"] = band[start + n_sizes]
    return out


def _paired_ratio(k_a, k_b, n: int, n_resamples: int, seed: int, defined=None) -> dict[str, Any]:
    """k(a) / k(b) over paired resamples of the n test pairs; ``k_a(idx)``/``k_b(idx)`` give a
    cell's k on the pairs ``idx`` (np.inf where its curve never reaches the threshold)."""

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.asarray(idx, dtype=int)
        out = np.empty(idx.shape[:-1])
        for pos in np.ndindex(*idx.shape[:-1]):
            ka, kb = k_a(idx[pos]), k_b(idx[pos])
            out[pos] = ka / kb if np.isfinite(kb) or np.isfinite(ka) else np.nan
        return out

    point = float(statistic(np.arange(n)))
    if not np.isfinite(point):
        return {"ratio": None, "ci": [None, None], "n_resamples": n_resamples}
    lo, hi, n_undefined = _over_pairs(statistic, n, n_resamples, seed, defined)
    out: dict[str, Any] = {
        "ratio": point,
        "ci": [float(v[0]) if np.isfinite(v[0]) else None for v in (lo, hi)],
        "n_resamples": n_resamples,
    }
    if n_undefined:
        out["undefined_resamples"] = n_undefined
    return out


def _same_pairs(a_metrics: np.ndarray, b_metrics: np.ndarray, a_full, b_full) -> int:
    n = a_metrics.shape[1]
    if b_metrics.shape[1] != n or a_full.shape != b_full.shape:
        raise ValueError(
            f"paired ratio needs the same test pairs: {n} against {b_metrics.shape[1]} pairs"
        )
    if n < 2:
        raise ValueError("a paired bootstrap needs at least 2 test pairs")
    return n


def _inf_if_nan(k: float) -> float:
    return np.inf if np.isnan(k) else k


def paired_k_ratio(
    a: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],  # sizes, m_faith, m_full, m_empty
    b: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    n_resamples: int = RUN.n_bootstrap,
    seed: int = 0,
) -> dict[str, Any]:
    """k@0.8(a) / k@0.8(b) and its paired percentile 95% CI over test pairs.

    ``a`` and ``b`` hold per-pair metrics ([sizes, pairs] and [pairs]) of two cells evaluated
    on the same test pairs in the same order. A resample whose curve never reaches 0.8 counts
    as an infinite k (ratio inf or 0), so the CI stays honest about it."""
    n = _same_pairs(a[1], b[1], a[2], b[2])

    def k_of(cell):
        sizes, m_faith, m_full, m_empty = cell
        return lambda idx: _inf_if_nan(
            k_at(sizes, curve(m_faith[:, idx], m_full[idx], m_empty[idx]))
        )

    defined_a = _normaliser_defined(a[2], a[3])
    defined_b = _normaliser_defined(b[2], b[3])
    return _paired_ratio(k_of(a), k_of(b), n, n_resamples, seed,
                         lambda idx: defined_a(idx) & defined_b(idx))  # fmt: skip


def paired_flip_ratio(
    a: tuple[np.ndarray, np.ndarray, np.ndarray],  # sizes, m_comp [sizes, pairs], m_full [pairs]
    b: tuple[np.ndarray, np.ndarray, np.ndarray],
    n_resamples: int = RUN.n_bootstrap,
    seed: int = 0,
) -> dict[str, Any]:
    """k@flip0.8(a) / k@flip0.8(b), the circuit sizes that flip 80% of the test pairs, with a
    paired percentile 95% CI (as :func:`paired_k_ratio`; every resample is defined)."""
    n = _same_pairs(a[1], b[1], a[2], b[2])

    def k_of(cell):
        sizes, m_comp, m_full = cell
        return lambda idx: _inf_if_nan(k_at(sizes, flip_curve(m_comp[:, idx], m_full[idx])))

    return _paired_ratio(k_of(a), k_of(b), n, n_resamples, seed)


PER_DECADE = 4  # the shared grid: round(10 ** (i / 4)), i = 0, 1, 2, ...


def size_grid(n_nodes: int, per_decade: int = PER_DECADE) -> list[int]:
    """The shared circuit-size grid: fixed log-spaced points below ``n_nodes``, then ``n_nodes``.

    Every basis and method uses the same points (1, 2, 3, 6, 10, 18, 32, 56, 100, ...), so
    curves of bases with different node counts share their x values; each grid ends at its
    own "all nodes" (about 20 sizes for 10^5 nodes).
    """
    if n_nodes < 1:
        raise ValueError("a basis needs at least one node")
    grid, i = [], 0
    while (k := round(10 ** (i / per_decade))) < n_nodes:
        if not grid or k > grid[-1]:
            grid.append(int(k))
        i += 1
    return [*grid, int(n_nodes)]


# -- on a sweep's metrics (bench.sweep.sweep.SweepMetrics: m_faith, m_comp [sizes, pairs]; m_full,
#    m_empty [pairs]) ------------------------------------------------------------------------


def bootstrap_metrics(
    sizes: np.ndarray, sm: Any, n_nodes: int, n_resamples: int = RUN.n_bootstrap, seed: int = 0
) -> dict[str, Any]:
    """:func:`bootstrap` of a sweep's :class:`~bench.sweep.sweep.SweepMetrics`."""
    return bootstrap(
        sizes, sm.m_faith, sm.m_comp, sm.m_full, sm.m_empty, n_nodes, n_resamples, seed
    )


def paired_k_ratio_metrics(
    sizes: np.ndarray,
    sm: Any,
    sizes_denominator: np.ndarray,
    sm_denominator: Any,
    n_resamples: int = RUN.n_bootstrap,
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`paired_k_ratio` of two sweeps' SweepMetrics on the same test pairs: this cell
    over the baseline (denominator) cell."""
    mine = (sizes, sm.m_faith, sm.m_full, sm.m_empty)
    theirs = (sizes_denominator, sm_denominator.m_faith, sm_denominator.m_full,
              sm_denominator.m_empty)  # fmt: skip
    return paired_k_ratio(mine, theirs, n_resamples, seed)


def paired_flip_ratio_metrics(
    sizes: np.ndarray,
    sm: Any,
    sizes_denominator: np.ndarray,
    sm_denominator: Any,
    n_resamples: int = RUN.n_bootstrap,
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`paired_flip_ratio` of two sweeps' SweepMetrics on the same test pairs."""
    mine = (sizes, sm.m_comp, sm.m_full)
    theirs = (sizes_denominator, sm_denominator.m_comp, sm_denominator.m_full)
    return paired_flip_ratio(mine, theirs, n_resamples, seed)
