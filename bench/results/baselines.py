"""Reference curves: compare new SweepResults with committed ones in ``baselines/``.

Steps of :func:`compare`:

1. find the reference of a cell: ``<dir>/<model>/<task>__<basis>@<site>[__<dictionary>]__
   <method>__<ablation>[__keep]__n<train>x<test>.json`` (one file per cell and split size;
   ``__keep`` marks dictionary cells whose error nodes are kept, not the default);
2. refuse to compare a result with a reference of another cell (model, task, basis, site,
   dictionary, method, protocol, error mode: a file under the wrong name) or whose task version,
   seed, split sizes or node count differ (regenerate instead);
3. a scalar passes when it lies inside the reference's bootstrap CI widened by a margin —
   AUC: ±0.02 absolute; k@0.8: ×/÷ 1.25 — so run-to-run float noise passes and a change in
   the ranking that moves the curve fails;
4. a table of every checked scalar, from what to what, with the allowed band.

``python -m bench compare RESULTS... --reference baselines/ [--update]`` runs the same check
on saved results; the suite runs it with ``--reference``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.cell import Cell
from bench.results.result import SweepResult

AUC_MARGIN = 0.02
K_FACTOR = 1.25


def cell_name(r: SweepResult) -> str:
    """The reference file name of a result's cell, without ``.json`` (:class:`bench.cell.Cell`)."""
    return Cell.of_result(r).file_stem


def reference_path(directory: str | Path, r: SweepResult) -> Path:
    return Path(directory) / r.model / f"{cell_name(r)}.json"


@dataclass
class Check:
    cell: str
    scalar: str
    reference: float | None
    new: float | None
    low: float | None
    high: float | None
    ok: bool
    note: str = ""


def _band(name: str, ref: SweepResult) -> tuple[float | None, float | None]:
    if name == "auc":
        return ref.auc_ci[0] - AUC_MARGIN, ref.auc_ci[1] + AUC_MARGIN
    lo, hi = ref.k_at_0_8_ci
    return (lo / K_FACTOR if lo is not None else None, hi * K_FACTOR if hi is not None else None)


def compare(
    new: SweepResult, ref: SweepResult, update_flag: str = "--update-reference"
) -> list[Check]:
    """Steps 2-3 for one cell; ``update_flag``: how the caller regenerates references (the
    suite's ``--update-reference``, ``python -m bench compare``'s ``--update``)."""
    cell = cell_name(new)
    same = (
        "model",
        "task",
        "basis",
        "site",
        "dictionary",
        "method",
        "ablation",
        "error_mode",
        "task_version",
        "seed",
        "n_train",
        "n_test",
        "n_nodes",
    )  # fmt: skip  (the full cell identity, then what makes two runs of it comparable)
    diff = [
        f"{k}: {getattr(ref, k)} -> {getattr(new, k)}"
        for k in same
        if getattr(ref, k) != getattr(new, k)
    ]
    if diff:
        note = "not comparable (" + "; ".join(diff) + f"); regenerate with {update_flag}"
        return [Check(cell, "cell", None, None, None, None, False, note)]
    out = []
    for name, r_val, n_val in (("auc", ref.auc, new.auc), ("k@0.8", ref.k_at_0_8, new.k_at_0_8)):
        lo, hi = _band(name, ref)
        if r_val is None or n_val is None:
            ok = r_val is None and n_val is None
        else:
            ok = (lo is None or n_val >= lo) and (hi is None or n_val <= hi)
        out.append(Check(cell, name, r_val, n_val, lo, hi, ok))
    return out


def check_against(
    directory: str | Path, new: SweepResult, update_flag: str = "--update-reference"
) -> list[Check]:
    """Steps 1-3: a missing reference is a failed check that says how to create it."""
    path = reference_path(directory, new)
    if not path.exists():
        note = f"no reference at {path}; create it with {update_flag}"
        return [Check(cell_name(new), "cell", None, None, None, None, False, note)]
    return compare(new, SweepResult.from_json(path), update_flag)


def update(directory: str | Path, new: SweepResult) -> Path:
    path = reference_path(directory, new)
    new.to_json(path)  # atomic
    return path


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


def table(checks: list[Check], only_failures: bool = False) -> str:
    """Step 4: a fixed-width table of checks (what moved, from what to what)."""
    rows = [c for c in checks if not (only_failures and c.ok)]
    if not rows:
        return "(no checks)"
    head = ("status", "cell", "scalar", "reference", "new", "allowed")
    body = [
        (
            "ok" if c.ok else "MOVED" if c.scalar != "cell" else "ERROR",
            c.cell,
            c.scalar,
            _fmt(c.reference),
            _fmt(c.new),
            c.note or f"[{_fmt(c.low)}, {_fmt(c.high)}]",
        )
        for c in rows
    ]
    widths = [max(len(r[i]) for r in (head, *body)) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in (head, *body)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
