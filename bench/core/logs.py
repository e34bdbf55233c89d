"""Logging for the command lines: sparsebench's own messages at INFO (WARNING with
``--quiet``), every other library's at WARNING, so a run shows sparsebench's progress and not,
say, matplotlib's font subsetting. Library code only calls ``logging.getLogger(__name__)``.

A leaf: nothing above ``bench.core``.
"""

from __future__ import annotations

import logging

OWN_PACKAGES = ("bench", "tasks", "reports")


def configure_cli_logging(quiet: bool = False, fmt: str = "%(message)s") -> None:
    """Root logger at WARNING with ``fmt``; sparsebench's packages at INFO unless ``quiet``."""
    logging.basicConfig(level=logging.WARNING, format=fmt)
    logging.getLogger().setLevel(logging.WARNING)  # also where a handler was already installed
    for name in OWN_PACKAGES:
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.INFO)
