"""The sweep stage: unit values and ablation (:mod:`~bench.sweep.units`), the references r(x)
(:mod:`~bench.sweep.references`, also used by attribution), the size sweep
(:mod:`~bench.sweep.sweep`) and the scores over its per-pair metrics (:mod:`~bench.sweep.scores`).
"""
