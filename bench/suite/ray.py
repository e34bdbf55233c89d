"""Many machines: the suite's cells as Ray tasks, one task per joint-attribution group.

``python -m bench ray`` (bench/__main__.py) takes the suite's options (:mod:`bench.suite`) and
runs :func:`run_on_ray`. Steps:

1. the cells, exactly as ``pytest bench`` expands the same options (:func:`bench.suite.
   parse_cells`), grouped by :func:`bench.suite.joint_group` — a group's joint attribution and
   its paired k ratios need all of its cells in one process, in order;
2. Ray: connect to ``address``, or start a local instance (``num_cpus`` CPUs, no dashboard, a
   small object store) that ends with the run;
3. one task per group, asking for one GPU (``device="cuda"``: Ray sets the task's
   ``CUDA_VISIBLE_DEVICES``) or ``cpus_per_task`` CPUs; it runs the group's cells through a
   :class:`bench.suite.state.Suite` kept in its worker process (models, datasets and bases stay
   loaded for the worker's next group) with that many torch threads, and returns the
   SweepResults as plain dicts;
4. as each task ends, its results are written to ``results_dir`` where the suite writes them
   (same path, same content but timings); a failed task is reported with its group while the
   others still land;
5. the results in the suite's cell order, for the verdict and the reference check.

Ray is an optional extra (``pip install 'sparsebench[ray]'``): this module imports it only when
a run starts. On a cluster every node needs the same sparsebench installed; each node keeps its
own cache (a local SAE trains once per node, under :func:`bench.core.cache.cache_lock`).
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cell import Cell
from bench.core.checks import CLI, check_device, check_int
from bench.core.env import cpu_cores, torch_threads
from bench.core.errors import BadInputError
from bench.results.result import SweepResult
from bench.suite.options import group_name, groups, result_path
from bench.suite.state import Suite, ordered

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'sparsebench[ray]' (or pip install ray)"
DEVICES = ("cpu", "cuda")


def require_ray():
    """The ``ray`` module, or a RuntimeError saying how to install it."""
    try:
        import ray
    except ImportError as err:
        raise RuntimeError(
            f"python -m bench ray needs Ray, which is not installed here: {INSTALL_HINT}"
        ) from err
    return ray


@dataclass
class RayRun:
    """What a run produced: results in cell order, the files written, the failed groups."""

    results: list[SweepResult] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (group, error)


_WORKER_SUITES: dict[tuple[str, str], Suite] = {}  # one per (dtype, device) in a worker


def run_group(cells: list[Cell], dtype: str, device: str, threads: int) -> list[dict[str, Any]]:
    """Step 3, inside a Ray task: the group's cells in order; their SweepResults as dicts."""
    import torch

    from bench.model.load import set_workers

    torch.set_num_threads(threads)
    set_workers(threads)
    suite = _WORKER_SUITES.setdefault((dtype, device), Suite(dtype=dtype, device=device))
    suite.cells = list(cells)  # the group's JointAttribution is built from these
    return [suite.run_cell(cell).to_dict() for cell in cells]


def check_ray_options(
    device: str, address: str | None, num_cpus: int | None, cpus_per_task: int
) -> int | None:
    """The Ray options, before Ray starts; the local instance's CPUs (None with an address)."""
    if device not in DEVICES:
        raise BadInputError(
            f"--device {device}: valid: {', '.join(DEVICES)} (Ray gives each task its own GPU; "
            "to pick GPUs, set CUDA_VISIBLE_DEVICES before starting Ray)"
        )
    if address is None:
        check_device(device, "device", CLI)  # a local instance: this machine runs the tasks
        num_cpus = num_cpus if num_cpus is not None else cpu_cores()
        check_int(num_cpus, "num_cpus", 1, style=CLI)
        why = f"a task cannot ask for more than the local instance's {num_cpus} CPUs"
        check_int(cpus_per_task, "cpus_per_task", 1, num_cpus, CLI, why)
        return num_cpus
    if num_cpus is not None:
        raise BadInputError(
            f"--num-cpus {num_cpus} sizes a local Ray instance; with --address {address} the "
            "cluster has its own CPUs (leave --num-cpus out)"
        )
    check_int(cpus_per_task, "cpus_per_task", 1, style=CLI)
    return None


