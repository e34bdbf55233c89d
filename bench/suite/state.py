"""Per-process suite state: one :class:`Suite` per process holds the handles, datasets, bases,
joint-attribution stages and sweep inputs its cells share, and runs a cell
(:meth:`Suite.run_cell`):

1. set-up, untimed: model, dataset, basis (a local SAE trains here on first use), token ids,
   the cell's joint-attribution group (:class:`bench.attribution.joint.JointAttribution`,
   built from every selected cell of the group on its first cell) and its dataset's
   :class:`bench.sweep.inputs.SweepInputs` (computed by the first cell that needs them);
2. the timed body: attribution + sweep (:func:`bench.pipeline.measure`), timed by
   pytest-benchmark where it runs, else by the SweepResult's own timings;
3. bare-torch timings (once per dataset and process), the paired k ratio of a dictionary cell
   against its group's neurons@mlp_acts cell, the SweepResult (:func:`bench.pipeline.finish`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cell import Cell
from bench.suite.options import joint_group, result_path

log = logging.getLogger(__name__)


# ``timed(measure, setup)``: runs ``measure(*args, **kwargs)`` with ``setup()``'s
# ``(args, kwargs)`` and returns what it returns (pytest-benchmark's ``pedantic`` fits)
Timer = Callable[[Callable[..., Any], Callable[[], tuple]], Any]


def _untimed(fn: Callable[..., Any], setup: Callable[[], tuple]) -> Any:
    args, kwargs = setup()
    return fn(*args, **kwargs)


@contextlib.contextmanager
def showing(config, what: str):
    """Let a long step (first model fetch, local SAE training, a scale-out run) show its
    progress through pytest's output capture, under a line saying what it is (``config``:
    pytest's; None, or outside pytest: a log line)."""
    plugins = config.pluginmanager if config is not None else None
    capman = plugins.getplugin("capturemanager") if plugins else None
    reporter = plugins.getplugin("terminalreporter") if plugins else None
    if capman is None or reporter is None:
        log.info("sparsebench: %s", what)
        yield
        return
    with capman.global_and_fixture_disabled():
        reporter.write_line(f"\nsparsebench: {what}")
        yield


