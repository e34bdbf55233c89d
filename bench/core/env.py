"""The environment variables sparsebench reads, each parsed once, here.

- ``SPARSEBENCH_THREADS``: torch intra-op threads (a positive integer); unset: torch's own
  choice in one process, the cores split evenly among parallel workers;
- ``SPARSEBENCH_CACHE``: the cache root (:func:`bench.core.cache.cache_root`).

A leaf: no torch, nothing above ``bench.core``.
"""

from __future__ import annotations

import contextlib
import os

from bench.core.errors import BadInputError

THREADS_VAR = "SPARSEBENCH_THREADS"
CACHE_VAR = "SPARSEBENCH_CACHE"


def torch_threads() -> int | None:
    """``$SPARSEBENCH_THREADS`` as a positive integer, None when unset or empty; anything else
    raises naming the variable and what is valid."""
    value = os.environ.get(THREADS_VAR, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise BadInputError(
            f"{THREADS_VAR}={value!r}: must be a positive integer (torch threads), or unset"
        )
    return int(value)


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def threads_per_worker(n_workers: int) -> int:
    """Torch threads of one of ``n_workers`` processes sharing this machine:
    ``$SPARSEBENCH_THREADS`` when set, else the cores split evenly (at least 1)."""
    return torch_threads() or max(1, cpu_cores() // max(1, n_workers))


def cache_override() -> str | None:
    """``$SPARSEBENCH_CACHE`` when set and non-empty."""
    return os.environ.get(CACHE_VAR) or None
