"""The attribution stage: one score per node on the train split. The methods register
themselves (:mod:`~bench.attribution.registry`); :mod:`~bench.attribution.attribute` dispatches,
:mod:`~bench.attribution.joint` runs one pass per group and caches it,
:mod:`~bench.attribution.correlate` holds attribution against exact patching.
"""
