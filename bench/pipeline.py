"""``run_sweep``: one cell of the benchmark, task pairs in, :class:`SweepResult` out.

Steps (docs/METHOD.md, "The pipeline"), in three stages so a benchmark can time the middle one:

- :func:`prepare`: (1) validate the cell (basis, site, method, protocol, error mode) and the
  dataset; (2) encode the dataset's splits to token ids on the model's device;
- :func:`measure`: (3) attribute on the train split against the protocol's attribution
  reference (:mod:`bench.attribution`, :mod:`bench.protocol`) through the attribution stage
  (:mod:`bench.attribution.joint`: one joint pass per group, cached on disk when asked, keyed
  by everything
  that changes the scores, the reference included); (4) rank nodes and evaluate
  the shared size grid on the test split, ablating to the protocol's ablation reference, plus
  the consistency circuit of every non-zero-score node (:mod:`bench.sweep`); both timed;
- :func:`finish` only assembles: (5) curves, scalars and bootstrap CIs (:mod:`bench.sweep.scores`,
  from the SweepMetrics): faithfulness, completeness and the flip rate (the completeness
  pass's pairs whose prediction flips to the counterfactual answer), and what the k@0.8
  circuit is made of (:mod:`bench.sweep.composition`); (6) bare-torch timings
  (:mod:`bench.results.provenance`) from the same run — one plain forward of the test batch,
  one lean forward + forward + backward of a train batch — giving ``attribution_ratio`` and
  ``sweep_ratio``;
  (7) a SweepResult with the protocol, the consistency check, seeds, versions
  (:mod:`bench.results.provenance`) and timings.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from bench.attribution.joint import JointAttribution
from bench.attribution.registry import check_method, get_method
from bench.bases import Basis, make_basis
from bench.cell import CELL, RUN, Cell, RunSettings
from bench.core.checks import check_cell, check_sizes
from bench.core.finite import check_finite_curves, check_finite_metrics
from bench.model.handle import ModelHandle
from bench.protocol import (
    check_error_mode,
    get_protocol,
)
from bench.results.provenance import library_versions, measure_bare_torch
from bench.results.result import SweepResult
from bench.stages import Measured, Prepared
from bench.sweep import scores
from bench.sweep.composition import composition
from bench.sweep.inputs import SweepInputs
from bench.sweep.references import get_reference
from bench.sweep.sweep import SweepMetrics, evaluate, node_ranks
from bench.training import local as _local_source  # noqa: F401 (registers dictionary="local")
from tasks.validate import encode

log = logging.getLogger(__name__)


def prepare(
    handle: ModelHandle,
    ds,
    cell: Cell,
    basis: Basis | None = None,
    settings: RunSettings | None = None,
) -> Prepared:
    """Steps 1-2: validate the cell and the dataset, encode the splits.

    ``basis``: an already built basis for the cell's basis/site/dictionary (a suite builds each
    once); by default it is made here (a local SAE trains on first use). ``settings``: batch
    size, bootstrap resamples, masks per forward (default :class:`RunSettings`)."""
    settings = settings or RunSettings()
    cell = cell.measured()  # what is measured; model/task/split sizes come with handle and ds
    check_cell(cell, settings)  # numbers in range, before a basis is built or anything is cached
    check_method(cell.method)
    get_protocol(cell.ablation)  # raises naming the valid protocols
    check_error_mode(cell.error_mode)
    if basis is None:
        basis = make_basis(handle, cell.basis, cell.site, cell.dictionary)
    if len(ds.train) == 0 or len(ds.test) == 0:
        raise ValueError(
            f"dataset {ds.task!r} has {len(ds.train)} train and {len(ds.test)} test pairs; "
            "both splits must be non-empty"
        )
    if len(ds.test) < 2:
        raise ValueError("the test split needs at least 2 pairs for bootstrap CIs")
    enc = encode(ds, handle.tokenizer)
    train = {k: v.to(handle.device) for k, v in enc["train"].items()}
    test = {k: v.to(handle.device) for k, v in enc["test"].items()}
    n_layers, seq_len = handle.sites.n_layers, test["clean_ids"].shape[1]
    check_cell(cell, settings, basis, n_layers, seq_len)  # sizes
    return Prepared(handle, ds, cell, basis, train, test, settings)


def measure(
    prep: Prepared,
    progress: bool = False,
    cache: bool = False,
    joint: JointAttribution | None = None,
    inputs: SweepInputs | None = None,
) -> Measured:
    """Steps 3-4: attribution on the train split, the size sweep on the test split.

    ``joint``: the :class:`~bench.attribution.joint.JointAttribution` of ``prep``'s group (a
    suite builds one per group); ``atp``/``relp`` then attribute every basis of the group in
    the first member's pass and hold the others' scores in memory. Without it, ``prep`` alone.
    ``inputs``: the :class:`~bench.sweep.inputs.SweepInputs` of ``prep``'s test split (a suite
    keeps one per dataset); without it, made for this cell."""
    torch.manual_seed(prep.cell.seed)
    stage = joint if joint is not None else JointAttribution([prep])
    sc, t_attr, cached, joint_bases = stage.scores(prep, progress, cache)
    start = time.perf_counter()
    sm, grid, n_nodes = sweep(prep, sc, progress, inputs)
    t_sweep = time.perf_counter() - start
    extra = {"attribution_joint_bases": joint_bases} if len(joint_bases) > 1 else {}
    return Measured(sc, sm, grid, n_nodes, t_attr, t_sweep, cached, extra)


def sweep(
    prep: Prepared, sc, progress: bool = False, inputs: SweepInputs | None = None
) -> tuple[SweepMetrics, list[int], int]:
    """Step 4 alone: rank the nodes of the scores ``sc`` and evaluate the size grid on the test
    split (the shared prefix run once where the protocol's reference allows it and
    ``prep.settings.reuse_prefix`` asks for it; ``inputs``: what the split's cells share,
    :func:`measure`). (metrics, grid, number of nodes)."""
    c = prep.cell
    ablate_error = prep.basis.has_error and c.error_mode == "ablate"
    flat = sc.flat(include_error=ablate_error)
    n_nodes = len(flat)
    grid = sorted(set(c.sizes)) if c.sizes is not None else scores.size_grid(n_nodes)
    if grid[0] < 1 or grid[-1] > n_nodes:
        raise ValueError(f"sizes must lie in 1..{n_nodes} (the number of nodes), got {grid}")
    reference = get_reference(get_protocol(c.ablation).ablation_reference)
    inputs = inputs if inputs is not None else SweepInputs(prep.handle, prep.test)
    values = inputs.ablation(prep.basis, reference)
    reuse_prefix = prep.settings.reuse_prefix and reference.fixes_shared_prefix
    n_nonzero = int((flat != 0).sum())
    sm = evaluate(
        prep.handle, prep.basis, prep.test, node_ranks(flat), grid, values, ablate_error,
        prep.settings.masks_per_forward, progress, k_nonzero=n_nonzero,
        prefix=inputs.prefix if reuse_prefix else None,
    )  # fmt: skip
    check_finite_metrics(sm, f"on the test split of {prep.ds.task!r}")  # before any result
    return sm, grid, n_nodes


def consistency_check(sm: SweepMetrics, n_nodes: int) -> dict[str, Any]:
    """docs/METHOD.md: the fraction of nodes scored exactly 0, and F of the circuit that holds every
    node with a non-zero score (≈ 1 under a matched protocol)."""
    f_nz = scores.curve(sm.m_nonzero[None], sm.m_full, sm.m_empty)[0]
    return {
        "zero_score_fraction": 1 - sm.k_nonzero / n_nodes,
        "n_nonzero": sm.k_nonzero,
        "f_nonzero": float(f_nz),
    }


def _composition(prep: Prepared, ms: Measured, k08: float | None) -> dict[str, Any]:
    """What the k@0.8 circuit (and each grid size's) is made of (bench.sweep.composition)."""
    ablate_error = prep.basis.has_error and prep.cell.error_mode == "ablate"
    ranks = node_ranks(ms.scores.flat(include_error=ablate_error)).cpu().numpy()  # [n_nodes]
    n_layers, seq = prep.handle.sites.n_layers, int(prep.test["clean_ids"].shape[1])
    return composition(ranks, ms.sizes, k08, n_layers, seq, prep.basis.n_units())


def _bounds(band: np.ndarray) -> list[float | None]:
    """A CI [2] as JSON: an undefined bound (no resample reached 0.8, or none was defined) is
    None, never NaN."""
    return [float(v) if np.isfinite(v) else None for v in band]


def finish(
    prep: Prepared,
    ms: Measured,
    bare_torch_timings: bool = True,
    bare_torch: dict[str, float] | None = None,
    ratio_denominator: tuple[str, Measured] | None = None,
) -> SweepResult:
    """Steps 5-7: curves, scalars, CIs, bare-torch timings, the SweepResult.

    ``bare_torch``: bare-torch seconds already measured in this run on the same batches (a
    suite measures them once per dataset); by default they are measured here.
    ``ratio_denominator``: (label, Measured) of the baseline cell (neurons@mlp_acts) swept on
    the same test pairs, the denominator of the paired k ratio;
    the result then carries ``extra["k_ratio_vs_neurons"]``, k@0.8 of this cell over that
    one's with a paired bootstrap CI (docs/METHOD.md, "Sweep and scores")."""
    c, st, sm, ds = prep.cell, prep.settings, ms.metrics, prep.ds
    sz = np.asarray(ms.sizes)
    faith = scores.curve(sm.m_faith, sm.m_full, sm.m_empty)
    comp = scores.curve(sm.m_comp, sm.m_full, sm.m_empty)
    check_finite_curves(faith, comp, sm.m_full, sm.m_empty, ds.task)
    point = scores.scalars(sz, faith, ms.n_nodes)
    flips = scores.flip_curve(sm.m_comp, sm.m_full)  # [sizes]
    k_flip = scores.k_at(sz, flips)
    ci = scores.bootstrap_metrics(sz, sm, ms.n_nodes, st.n_bootstrap, c.seed)
    if n_undefined := ci["undefined_resamples"]:
        log.warning(
            "%s: %d of %d bootstrap resamples have m(M) - m(empty) = 0 (F undefined; seen "
            "with few test pairs in bfloat16); their CIs use the other %d",
            ds.task, n_undefined, st.n_bootstrap, st.n_bootstrap - n_undefined,
        )  # fmt: skip
    timings: dict[str, Any] = {"attribution_s": ms.attribution_s, "sweep_s": ms.sweep_s}
    n_batches = -(-len(ds.train) // st.batch_size)
    timings.update(
        n_train_batches=n_batches,
        n_sweep_forwards=sm.n_forwards,
        attribution_cached=ms.attribution_cached,
        attribution_bases=len(ms.extra.get("attribution_joint_bases", [None])),
        torch_threads=torch.get_num_threads(),
        dtype=str(prep.handle.dtype).removeprefix("torch."),
    )
    if bare_torch_timings:
        batch = {k: v[: st.batch_size] for k, v in prep.train.items()}
        bare = bare_torch or measure_bare_torch(prep.handle, batch, prep.test)
        timings.update(bare)
        timings["attribution_ratio"] = ms.attribution_s / (n_batches * bare["lean_fwd_fwd_bwd_s"])
        timings["sweep_ratio"] = ms.sweep_s / (sm.n_forwards * bare["plain_forward_s"])
    k08 = point["k_at_0_8"]
    extra: dict[str, Any] = {"dataset_dropped": dict(getattr(ds, "dropped", {})), **ms.extra}
    # which sweep path ran (bench.model.prefix): the metrics are the same either way
    extra["sweep_path"] = {
        "prefix_reuse": sm.prefix_reused > 0,
        "prefix_positions": sm.prefix_reused,
        "seq_len": int(prep.test["clean_ids"].shape[1]),
    }
    # the model's accuracy on the test pairs: m(M) > 0, the clean answer above the other
    extra["test_accuracy"] = float((sm.m_full > 0).mean())
    if n_undefined:
        extra["bootstrap_undefined_resamples"] = n_undefined
    if get_method(c.method).uses_ig_steps:
        extra["ig_steps"] = c.ig_steps
    if ratio_denominator is not None:
        label, denom = ratio_denominator
        ratio = scores.paired_k_ratio_metrics(
            sz, sm, np.asarray(denom.sizes), denom.metrics, st.n_bootstrap, c.seed
        )
        # JSON key "reference" kept (reports/cells.py reads it): the denominator cell's label
        extra["k_ratio_vs_neurons"] = {**ratio, "reference": label, "paired": True}
        flip_ratio = scores.paired_flip_ratio_metrics(
            sz, sm, np.asarray(denom.sizes), denom.metrics, st.n_bootstrap, c.seed
        )
        extra["k_flip_ratio_vs_neurons"] = {**flip_ratio, "reference": label, "paired": True}
    extra["cell"] = c.record(st)
    error_mode = c.error_mode if prep.basis.has_error else None
    return SweepResult(
        model=prep.handle.name,
        task=ds.task,
        task_version=str(ds.version),
        basis=c.basis,
        site=c.site,
        method=c.method,
        ablation=c.ablation,
        dictionary=c.dictionary,
        error_mode=error_mode,
        n_nodes=ms.n_nodes,
        sizes=[int(k) for k in ms.sizes],
        faithfulness=faith.tolist(),
        faithfulness_ci=[_bounds(b) for b in ci["faithfulness"]],
        completeness=comp.tolist(),
        completeness_ci=[_bounds(b) for b in ci["completeness"]],
        k_at_0_8=None if np.isnan(k08) else k08,
        k_at_0_8_ci=_bounds(ci["k_at_0_8"]),
        auc=point["auc"],
        auc_ci=_bounds(ci["auc"]),
        cpr=point["cpr"],
        cpr_ci=_bounds(ci["cpr"]),
        cmd=point["cmd"],
        cmd_ci=_bounds(ci["cmd"]),
        m_full=float(sm.m_full.mean()),
        m_empty=float(sm.m_empty.mean()),
        seed=c.seed,
        n_train=len(ds.train),
        n_test=len(ds.test),
        seq_len=int(prep.train["clean_ids"].shape[1]),
        protocol=get_protocol(c.ablation).describe(error_mode),
        consistency=consistency_check(sm, ms.n_nodes),
        dictionary_quality=prep.basis.quality(),
        flip_rate=flips.tolist(),
        flip_rate_ci=[_bounds(b) for b in ci["flip_rate"]],
        k_at_flip_0_8=None if np.isnan(k_flip) else k_flip,
        k_at_flip_0_8_ci=_bounds(ci["k_at_flip_0_8"]),
        composition=_composition(prep, ms, None if np.isnan(k08) else k08),
        versions=library_versions(),
        timings=timings,
        extra=extra,
    )


def run_sweep(
    handle: ModelHandle,
    ds,
    basis: str = CELL.basis,
    site: str = CELL.site,
    method: str = CELL.method,
    ablation: str = CELL.ablation,
    sizes: list[int] | None = None,
    dictionary: str | None = None,
    error_mode: str = CELL.error_mode,
    seed: int = CELL.seed,
    batch_size: int = RUN.batch_size,
    ig_steps: int = CELL.ig_steps,
    n_bootstrap: int = RUN.n_bootstrap,
    masks_per_forward: int = RUN.masks_per_forward,
    progress: bool = False,
    bare_torch_timings: bool = True,
    cache: bool = False,
    reuse_prefix: bool = RUN.reuse_prefix,
) -> SweepResult:
    """Attribute on ``ds.train``, sweep circuit sizes on ``ds.test``; see the module docstring.

    ``ablation`` names the protocol (:data:`bench.protocol.PROTOCOLS`): ``patch`` (default),
    ``mean`` and ``zero`` use one reference for attribution and ablation; ``marks`` is the
    unmatched pairing of Marks et al. ``error_mode``: ``ablate`` (default) or ``keep``.
    ``reuse_prefix``: run the pairs' shared prefix once (``patch`` only; the same metrics)."""
    cell = Cell(
        basis=basis, site=site, method=method, ablation=ablation, dictionary=dictionary,
        error_mode=error_mode, sizes=check_sizes(sizes), seed=seed, ig_steps=ig_steps,
    )  # fmt: skip
    settings = RunSettings(
        batch_size=batch_size,
        n_bootstrap=n_bootstrap,
        masks_per_forward=masks_per_forward,
        reuse_prefix=reuse_prefix,
    )
    prep = prepare(handle, ds, cell, settings=settings)
    return finish(prep, measure(prep, progress, cache), bare_torch_timings)
