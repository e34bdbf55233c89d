"""The cell: what one sweep measures, described once (for ``run_sweep``, the CLI and the suite).

- :class:`Cell` (keyword-built, frozen): basis, site, dictionary, method, protocol
  (``ablation``), error mode, sizes, seed, IG steps, and — for the suite's cells — the model,
  task and split sizes. It parses ``basis@site[:dictionary]`` (:meth:`Cell.parse_basis`) and
  alone produces a cell's label (``basis@site[:dictionary]``), pytest id and reference file
  name (:meth:`Cell.file_stem`, also built back from a SweepResult by :meth:`Cell.of_result`);
- :class:`RunSettings`: how it is run (batch size, bootstrap resamples, masks per forward),
  split off from what is measured; ``batch_size`` still keys attribution caches.

Steps: (1) build a Cell from keywords or options; (2) ``bench.core.checks.check_cell`` range-checks
its numbers with the settings; (3) ``Cell.record`` is the ``extra["cell"]`` of a SweepResult.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, fields
from typing import Any

from bench.protocol import DEFAULT_ERROR_MODE, DEFAULT_PROTOCOL

log = logging.getLogger(__name__)

BASES_WITH_DICTIONARY = ("sae", "transcoder")


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """How a cell is run; none of these change what it measures, except through batching."""

    batch_size: int = 32
    n_bootstrap: int = 1000
    masks_per_forward: int = 8
    # run the positions no mask can change once per pair, not once per mask, where the
    # protocol allows it (``patch``; bench.model.prefix); False runs every position per mask
    reuse_prefix: bool = True


@dataclass(frozen=True, kw_only=True)
class Cell:
    """What one sweep measures (see the module docstring)."""

    basis: str = "neurons"
    site: str = "mlp_acts"
    method: str = "relp"
    ablation: str = DEFAULT_PROTOCOL  # the protocol: sets attribution's and the sweep's reference
    dictionary: str | None = None
    error_mode: str | None = DEFAULT_ERROR_MODE  # None in results of bases without error nodes
    sizes: tuple[int, ...] | None = None
    seed: int = 0
    ig_steps: int = 10
    # where the cell runs: set by the suite (run_sweep is given the model and dataset)
    model: str | None = None
    task: str | None = None
    n_train: int | None = None
    n_test: int | None = None

    @staticmethod
    def parse_basis(spec: str) -> dict[str, Any]:
        """``basis@site[:dictionary]`` as Cell keywords; raises ValueError naming the spec."""
        from bench.bases import BASIS_NAMES, TRANSCODER_READ_SITE, TRANSCODER_WRITE_SITE
        from bench.model.sites import SITE_NAMES

        basis, _, rest = spec.partition("@")
        site, _, dictionary = rest.partition(":")
        if basis not in BASIS_NAMES or site not in SITE_NAMES:
            raise ValueError(
                f"bad basis spec {spec!r}: write basis@site[:dictionary] with basis in "
                f"{', '.join(BASIS_NAMES)} and site in {', '.join(SITE_NAMES)}"
            )
        if basis != "neurons" and not dictionary:
            raise ValueError(f"basis spec {spec!r} needs a dictionary, e.g. {spec}:local")
        if basis == "transcoder" and site != TRANSCODER_WRITE_SITE:
            raise ValueError(
                f"basis spec {spec!r}: a transcoder writes {TRANSCODER_WRITE_SITE} (and reads "
                f"{TRANSCODER_READ_SITE}); write transcoder@{TRANSCODER_WRITE_SITE}:{dictionary}"
            )
        return {"basis": basis, "site": site, "dictionary": dictionary or None}

    @classmethod
    def of_result(cls, r: Any) -> Cell:
        """The cell a SweepResult measured (for its label and file name)."""
        return cls(
            basis=r.basis, site=r.site, method=r.method, ablation=r.ablation,
            dictionary=r.dictionary, error_mode=r.error_mode, model=r.model, task=r.task,
            n_train=r.n_train, n_test=r.n_test,
        )  # fmt: skip

    @property
    def label(self) -> str:
        """``basis@site[:dictionary]``."""
        d = f":{self.dictionary}" if self.dictionary else ""
        return f"{self.basis}@{self.site}{d}"

    @property
    def id(self) -> str:
        """The suite's pytest id: ``task-basis@site[:dictionary]-method``."""
        return f"{self.task}-{self.label}-{self.method}"

    @property
    def file_stem(self) -> str:
        """``<task>__<basis>@<site>[__<dictionary>]__<method>__<ablation>[__keep]__n<train>x
        <test>``: a reference's (and a saved result's) file name without ``.json``."""
        dictionary = self.dictionary
        dictionary = f"__{re.sub(r'[^A-Za-z0-9._-]+', '-', dictionary)}" if dictionary else ""
        keep = "__keep" if self.error_mode == "keep" else ""
        return (
            f"{self.task}__{self.basis}@{self.site}{dictionary}__{self.method}__{self.ablation}"
            f"{keep}__n{self.n_train}x{self.n_test}"
        )

    def measured(self) -> Cell:
        """The same cell without where it runs (what run_sweep and prepare take)."""
        return Cell(**{f.name: getattr(self, f.name) for f in fields(self) if f.name in MEASURED})

    def record(self, settings: RunSettings) -> dict[str, Any]:
        """``extra["cell"]`` of its SweepResult: the fields and settings, in their long-standing
        order (sizes left out: the result has its own)."""
        return {
            "basis": self.basis,
            "site": self.site,
            "method": self.method,
            "ablation": self.ablation,
            "dictionary": self.dictionary,
            "error_mode": self.error_mode,
            "seed": self.seed,
            "batch_size": settings.batch_size,
            "ig_steps": self.ig_steps,
            "n_bootstrap": settings.n_bootstrap,
            "masks_per_forward": settings.masks_per_forward,
        }


MEASURED = ("basis", "site", "method", "ablation", "dictionary", "error_mode", "sizes", "seed",
            "ig_steps")  # fmt: skip
SETTINGS = tuple(f.name for f in fields(RunSettings))

# Every default, declared once: what a cell measures, how it runs, how many pairs it takes.
# run_sweep, python -m bench sweep, the suite and every stage's own keyword defaults read these.
CELL = Cell()
RUN = RunSettings()
SPLIT = (300, 40)  # train / test pairs of one cell (run_sweep's callers, python -m bench sweep)
SUITE_SPLIT = (300, 32)  # the suite's: 300/40 takes ~10% longer (--n-test 40 for it)
