"""The paper's case studies, run identically on every basis (docs/METHOD.md, "The paper's
case studies, per basis"): multiplier steering (:mod:`~bench.studies.steer`) and units that
track the sum mod n on addition (:mod:`~bench.studies.auroc`).
"""
