"""The scale-out benchmark: one selection of cells run serially, over pytest-xdist workers and as
Ray tasks; wall times as ratios to serial, results compared file by file.

``pytest bench --benchmark-only --scaleout N`` (``bench/test_scaleout.py``) measures the cells
the suite options select (default: the default suite; ``--quick``: the CI subset). Steps:

1. the dictionaries the cells need are built once, untimed, in the user's cache
   (:func:`warm`: a local SAE trains here on first use, so no run pays for training);
2. each run gets a cache of its own (:func:`seed_cache`): every entry of the user's cache
   linked except ``attributions``, so no run reads scores another run computed;
3. three runs, each a fresh process tree timed end to end (one round of pytest-benchmark: the
   wall time a user waits, start-up included) — serial ``pytest bench --benchmark-only``, the
   same with ``-n N``, and ``python -m bench ray --num-cpus N`` (a local instance, N one-CPU
   tasks at a time) (:func:`command`);
4. each results directory compared with the serial run's (:func:`compare`): the same files,
   every field equal but ``timings``, and the largest |ΔAUC| of any cell;
5. the table of wall times and ratios (:func:`table`), also written as ``summary.json``.

Everything lands in a new directory ``<--results-dir>/scaleout-<time>/<run>/`` (results,
the run's log, and for the serial run its pytest-benchmark JSON); nothing there is removed.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.cell import Cell
from bench.suite.options import SUITE_OPTIONS

log = logging.getLogger(__name__)

MODES = ("serial", "xdist", "ray")
# options that name where results go or what they are checked against: set per run here
_OWN = {"--results-dir", "--reference", "--update-reference", "--devices"}
RUNS: list[Run] = []  # this session's runs, in order (the terminal summary prints them)


def passthrough(config) -> list[str]:
    """The suite options given on this command line (those differing from their defaults),
    as arguments for the runs: each run selects exactly the cells this one does."""
    args = []
    for flag, kwargs in SUITE_OPTIONS:
        value = config.getoption(flag)
        if flag in _OWN or value == kwargs.get("default") or value in (None, False):
            continue
        args += [flag] if value is True else [flag, str(value)]
    return args


def command(mode: str, workers: int, options: list[str], out: Path) -> list[str]:
    """Step 3: the command of one run, writing its results under ``out/results``."""
    results = ["--results-dir", str(out / "results")]
    if mode == "ray":
        return [sys.executable, "-m", "bench", "ray", *options, *results,
                "--num-cpus", str(workers), "--cpus-per-task", "1"]  # fmt: skip
    pytest = [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "-p",
              "no:cacheprovider", *options, *results]  # fmt: skip
    if mode == "serial":
        return [*pytest, "--benchmark-json", str(out / "benchmark.json")]
    if mode == "xdist":
        return [*pytest, "-n", str(workers)]
    raise ValueError(f"unknown run {mode!r}; valid: {', '.join(MODES)}")


def warm(cells: list[Cell], dtype: str, device: str) -> None:
    """Step 1: every basis of ``cells`` built once in the user's cache (untimed)."""
    from bench.suite.state import Suite

    suite = Suite(cells=list(cells), dtype=dtype, device=device)
    for cell in cells:
        if cell.dictionary:
            suite.basis(cell)


def seed_cache(source: Path, target: Path) -> Path:
    """Step 2: ``target`` holds a link to every entry of the cache ``source`` but its
    attribution scores (the runs read the model and dictionaries, never each other's scores)."""
    target.mkdir(parents=True, exist_ok=False)
    if source.is_dir():
        for entry in sorted(source.iterdir()):
            if entry.name != "attributions" and not entry.name.startswith("."):
                (target / entry.name).symlink_to(entry.resolve(), entry.is_dir())
    return target


def environment(cache: Path, repo: Path) -> dict[str, str]:
    """The run's environment: its own cache, and this tree first on the import path (the
    runs import the code this benchmark was started from, as do their workers)."""
    env = dict(os.environ)
    env["SPARSEBENCH_CACHE"] = str(cache)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH")) if p)
    return env


def execute(cmd: list[str], out: Path, env: dict[str, str], cwd: Path) -> int:
    """One run, its output to ``out/log.txt``; the exit status."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "log.txt", "w") as logfile:
        logfile.write(" ".join(cmd) + "\n\n")
        logfile.flush()
        return subprocess.run(
            cmd, cwd=cwd, env=env, stdout=logfile, stderr=subprocess.STDOUT
        ).returncode


def results_without_timings(directory: Path) -> dict[str, dict[str, Any]]:
    """Every SweepResult under ``directory`` (relative path -> its JSON, ``timings`` removed)."""
    out = {}
    for path in sorted(directory.rglob("*.json")):
        data = json.loads(path.read_text())
        data.pop("timings", None)
        out[path.relative_to(directory).as_posix()] = data
    return out


@dataclass
class Comparison:
    """Step 4: one results directory against the serial run's."""

    files: int
    missing: list[str] = field(default_factory=list)  # in the serial run's only
    extra: list[str] = field(default_factory=list)  # in this run's only
    differing: list[str] = field(default_factory=list)  # a field other than timings differs
    max_abs_delta_auc: float = 0.0

    @property
    def identical(self) -> bool:
        return not (self.missing or self.extra or self.differing)

    def describe(self) -> str:
        if self.identical:
            return f"{self.files} result files identical but timings (max |ΔAUC| = 0)"
        parts = [f"{name}: {', '.join(v[:5])}" for name, v in
                 (("missing", self.missing), ("extra", self.extra),
                  ("differing", self.differing)) if v]  # fmt: skip
        return "; ".join(parts) + f" (max |ΔAUC| = {self.max_abs_delta_auc:.3g})"


def compare(expected: Path, got: Path) -> Comparison:
    want, have = results_without_timings(expected), results_without_timings(got)
    both = sorted(set(want) & set(have))
    delta = [abs(want[n]["auc"] - have[n]["auc"]) for n in both]
    return Comparison(
        files=len(have),
        missing=sorted(set(want) - set(have)),
        extra=sorted(set(have) - set(want)),
        differing=[n for n in both if want[n] != have[n]],
        max_abs_delta_auc=max(delta, default=0.0),
    )


@dataclass
class Run:
    """One timed run and how its results compare with the serial run's."""

    mode: str
    workers: int
    wall_s: float
    cells: int
    ratio_to_serial: float | None = None
    identical: bool | None = None  # None for the serial run itself
    max_abs_delta_auc: float | None = None
    command: str = ""
    out: str = ""


def table(runs: list[Run]) -> str:
    """Step 5: one line per run."""
    lines = [f"{'run':<8} {'workers':>7} {'cells':>5} {'wall s':>9} {'× serial':>9}  results"]
    for r in runs:
        ratio = "1.00" if r.mode == "serial" else f"{r.ratio_to_serial:.2f}"
        same = "(the reference)" if r.identical is None else "identical"
        if r.identical is False:
            same = f"DIFFER (max |ΔAUC| {r.max_abs_delta_auc:.3g})"
        lines.append(f"{r.mode:<8} {r.workers:>7} {r.cells:>5} {r.wall_s:>9.1f} {ratio:>9}  {same}")
    return "\n".join(lines)


def write_summary(root: Path, runs: list[Run], extra: dict[str, Any]) -> Path:
    from bench.core.cache import write_json_atomic

    path = root / "summary.json"
    write_json_atomic(path, {**extra, "runs": [asdict(r) for r in runs]})
    return path


def now_stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
