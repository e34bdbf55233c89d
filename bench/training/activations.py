"""The activations local dictionaries train on: collected once into memory, then replayed in
seeded epochs (step 4 of :mod:`bench.training`).

1. :func:`collect`: the training windows run through the model a group at a time, under no_grad
   (groups side by side on the CPU, one thread each: :mod:`bench.model.replicas`), capturing
   the read and the write site of every requested layer with
   ``bench.model.interventions.intervene``; the first ``skip_first`` positions of each window
   are dropped (see ``TrainConfig``) and the rest stored as bfloat16 rows, ``[n_tokens, d]`` per
   site and layer (smollm2-135m: 30 layers x 131k tokens x 576 x 2 B = 4.5 GB for an SAE);
2. :func:`batches`: batch ``i`` of epoch ``e`` is rows ``perm_e[i*B:(i+1)*B]`` with ``perm_e`` a
   permutation seeded by ``seed + e``: the stream is a pure function of the batch index, so a
   resumed run sees exactly the batches it would have seen. A batch is float32 ``[B, d]`` for an
   SAE, and ``[B, d_in + d_out]`` (input, then target) for a transcoder.

Collecting once and replaying costs one forward per training token instead of one per step:
on 2 CPU cores a forward costs ~0.7 ms per token against ~2 ms per token for 30 SAE steps, so a
second epoch costs only the SAE steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from tqdm.auto import tqdm

from bench.model.handle import ModelHandle
from bench.model.interventions import intervene
from bench.model.load import configure_workers
from bench.model.replicas import parallel_map
from bench.model.sites import SiteTable

Buffers = dict[str, tuple[torch.Tensor, torch.Tensor | None]]  # hook -> ([N, d_in], [N, d_out])


@torch.no_grad()
def collect(
    model,  # the model the forwards run on (possibly a bf16 copy)
    read_site: str,
    write_site: str,
    layers: list[int],
    windows: torch.Tensor,  # [n, ctx] training windows, in the order they are used
    skip_first: int,
    windows_per_forward: int = 16,
    progress: bool = True,
) -> Buffers:
    """Step 1: ``{hook_name(write_site, layer): (read rows, write rows or None)}``, bfloat16."""
    sites = SiteTable.for_model(model)
    pairs = read_site != write_site
    keys = sorted({(s, layer) for layer in layers for s in (read_site, write_site)})
    n, ctx = windows.shape
    used = ctx - skip_first
    out = {key: torch.empty(n * used, sites.width(key[0]), dtype=torch.bfloat16) for key in keys}
    device = next(model.parameters()).device
    handle = ModelHandle(model, None, "", "", sites)  # for replicas: the forwards' model

    def one(h: ModelHandle, start: int) -> None:  # rows of distinct windows: no two overlap
        group = windows[start : start + windows_per_forward].to(device)  # [g, ctx]
        with torch.no_grad(), intervene(h.sites, capture=keys) as got:
            h.model.base_model(input_ids=group)
        rows = slice(start * used, (start + len(group)) * used)
        for key in keys:
            a = got[key][:, skip_first:]  # [g, used, d]
            out[key][rows] = a.reshape(-1, a.shape[-1]).to("cpu", torch.bfloat16)
        bar.update(len(group) * used)

    bar = tqdm(total=n * used, desc="collecting activations", unit="tok", disable=not progress)
    with bar:  # window groups side by side on the CPU (bench.model.replicas)
        parallel_map(handle, one, range(0, n, windows_per_forward), configure_workers())
    return {
        sites.hook_name(write_site, layer): (
            out[(read_site, layer)],
            out[(write_site, layer)] if pairs else None,
        )
        for layer in layers
    }


def _rows(read: torch.Tensor, write: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor:
    x = read[idx].float()  # [B, d_in]
    return x if write is None else torch.cat([x, write[idx].float()], dim=-1)


def batches(
    buffers: Buffers,
    batch_tokens: int,
    seed: int,
    start: int = 0,  # index of the first batch to yield
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Step 2: ``{hook: [batch_tokens, d]}`` float32 batches, forever, batch ``start`` first."""
    n = next(iter(buffers.values()))[0].shape[0]
    per_epoch = n // batch_tokens
    if per_epoch == 0:
        raise ValueError(f"{n} collected tokens are fewer than one batch of {batch_tokens}")
    index = start
    perm: tuple[int, torch.Tensor] | None = None
    while True:
        epoch, i = divmod(index, per_epoch)
        if perm is None or perm[0] != epoch:
            perm = (epoch, torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)))
        idx = perm[1][i * batch_tokens : (i + 1) * batch_tokens]
        if on_batch is not None:
            on_batch(index)
        yield {hook: _rows(read, write, idx) for hook, (read, write) in buffers.items()}
        index += 1


SCALE_THREADS = 2  # intra-op threads of mean_and_scale's reductions, whatever the process uses


def mean_and_scale(read: torch.Tensor, sample: int = 65_536) -> tuple[torch.Tensor, float]:
    """(mean row, sqrt(d) / mean row norm) of the first ``sample`` rows: sae-lens's
    ``expected_average_only_in`` scaling factor, and the mean that initializes ``b_dec``.

    Reduced on :data:`SCALE_THREADS` intra-op threads, then the process's count is restored:
    ATen splits a reduction over more than 32,768 values into one chunk per thread, so the mean
    norm of 65,536 rows summed on 1 thread differs in its last bits from 2 threads, and this
    factor scales every training row. Before, a busy machine (1 thread) trained other SAEs than
    an idle one (2 threads): every local-SAE curve of the default suite moved, by up to 0.036.
    Two is the count the SAEs behind the committed references had. Call it with no other
    torch work running in this process (the threads setting is the process's)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(SCALE_THREADS)
    try:
        x = read[:sample].float()  # [s, d]
        return x.mean(0), float(x.shape[-1] ** 0.5 / x.norm(dim=-1).mean())
    finally:
        torch.set_num_threads(threads)
