"""``atp`` and ``relp``: (u(x) − r(x)) · ∂m/∂u, one shared backward for every basis of a group.

- ``atp``: attribution patching (Nanda 2023; Kramár et al. 2024), the gradient at x;
- ``relp``: the same product with the gradient taken in the RelP replacement model
  (Jafari et al. 2025; :mod:`bench.model.relp`).

Steps per batch: (1) one gradient forward on the clean prompts capturing every site the bases
use, and (``patch`` only) one plain forward of the counterfactual prompts after the positions
they share with the clean ones (:mod:`bench.model.prefix`); (2) per basis,
encode both, pull the site gradient back to the units and accumulate the per-node products.
The differences u(x) − r(x) of step 2 do not depend on the method: where a suite runs both on
one split, the later pass takes the earlier one's (:mod:`bench.attribution.differences`) and
skips the counterfactual forward and the encodes.
On the CPU, batches run side by side, one thread each (:mod:`bench.model.replicas`), each into
its own sums, which are added in batch order: the same scores as one batch after another.
"""

from __future__ import annotations

import contextlib

import torch
from tqdm.auto import tqdm

from bench.attribution import differences
from bench.attribution.differences import Differences, Entry
from bench.attribution.nodes import NodeScores
from bench.attribution.registry import MethodArgs, register_method
from bench.bases import Basis
from bench.core.finite import check_finite
from bench.model.handle import ModelHandle
from bench.model.interventions import intervene
from bench.model.load import configure_workers
from bench.model.prefix import PrefixCache, shared_prefix
from bench.model.relp import relp_replacement
from bench.model.replicas import parallel_map
from bench.sweep.references import get_reference
from bench.sweep.units import LayerUnits, unit_values
from tasks.metric import logit_difference


def batches(split: dict[str, torch.Tensor], batch_size: int):
    n = split["clean_ids"].shape[0]
    for start in range(0, n, batch_size):
        yield {k: v[start : start + batch_size] for k, v in split.items()}


def values_of(handle: ModelHandle, basis: Basis, ids: torch.Tensor) -> dict[int, LayerUnits]:
    with torch.no_grad(), unit_values(handle, basis) as vals:
        handle.model(input_ids=ids, logits_to_keep=1)
    return dict(vals)


def _site_values(handle, keys, ids, past=None) -> dict:
    """The sites ``keys`` on a plain forward of ``ids`` (the suffix after ``past``, if given)."""
    kw = {"past_key_values": past, "use_cache": True} if past is not None else {}
    with torch.no_grad(), intervene(handle.sites, capture=keys) as acts:
        handle.model(input_ids=ids, logits_to_keep=1, **kw)
    return dict(acts)


def _counterfactual_sites(handle, keys, batch, cache, start: int) -> dict:
    """Step 1's counterfactual forward, positions ``start`` on. Before the pairs' first
    differing token x′ is x, so only the suffix runs, on the keys and values of x's own
    whole-prompt forward (``cache``; :mod:`bench.model.prefix`): the same values bit for bit."""
    if start == 0:
        return _site_values(handle, keys, batch["cf_ids"])
    past = PrefixCache.of(handle, cache, start).repeated(1)
    return _site_values(handle, keys, batch["cf_ids"][:, start:], past)  # [b, seq-start, w]


