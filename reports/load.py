"""Find and read saved results for a report.

Steps:

1. expand the paths given: a file is read as given (any extension); a directory is searched
   recursively for ``*.json`` in sorted order, so the input order is deterministic;
2. parse each file as JSON and tell its format: a SweepResult file (``schema_version`` plus the
   cell fields), or a pytest-benchmark record (``benchmarks`` plus ``machine_info`` or
   ``commit_info``) whose ``benchmarks[i]["extra_info"]["result"]`` are SweepResult dicts;
   a file that is neither is skipped with a logged warning, but a *damaged* result (invalid
   JSON that holds result fields: a truncated file) raises :class:`ReportError` naming it;
3. build each result with :meth:`bench.results.result.SweepResult.from_dict`, so a newer schema or a
   missing field raises :class:`ReportError` naming the file (and the benchmark); so does a
   NaN or infinite number anywhere in a result;
4. drop exact duplicates (the same cell saved alone and inside a benchmark record); of two
   *different* results for one cell, keep the first and log a warning, unless their split sizes
   differ: that raises :class:`ReportError` naming both files (a report compares one split
   size per cell);
5. raise :class:`ReportError` when no result at all was found.

Reports read all or nothing: a report is never built from part of what it was given.

Nothing here imports torch or runs a model: only the saved JSON is read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.finite import nonfinite_fields
from bench.results.result import ResultSchemaError, SweepResult

log = logging.getLogger(__name__)

CELL_FIELDS = frozenset({"model", "task", "basis", "site", "method", "sizes", "faithfulness"})


class ReportError(ValueError):
    """A report cannot be built from these inputs; the message names the file."""


@dataclass(frozen=True)
class LoadedResult:
    result: SweepResult
    source: str  # "path" or "path :: benchmarks[i] (name)"


@dataclass
class Inputs:
    """Everything read from the inputs, plus what was skipped and why."""

    results: list[LoadedResult] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # files that gave at least one result
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    notes: list[str] = field(default_factory=list)  # duplicates and conflicts

    @property
    def sweep_results(self) -> list[SweepResult]:
        return [lr.result for lr in self.results]


def cell_key(r: SweepResult) -> tuple[Any, ...]:
    """What makes two results the same cell of a report."""
    return (r.model, r.task, r.basis, r.site, r.dictionary, r.method, r.ablation, r.error_mode)


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, directories recursed for ``*.json`` (sorted); missing paths raise."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*.json") if q.is_file())
            if not found:
                log.warning("%s: directory holds no *.json files", p)
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise ReportError(f"{p}: no such file or directory")
    seen: set[Path] = set()
    unique = []
    for p in out:
        rp = p.resolve()
        if rp not in seen:
            seen.add(rp)
            unique.append(p)
    return unique


def is_sweep_result(data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    hits = len(CELL_FIELDS & data.keys())
    return ("schema_version" in data and hits >= 1) or hits >= 3


def is_benchmark_record(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and isinstance(data.get("benchmarks"), list)
        and ("machine_info" in data or "commit_info" in data)
    )


def _looks_like_result(text: str) -> bool:
    """Whether unparsable text is a damaged result or benchmark record (not some other file)."""
    keys = sum(f'"{k}"' in text for k in CELL_FIELDS)
    return keys >= 2 or '"schema_version"' in text or '"benchmarks"' in text


def _from_dict(data: dict[str, Any], origin: str) -> SweepResult:
    if bad := nonfinite_fields(data):
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ReportError(
            f"{origin}: holds non-finite numbers ({shown}); a NaN result is not plotted or "
            "tabulated: rerun the cell, or leave this file out"
        )
    try:
        return SweepResult.from_dict(data, origin)
    except ResultSchemaError as err:
        raise ReportError(str(err)) from err
    except TypeError as err:  # e.g. a field of the wrong shape
        raise ReportError(f"{origin}: not a valid SweepResult ({err})") from err


def read_file(path: Path) -> tuple[list[LoadedResult], str | None]:
    """The results in one file, or ([], reason) when it is not a results file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return [], f"not readable as text ({err})"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if _looks_like_result(text):
            raise ReportError(
                f"{path}: a damaged result file (truncated or corrupt: invalid JSON, {err}); "
                "nothing was written: rerun its cell or leave the file out"
            ) from None
        return [], f"not readable as JSON ({err})"
    if is_benchmark_record(data):
        found = []
        for i, bench in enumerate(data["benchmarks"]):
            name = bench.get("name", "?") if isinstance(bench, dict) else "?"
            origin = f"{path} :: benchmarks[{i}] ({name})"
            extra = bench.get("extra_info") if isinstance(bench, dict) else None
            if not isinstance(extra, dict) or "result" not in extra:
                log.debug("%s: no extra_info.result; not a sweep benchmark", origin)
                continue
            if not isinstance(extra["result"], dict):
                raise ReportError(f"{origin}: extra_info.result is not a JSON object")
            found.append(LoadedResult(_from_dict(extra["result"], origin), origin))
        if not found:
            return [], "pytest-benchmark record with no extra_info.result (no sweep results)"
        return found, None
    if is_sweep_result(data):
        return [LoadedResult(_from_dict(data, str(path)), str(path))], None
    return [], "neither a SweepResult nor a pytest-benchmark record"


def _split(r: SweepResult) -> tuple[int, int]:
    return (r.n_train, r.n_test)


def load_inputs(paths: Sequence[str | Path]) -> Inputs:
    """Read every result under ``paths``; raise ReportError if there is none."""
    if not paths:
        raise ReportError("no input paths given")
    inputs = Inputs()
    by_cell: dict[tuple[Any, ...], LoadedResult] = {}
    for path in expand_paths(paths):
        loaded, reason = read_file(path)
        if reason is not None:
            log.warning("%s: skipped: %s", path, reason)
            inputs.skipped.append((str(path), reason))
            continue
        inputs.files.append(str(path))
        for lr in loaded:
            key = cell_key(lr.result)
            first = by_cell.get(key)
            if first is None:
                by_cell[key] = lr
                inputs.results.append(lr)
            elif first.result.to_dict() == lr.result.to_dict():
                log.debug("%s: same result as %s; read once", lr.source, first.source)
            elif _split(first.result) != _split(lr.result):
                a, b = first.result, lr.result
                raise ReportError(
                    f"{first.source} and {lr.source}: two results for the cell {a.task} "
                    f"{a.basis}@{a.site} {a.method} ({a.model}) with different split sizes "
                    f"(n_train/n_test {a.n_train}/{a.n_test} and {b.n_train}/{b.n_test}); a "
                    "report compares one split size per cell: pass the results of one size, "
                    f"e.g. only the *__n{a.n_train}x{a.n_test}.json files"
                )
            else:
                note = (
                    f"{lr.source}: a different result for the cell already read from "
                    f"{first.source}; kept the first"
                )
                log.warning("%s", note)
                inputs.notes.append(note)
    if not inputs.results:
        where = ", ".join(str(p) for p in paths)
        raise ReportError(f"no sweep results found in: {where}")
    log.info("read %d result(s) from %d file(s)", len(inputs.results), len(inputs.files))
    return inputs