CONNECT_TIMEOUT_S = 10.0


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A cluster address answers on TCP within ``timeout`` s, before ``ray.init`` (which
    retries "Failed to connect to GCS" for ever); ``auto`` and ``local`` are Ray's own."""
    if address in ("auto", "local"):
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise BadInputError(
            f"--address {address}: give host:port (the head's GCS, e.g. 10.0.0.1:6379) or "
            "ray://host:port (Ray Client, e.g. ray://10.0.0.1:10001)"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise BadInputError(
            f"--address {address}: no Ray cluster answers at {host}:{port} within {timeout:g} s "
            f"({err}); check that the head node runs (ray start --head), the port (GCS 6379; "
            "Ray Client 10001 for ray://) and any firewall between here and there"
        ) from None


def _check_cluster(ray, address: str, device: str, cpus_per_task: int) -> None:
    have = ray.cluster_resources()
    if device == "cuda" and have.get("GPU", 0) < 1:
        raise BadInputError(f"--device cuda: the Ray cluster at {address} has no GPU")
    if have.get("CPU", 0) < cpus_per_task:
        raise BadInputError(
            f"--cpus-per-task {cpus_per_task}: the Ray cluster at {address} has "
            f"{have.get('CPU', 0):g} CPUs"
        )


def run_on_ray(
    cells: list[Cell],
    results_dir: str | Path,
    dtype: str = "auto",
    device: str = "cpu",
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_task: int = 1,
    object_store_mb: int = 256,
) -> RayRun:
    """Steps 2-5 of the module docstring for ``cells`` (from
    :func:`bench.suite.options.parse_cells`)."""
    num_cpus = check_ray_options(device, address, num_cpus, cpus_per_task)
    check_int(object_store_mb, "object_store_mb", 80, style=CLI, why="Ray's minimum")
    if address is not None:
        check_reachable(address)  # fails in seconds, naming the address (Ray would hang)
    ray = require_ray()
    if address is None:
        log.info("starting a local Ray instance with %d CPUs", num_cpus)
        ray.init(
            address="local", num_cpus=num_cpus, include_dashboard=False,
            object_store_memory=object_store_mb * 2**20, logging_level=logging.WARNING,
        )  # fmt: skip
    else:
        ray.init(address=address, logging_level=logging.WARNING)
    try:
        if address is not None:
            _check_cluster(ray, address, device, cpus_per_task)
        return _run(ray, cells, Path(results_dir), dtype, device, cpus_per_task)
    finally:
        ray.shutdown()  # stops the local instance; with an address, only disconnects


def _run(ray, cells, results_dir: Path, dtype, device, cpus_per_task) -> RayRun:
    threads = torch_threads() or cpus_per_task
    task = ray.remote(run_group)
    resources = {"num_cpus": cpus_per_task, "num_gpus": 1 if device == "cuda" else 0}
    pending = {}
    for group in groups(cells):
        name = group_name(group[0])
        ref = task.options(name=name, **resources).remote(group, dtype, device, threads)
        pending[ref] = name
    log.info("submitted %d groups of %d cells to Ray", len(pending), len(cells))
    run = RayRun()
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        name = pending.pop(done[0])
        try:
            dicts = ray.get(done[0])
        except ray.exceptions.RayError as err:  # the task's own exception, when it raised
            cause = getattr(err, "cause", None) or err
            message = f"{type(cause).__name__}: {cause}"
            log.error("group %s failed (none of its results written): %s", name, message)
            run.failures.append((name, message))
            continue
        for data in dicts:
            result = SweepResult.from_dict(data, origin=f"Ray task {name}")
            path = result_path(results_dir, result)
            result.to_json(path)  # atomic, as the suite writes it
            run.results.append(result)
            run.paths.append(path)
        log.info("group %s: %d results written", name, len(dicts))
    run.results = ordered(run.results, cells)
    run.paths = [result_path(results_dir, r) for r in run.results]
    return run