def _gradient_products(
    handle, bases: list[Basis], batch, relp: bool, accs, ref: str, means, reuse_prefix=True,
    shared: tuple[Differences, int, int] | None = None,
):  # fmt: skip
    """(u(x) − r(x)) · ∂m/∂u for every basis at once, summed over the batch, into ``accs``.

    One gradient forward captures every site a basis writes (and reads): ∂m/∂x at a site is
    shared by all bases there, and a dictionary's latents get it pulled back through their
    linear decoder, its error node gets it unchanged (the error enters the site additively).
    So neurons@mlp_out and sae@mlp_out cost one backward pass, not two. ``ref``: the reference
    (``patch`` encodes the counterfactual prompts' sites; ``mean`` reads ``means``, per basis).

    Under ``patch`` every node before the batch's first differing token equals its reference,
    so its product is exactly 0: the counterfactual forward and step 2 run from that token on
    (``reuse_prefix``; False runs every position, with the same scores bit for bit).

    ``shared``: (store, batch size, this batch's index): the differences u(x) − r(x) another
    method's pass left in the store (:mod:`bench.attribution.differences`) are taken instead of
    computed, and those computed here are offered to it; the same scores either way.
    """
    n_layers, seq = handle.sites.n_layers, batch["clean_ids"].shape[1]
    write = list(dict.fromkeys(b.site for b in bases))
    read = [s for s in dict.fromkeys(b.read_site for b in bases) if s not in write]
    grad_keys = [(s, layer) for s in write for layer in range(n_layers)]
    keys = grad_keys + [(s, layer) for s in read for layer in range(n_layers)]
    reference = get_reference(ref)
    start = 0
    if reference.from_counterfactual and reuse_prefix:
        start = shared_prefix(batch["clean_ids"], batch["cf_ids"])
    ctx = relp_replacement(handle.sites) if relp else contextlib.nullcontext()
    with ctx, intervene(handle.sites, capture=keys, grad=True) as acts:
        out = handle.model(input_ids=batch["clean_ids"], logits_to_keep=1, use_cache=start > 0)
        m = logit_difference(out.logits[:, -1], batch["clean_answer_id"], batch["cf_answer_id"])
    for site, layer in grad_keys:  # every position, though step 2 reads from ``start`` on
        check_finite(acts[(site, layer)], f"{site} layer {layer}")
    clean = {k: v.detach()[:, start:] for k, v in acts.items()}  # [batch, seq - start, width]
    entry_keys = [
        differences.key(b, ref, shared[1], shared[2], start) if shared else None for b in bases
    ]
    entries = [shared[0].take(k) if shared else None for k in entry_keys]
    cf = None
    if reference.from_counterfactual and any(e is None for e in entries):
        cf = _counterfactual_sites(handle, keys, batch, out.past_key_values, start)
    grads = torch.autograd.grad(m.sum(), [acts[k] for k in grad_keys], allow_unused=True)
    grad = {k: None if g is None else g[:, start:] for k, g in zip(grad_keys, grads, strict=True)}
    with torch.no_grad():
        for i, (basis, (acc_u, acc_e)) in enumerate(zip(bases, accs, strict=True)):
            entry = entries[i]
            if entry is None:
                entry = _differences(basis, clean, cf, reference, means[i], n_layers)
                if shared:
                    shared[0].put(entry_keys[i], basis, entry)
            for layer in range(n_layers):
                g = grad[(basis.site, layer)]
                if g is None:
                    continue
                du, de = entry[layer]
                gu = basis.pullback(layer, g, du.shape[-1])
                acc_u[layer] += _batch_sum(du.float() * gu.float(), start, seq)
                if basis.has_error:
                    acc_e[layer] += _batch_sum((de.float() * g.float()).sum(-1), start, seq)


def _differences(basis: Basis, clean, cf, reference, means, n_layers: int) -> Entry:
    """Per layer, u(x) − r(x) of ``basis``'s units ([batch, pos, n_units]) and, for a
    dictionary, its error node's difference (x − decode(u(x))) − r_err ([batch, pos, width]),
    from the captured sites ``clean`` and (``patch``) ``cf``; in the model's dtype."""
    out: Entry = []
    for layer in range(n_layers):
        read = clean[(basis.read_site, layer)]
        x = clean[(basis.site, layer)]
        u = basis.encode(layer, read)
        dec_u = basis.decode(layer, u) if basis.has_error else None
        if reference.from_counterfactual:  # patch
            u_r, dec_r = _counterfactual_units(
                basis, layer, read, cf[(basis.read_site, layer)], u, dec_u
            )
            e_r = cf[(basis.site, layer)] - dec_r if basis.has_error else None
        elif reference.needs_means:  # mean
            u_r, e_r = means[layer].units, means[layer].error
        else:  # zero
            u_r, e_r = torch.zeros_like(u), torch.zeros_like(x)
        out.append((u - u_r, (x - dec_u) - e_r if basis.has_error else None))
    return out


