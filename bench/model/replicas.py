"""Independent forwards in parallel on the CPU: W Python threads, each with its own replica of
the model and one torch intra-op thread (:func:`parallel_map`).

Why: on a small CPU machine, one forward on two intra-op threads waits at every OpenMP barrier
for the slower thread. Pieces of work that do not depend on each other (the sweep's mask
chunks) run without any barrier as one single-threaded forward per core. Measured on 2 cores,
smollm2-135m bf16, the ioi sweep: 9.0 s on one forward at a time with 2 threads, 8.3 s on two
at a time with 1 thread each; with two other single-thread jobs on the machine 51.5 s, 24 s on
one thread, 16 s on two workers. Each row's values are the same whichever thread count
computes them, so the results are bit-identical.

Steps of :func:`parallel_map`:

1. ``workers`` is at most the number of items; one worker, or a model off the CPU, is a plain
   loop on the handle itself, in order;
2. :func:`replicas`: ``workers - 1`` handles whose modules are copies of the model's that
   share every parameter and buffer (no weights are copied) and have their own hooks, so an
   intervention on one replica never touches another's forward; built once per model;
3. each item runs on a free handle in a thread of a pool of ``workers`` threads, with torch's
   intra-op threads set to 1 in that thread;
4. the results come back in item order (an item's exception is raised in the caller, the
   remaining items cancelled); the caller's thread count is set again afterwards.
"""

from __future__ import annotations

import copy
import logging
import queue
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

from bench.model.handle import ModelHandle
from bench.model.sites import SiteTable

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_REPLICAS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> [ModelHandle]


def _replica(handle: ModelHandle) -> ModelHandle:
    """Step 2 for one replica: the modules copied, every parameter and buffer shared."""
    model = handle.model
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    copied = copy.deepcopy(model, shared)
    return ModelHandle(copied, handle.tokenizer, handle.name, handle.source,
                       SiteTable.for_model(copied))  # fmt: skip


def replicas(handle: ModelHandle, n: int) -> list[ModelHandle]:
    """``n`` handles for parallel forwards: ``handle`` itself first, then ``n - 1`` replicas
    (step 2), kept for the model's lifetime."""
    made = _REPLICAS.setdefault(handle.model, [])
    while len(made) < n - 1:
        made.append(_replica(handle))
    return [handle, *made[: n - 1]]


def parallel_map(
    handle: ModelHandle,
    fn: Callable[[ModelHandle, T], R],
    items: Sequence[T],
    workers: int,
    on_done: Callable[[], None] | None = None,
) -> list[R]:
    """``[fn(h, item) for item in items]`` with each call on some handle ``h`` of ``handle``'s
    replicas, ``workers`` at a time (module docstring). ``fn`` must use only the handle it is
    given; ``on_done`` is called once per finished item (a progress bar)."""
    workers = max(1, min(workers, len(items)))
    if workers == 1 or handle.device.type != "cpu":  # step 1
        out = []
        for item in items:
            out.append(fn(handle, item))
            if on_done is not None:
                on_done()
        return out
    free: queue.SimpleQueue[ModelHandle] = queue.SimpleQueue()
    for h in replicas(handle, workers):
        free.put(h)
    threads = torch.get_num_threads()

    def run(item: T) -> R:  # step 3
        torch.set_num_threads(1)  # this thread's intra-op threads
        h = free.get()
        try:
            return fn(h, item)
        finally:
            free.put(h)

    pool = ThreadPoolExecutor(workers, thread_name_prefix="sparsebench-worker")
    try:
        futures = [pool.submit(run, item) for item in items]
        out = []
        for future in futures:  # step 4
            out.append(future.result())
            if on_done is not None:
                on_done()
        return out
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)
