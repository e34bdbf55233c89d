"""The activation stream local SAEs train on: every layer's site from one forward per window group.

:func:`activation_batches` (step 4 of :mod:`bench.training`):

1. windows are visited in a seeded random order per epoch (a pure function of the position in
   the stream, so a resumed run sees exactly the batches it would have seen);
2. a chunk of ``windows_per_forward * forwards_per_chunk`` windows runs through the model, a
   group at a time, under no_grad, capturing the site on every requested layer with
   ``bench.interventions.intervene``; the first ``skip_first`` positions of each window are
   dropped (see ``TrainConfig``);
3. the chunk's tokens are flattened to ``[tokens, d]`` (float32), shuffled with a generator seeded
   by the chunk index, and cut into batches of ``batch_tokens``; batch ``i`` of the stream is
   always the same tensor, so the stream can start at any batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from bench.interventions import intervene
from bench.sites import SiteTable


def activation_batches(
    model,  # the model the forwards run on (possibly a bf16 copy)
    site: str,
    layers: list[int],
    windows: torch.Tensor,  # [n, ctx] training windows
    cfg: Any,  # bench.training.config.TrainConfig
    start: int = 0,  # index of the first batch to yield
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield ``{hook_name: [batch_tokens, d]}`` batches (float32), batch ``start`` first."""
    sites = SiteTable.for_model(model)
    keys = [(site, layer) for layer in layers]
    hooks = [sites.hook_name(site, layer) for layer in layers]
    n, ctx = windows.shape
    used = ctx - cfg.skip_first  # tokens per window that train
    per_chunk = cfg.windows_per_forward * cfg.forwards_per_chunk
    per_batch = cfg.batch_tokens
    n_batches = per_chunk * used // per_batch
    if n_batches == 0:
        raise ValueError(f"a chunk of {per_chunk * used} tokens is smaller than a batch")
    device = next(model.parameters()).device
    perms: dict[int, torch.Tensor] = {}  # epoch -> window order

    def window(i: int) -> torch.Tensor:  # [ctx]
        epoch, pos = divmod(i, n)
        if epoch not in perms:
            perms.clear()
            perms[epoch] = torch.randperm(
                n, generator=torch.Generator().manual_seed(cfg.seed + epoch)
            )
        return windows[perms[epoch][pos]]

    index = start
    while True:
        chunk, first = divmod(index, n_batches)
        span = range(chunk * per_chunk, (chunk + 1) * per_chunk)
        ids_t = torch.stack([window(i) for i in span]).to(device)  # [per_chunk, ctx]
        acts: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
        with torch.no_grad():
            for group in ids_t.split(cfg.windows_per_forward):
                with intervene(sites, capture=keys) as got:
                    model.base_model(input_ids=group)
                for key, hook in zip(keys, hooks, strict=True):
                    a = got[key][:, cfg.skip_first :]  # [windows, used, d]
                    acts[hook].append(a.reshape(-1, a.shape[-1]).float())
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + chunk)
        order = torch.randperm(per_chunk * used, generator=gen)
        flat = {h: torch.cat(a)[order] for h, a in acts.items()}  # [chunk tokens, d]
        for j in range(first, n_batches):
            if on_batch is not None:
                on_batch(index)
            yield {h: a[j * per_batch : (j + 1) * per_batch] for h, a in flat.items()}
            index += 1
