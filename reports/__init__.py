"""sparsebench reports: curves, tables and paper figures from saved sweep results.

Steps (``python -m reports RESULTS... --out DIR [--paper]``, or :func:`build_report`):

1. :mod:`reports.load` reads SweepResult JSON files and pytest-benchmark records;
2. :mod:`reports.figures` draws per-task curves and the cross-task summary,
   :mod:`reports.paper` the ``--paper`` figures, all styled by :mod:`reports.style`;
3. :mod:`reports.tables` writes the score tables (Markdown, LaTeX, CSV); where the results
   hold a ladder of dictionaries, :mod:`reports.ladder` draws and tabulates the k@0.8 ratio
   against dictionary quality;
4. :mod:`reports.build` renders into a temporary directory, moves the files into DIR and writes
   ``index.md`` (:mod:`reports.index`) with provenance.

Reports read only saved results; they never run a model.
"""

from reports.build import build_report
from reports.load import Inputs, ReportError, load_inputs

__all__ = ["Inputs", "ReportError", "build_report", "load_inputs"]