def _batch_sum(products: torch.Tensor, start: int, seq: int) -> torch.Tensor:
    """Products of positions ``start`` on summed over the batch, as the sum over the batch of
    every position's, the positions before ``start`` being 0: the reduction keeps the shape of
    the whole prompt, since torch sums a shorter tensor in another order.  # -> [seq, ...]"""
    if start == 0:
        return products.sum(0)
    whole = products.new_zeros((products.shape[0], seq, *products.shape[2:]))
    whole[:, start:] = products
    return whole.sum(0)


def _counterfactual_units(basis: Basis, layer: int, read, cf_read, u, dec_u):
    """(u(x′), decode(u(x′))) for a dictionary, encoding and decoding only the rows (pair,
    position) where x′'s read site differs from x's: elsewhere, as at every position before
    the pair's first differing token, they are x's own, computed once. Each row's encode and
    decode do not depend on the others, so the values are the same as coding every row."""
    if basis.identity:
        u_r = basis.encode(layer, cf_read)
        return u_r, (basis.decode(layer, u_r) if basis.has_error else None)
    rows = (cf_read != read).any(-1)  # [batch, pos]
    u_r = u.clone()  # [batch, pos, n_units]
    u_r[rows] = basis.encode(layer, cf_read[rows])  # [rows, n_units]
    if dec_u is None:
        return u_r, None
    dec_r = dec_u.clone()  # [batch, pos, width]
    dec_r[rows] = basis.decode(layer, u_r[rows])
    return u_r, dec_r


def _joint_gradient_products(
    handle: ModelHandle, bases: list[Basis], train, args: MethodArgs, relp: bool
) -> list[NodeScores]:
    """``atp``/``relp``: one gradient forward and backward per batch for every basis."""
    method, reference, batch_size = ("relp" if relp else "atp"), args.reference, args.batch_size
    n = train["clean_ids"].shape[0]
    n_layers, seq = handle.sites.n_layers, train["clean_ids"].shape[1]
    means = [
        get_reference(reference).split_means(handle, b, train["cf_ids"], batch_size) for b in bases
    ]
    accs = [
        (
            torch.zeros((n_layers, seq, b.n_units()), dtype=torch.float32, device=handle.device),
            torch.zeros((n_layers, seq), dtype=torch.float32, device=handle.device),
        )
        for b in bases
    ]
    chunks = list(batches(train, batch_size))
    what = f"attribution ({method}, {len(bases)} bases)" if len(bases) > 1 else method
    workers = configure_workers() if handle.device.type == "cpu" else 1
    store = args.shared  # differences another method's pass computed (or will use)

    def shared(i: int) -> tuple[Differences, int, int] | None:
        return (store, batch_size, i) if store is not None else None

    with tqdm(total=len(chunks), desc=what, disable=not args.progress) as bar:
        if workers == 1:
            for i, batch in enumerate(chunks):
                _gradient_products(handle, bases, batch, relp, accs, reference, means,
                                   shared=shared(i))  # fmt: skip
                bar.update()
        else:  # batches side by side, each into its own sums, added in batch order (exact)

            def one(h: ModelHandle, item) -> list[tuple[torch.Tensor, torch.Tensor]]:
                i, batch = item
                part = [(torch.zeros_like(u), torch.zeros_like(e)) for u, e in accs]
                _gradient_products(h, bases, batch, relp, part, reference, means,
                                   shared=shared(i))  # fmt: skip
                return part

            items = list(enumerate(chunks))
            for part in parallel_map(handle, one, items, workers, on_done=bar.update):
                for (acc_u, acc_e), (part_u, part_e) in zip(accs, part, strict=True):
                    acc_u += part_u
                    acc_e += part_e
    out = []
    for b, (acc_u, acc_e) in zip(bases, accs, strict=True):
        check_finite(acc_u, f"{method} scores")
        out.append(NodeScores(acc_u / n, acc_e / n if b.has_error else None, method))
    return out


@register_method("atp", joint=True)
def _atp(handle: ModelHandle, bases: list[Basis], train, args: MethodArgs) -> list[NodeScores]:
    return _joint_gradient_products(handle, bases, train, args, relp=False)


@register_method("relp", joint=True)
def _relp(handle: ModelHandle, bases: list[Basis], train, args: MethodArgs) -> list[NodeScores]:
    return _joint_gradient_products(handle, bases, train, args, relp=True)
