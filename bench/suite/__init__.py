"""The benchmark suite (``pytest bench --benchmark-only``) and its other runners: options and
cell parsing (:mod:`~bench.suite.options`, no pytest), per-process state
(:mod:`~bench.suite.state`), every pytest hook (:mod:`~bench.suite.plugin`), xdist scheduling,
Ray (:mod:`~bench.suite.ray`) and the scale-out benchmark (:mod:`~bench.suite.scaleout`).
"""