@dataclass
class Suite:
    """One process's state: loaded models, datasets and bases, each group's joint attribution
    and neurons@mlp_acts measurement; and the results, checks and references of its run."""

    cells: list = field(default_factory=list)
    dtype: str = "auto"
    device: str = "cpu"
    config: object = None  # the pytest config, when run by pytest (progress lines)
    handles: dict = field(default_factory=dict)
    datasets: dict = field(default_factory=dict)
    bases: dict = field(default_factory=dict)
    bare_torch_timings: dict = field(default_factory=dict)
    neuron_cells: dict = field(default_factory=dict)  # per-pair metrics for paired k ratios
    results: list = field(default_factory=list)  # every cell's SweepResult, for the verdict
    written: list = field(default_factory=list)  # (cell index, result file) of this process
    joints: dict = field(default_factory=dict)  # joint group -> its JointAttribution
    sweep_inputs: dict = field(default_factory=dict)  # the last dataset's SweepInputs only
    shared_differences: dict = field(default_factory=dict)  # the last split's Differences only
    share_differences: bool = True  # False where another process may run a split's other method
    checks: list = field(default_factory=list)
    updated: list = field(default_factory=list)

    def shown(self, what: str):
        return showing(self.config, what)

    def handle(self, model: str):
        if model not in self.handles:
            from bench.model.load import load_model

            with self.shown(f"loading {model} on {self.device} (first use fetches it)"):
                self.handles[model] = load_model(model, device=self.device, dtype=self.dtype)
        return self.handles[model]

    def basis(self, cell: Cell):
        """Each basis is built once per run (a local SAE trains here on first use)."""
        key = (cell.model, cell.basis, cell.site, cell.dictionary)
        if key not in self.bases:
            from bench.bases import make_basis
            from bench.training.local import ensure_quality

            handle = self.handle(cell.model)
            local = cell.dictionary and cell.dictionary.split(":")[0] == "local"
            note = " (a local dictionary trains on first use)" if local else ""
            shown = self.shown(f"building basis {cell.label}{note}") if cell.dictionary else None
            with shown or contextlib.nullcontext():
                basis = make_basis(handle, cell.basis, cell.site, cell.dictionary)
                ensure_quality(handle, basis)  # a published dictionary: measured once, cached
                self.bases[key] = basis
        return self.bases[key]

    joint_group = staticmethod(joint_group)

    def joint(self, cell: Cell):
        """The JointAttribution of ``cell``'s group (built on the group's first cell, from every
        selected cell of the group); None for methods that attribute one basis at a time."""
        from bench.attribution.joint import JointAttribution
        from bench.attribution.registry import get_method
        from bench.pipeline import prepare

        if not get_method(cell.method).joint:
            return None
        group = joint_group(cell)
        if group not in self.joints:
            handle, ds = self.handle(cell.model), self.dataset(cell)
            members = [c for c in self.cells if joint_group(c) == group]
            preps = [prepare(handle, ds, c, self.basis(c)) for c in members]
            self.joints[group] = JointAttribution(preps, self.differences(cell))
        return self.joints[group]

    def differences(self, cell: Cell):
        """The Differences store of ``cell``'s train split, through which the joint methods
        selected on it (atp and relp) compute u(x) − r(x) once; None when fewer than two are
        selected, or where this process may not run them all (``share_differences`` False: an
        xdist worker). Only the last split's is kept (a run's cells come split by split)."""
        from bench.attribution.differences import Differences
        from bench.attribution.registry import get_method

        key = (cell.model, cell.task, cell.n_train, cell.n_test, cell.ablation)
        if key not in self.shared_differences:
            same_split = [c for c in self.cells if
                          (c.model, c.task, c.n_train, c.n_test, c.ablation) == key]  # fmt: skip
            uses = len({c.method for c in same_split if get_method(c.method).joint})
            uses = uses if self.share_differences else 0
            self.shared_differences.clear()
            self.shared_differences[key] = Differences(uses) if uses >= 2 else None
        return self.shared_differences[key]

    def dataset(self, cell: Cell):
        key = (cell.model, cell.task, cell.n_train, cell.n_test)
        if key not in self.datasets:
            from tasks import get_task

            tok = self.handle(cell.model).tokenizer
            self.datasets[key] = get_task(cell.task).build(tok, cell.n_train, cell.n_test, 0)
        return self.datasets[key]

    def run_cell(self, cell: Cell, timed: Timer | None = None):
        """Steps 1-3 of the module docstring for one cell of ``self.cells``; the SweepResult.
        ``timed``: how the body is timed (pytest-benchmark's ``pedantic``; default: not)."""
        from bench.pipeline import finish, measure, prepare

        handle, ds = self.handle(cell.model), self.dataset(cell)
        prepared = []

        def setup():  # untimed: bases (SAEs load or train here), token ids, the joint group
            prepared.append(prepare(handle, ds, cell, self.basis(cell)))
            inputs = self.inputs(cell, prepared[-1])
            return (prepared[-1],), {"cache": True, "joint": self.joint(cell), "inputs": inputs}

        measured = (timed or _untimed)(measure, setup)
        prep = prepared[-1]
        # k@0.8(dictionary) / k@0.8(neurons@mlp_acts) with a paired bootstrap over the same pairs
        pair_key = joint_group(cell)
        if (cell.basis, cell.site) == ("neurons", "mlp_acts"):
            self.neuron_cells[pair_key] = measured
        denominator = None
        if cell.basis != "neurons" and pair_key in self.neuron_cells:
            denominator = ("neurons@mlp_acts", self.neuron_cells[pair_key])
        return finish(
            prep, measured, bare_torch=self.bare_torch(prep), ratio_denominator=denominator
        )

    def inputs(self, cell: Cell, prep):
        """The SweepInputs of ``cell``'s test split, shared by the cells of its dataset; only
        the last dataset's are kept (a run's cells come dataset by dataset)."""
        from bench.sweep.inputs import SweepInputs

        key = (cell.model, cell.task, cell.n_train, cell.n_test)
        if key not in self.sweep_inputs:
            self.sweep_inputs.clear()
            self.sweep_inputs[key] = SweepInputs(prep.handle, prep.test)
        return self.sweep_inputs[key]

    def bare_torch(self, prep) -> dict[str, float]:
        """Bare-torch seconds on this dataset's batches, measured once per dataset and process."""
        from bench.pipeline import measure_bare_torch

        key = (prep.handle.name, prep.ds.task, len(prep.ds.train), len(prep.ds.test))
        if key not in self.bare_torch_timings:
            batch = {k: v[: prep.settings.batch_size] for k, v in prep.train.items()}
            self.bare_torch_timings[key] = measure_bare_torch(prep.handle, batch, prep.test)
        return self.bare_torch_timings[key]

    def keep(self, cell: Cell, result, results_dir: Path, reference: str | None = None,
             update: bool = False) -> list:  # fmt: skip
        """After a cell: its SweepResult written under ``results_dir`` and remembered for the
        verdict; then the reference updated (``update``) or checked. The failed checks."""
        from bench.results import baselines

        self.results.append(result)
        out = result_path(results_dir, result)
        result.to_json(out)
        self.written.append((self.cells.index(cell), out))
        if reference and update:
            self.updated.append(baselines.update(reference, result))
            return []
        if not reference:
            return []
        checks = baselines.check_against(reference, result)
        self.checks.extend(checks)
        return [c for c in checks if not c.ok]


def ordered(results: list, cells: list[Cell]) -> list:
    """``results`` in the order of their cells in ``cells`` (the order a serial run makes)."""
    index = {(c.model, c.task, c.label, c.method): i for i, c in enumerate(cells)}
    return sorted(
        results,
        key=lambda r: index.get((r.model, r.task, Cell.of_result(r).label, r.method), len(index)),
    )
