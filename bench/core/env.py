"""The environment variables sparsebench reads, each parsed once, here.

- ``SPARSEBENCH_THREADS``: torch intra-op threads (a positive integer); unset: the cores that
  are free (the machine's cores less those busy right now, sampled from ``/proc/stat``, or
  less the 1-minute load average where there is none; at most this process's cores, at least
  1), split evenly among parallel workers (:func:`choose_threads`); also the workers that
  run independent forwards side by side, one thread each (:func:`choose_workers`);
- ``SPARSEBENCH_CACHE``: the cache root (:func:`bench.core.cache.cache_root`).

A leaf: no torch, nothing above ``bench.core``.
"""

from __future__ import annotations

import contextlib
import os
import time

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


BUSY_WINDOW_S = 0.25  # how long busy_cores() watches the machine


def _cpu_times() -> tuple[int, int]:
    """(idle, total) clock ticks of all cores since boot, from the first line of /proc/stat."""
    with open("/proc/stat") as f:
        name, *fields = f.readline().split()
    if name != "cpu" or len(fields) < 4:
        raise ValueError(f"unexpected /proc/stat line: {name} {' '.join(fields)}")
    ticks = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
    return ticks[3] + (ticks[4] if len(ticks) > 4 else 0), sum(ticks)


def busy_cores(window: float = BUSY_WINDOW_S) -> float | None:
    """Cores of the machine busy right now: the non-idle share of all cores' time over
    ``window`` seconds (this process sleeps meanwhile), times the machine's cores; None where
    the OS has no /proc/stat. Unlike the load average, it does not lag: a job that ended a few
    seconds ago no longer counts, one that just started already does."""
    try:
        idle0, total0 = _cpu_times()
        time.sleep(window)
        idle1, total1 = _cpu_times()
    except (OSError, ValueError):
        return None
    if total1 <= total0:
        return None
    return (1.0 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)


def free_cores(busy: float | None = None) -> int:
    """Cores not already busy: the machine's cores less the busy ones (``busy``, else the load
    average; both count the whole machine), at most this process's cores, at least 1.

    Two torch threads on two cores that two other jobs also want run far slower than one
    (each OpenMP barrier waits for a descheduled thread), so a busy machine gets fewer threads.
    """
    cores = cpu_cores()
    taken = load_average() if busy is None else busy
    return max(1, min(cores, round((os.cpu_count() or cores) - taken)))


def choose_threads(n_workers: int = 1) -> tuple[int, str]:
    """Torch threads for one of ``n_workers`` processes sharing this machine, and why:
    ``$SPARSEBENCH_THREADS`` when set, else the free cores split evenly (at least 1)."""
    if (n := torch_threads()) is not None:
        return n, f"{THREADS_VAR}={n}"
    cores, load, busy = cpu_cores(), load_average(), busy_cores()
    n = max(1, free_cores(busy) // max(1, n_workers))
    now = f"{busy:.1f} busy now, " if busy is not None else ""
    workers = f", {n_workers} workers" if n_workers > 1 else ""
    return n, f"{cores} cores, {now}load {load:.1f}{workers}; set {THREADS_VAR} to choose"


def choose_workers(n_processes: int = 1) -> int:
    """Workers for independent forwards (:mod:`bench.model.replicas`), one intra-op thread each:
    ``$SPARSEBENCH_THREADS`` when set, else this process's cores split evenly among
    ``n_processes`` processes (at least 1).

    Not fewer on a busy machine, unlike :func:`choose_threads`: a worker waits at no barrier
    for another, so each takes its own share of the cores. With two other single-thread jobs
    on 2 cores, two workers ran the ioi sweep in 16 s, one thread in 24 s, two threads in 51 s.
    """
    if (n := torch_threads()) is not None:
        return n
    return max(1, cpu_cores() // max(1, n_processes))


def cache_override() -> str | None:
    """``$SPARSEBENCH_CACHE`` when set and non-empty."""
    return os.environ.get(CACHE_VAR) or None
