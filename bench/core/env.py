"""The environment variables sparsebench reads, each parsed once, here.

- ``SPARSEBENCH_THREADS``: torch intra-op threads (a positive integer); unset: the cores that
  are free (this process's cores less the 1-minute load average, at least 1), split evenly
  among parallel workers (:func:`choose_threads`);
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


def load_average() -> float:
    """The 1-minute load average: runnable processes, this one included once it runs; 0 where
    the OS has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def free_cores() -> int:
    """Cores not already busy: this process's cores less the load average, at least 1.

    Two torch threads on two cores that two other jobs also want run far slower than one
    (each OpenMP barrier waits for a descheduled thread), so a busy machine gets fewer threads.
    """
    cores = cpu_cores()
    return max(1, min(cores, round(cores - load_average())))


def choose_threads(n_workers: int = 1) -> tuple[int, str]:
    """Torch threads for one of ``n_workers`` processes sharing this machine, and why:
    ``$SPARSEBENCH_THREADS`` when set, else the free cores split evenly (at least 1)."""
    if (n := torch_threads()) is not None:
        return n, f"{THREADS_VAR}={n}"
    cores, load = cpu_cores(), load_average()
    n = max(1, free_cores() // max(1, n_workers))
    workers = f", {n_workers} workers" if n_workers > 1 else ""
    return n, f"{cores} cores, load {load:.1f}{workers}; set {THREADS_VAR} to choose"


def cache_override() -> str | None:
    """``$SPARSEBENCH_CACHE`` when set and non-empty."""
    return os.environ.get(CACHE_VAR) or None
