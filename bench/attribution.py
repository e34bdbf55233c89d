"""Attribution: one score per node (layer, position, unit), averaged over the train split.

Every method scores a node against its reference value r(x) (:mod:`bench.protocol`: the
pair's counterfactual u(x′) for ``patch``, the train split's per-position mean ū for ``mean``,
0 for ``zero``), the same reference the sweep ablates to. Methods (docs/METHOD.md, "Attribution"),
each computed batch by batch over the train pairs:

- ``atp``   attribution patching: (u(x) − r(x)) · ∂m/∂u at x (Nanda 2023; Kramár et al. 2024);
- ``relp``  the same product with the gradient taken in the RelP replacement model
            (Jafari et al. 2025; see :mod:`bench.relp`);
- ``ig``    integrated gradients along r(x) + α(u(x) − r(x)), one layer at a time, N midpoint
            steps stacked in one batch (Marks et al. 2024's per-submodule IG);
- ``exact`` each node set alone to its reference: m(x) − m(x | node ← r(x));
- ``random`` a seeded random score (the floor of every plot).

Each method is registered once, with its properties, by :func:`register_method` (name, whether
one set of backward passes serves every basis of a group — ``joint`` —, whether it uses
``ig_steps``, and its function); :data:`METHODS` and :data:`JOINT_METHODS` derive from
:data:`METHOD_REGISTRY`, and :func:`attribute_many` dispatches through it.

Steps of :func:`attribute` / :func:`attribute_many`: (1) check inputs; for ``mean``, the
reference means over the train split's counterfactual prompts; (2) per batch, one gradient
forward on the clean prompts capturing every site the bases use, and (``patch`` only) one
plain forward on the counterfactual prompts; (3) per basis, encode both, pull the site gradient
back to the units and accumulate the per-node products; (4) divide by the number of pairs. No
parameter gradient is ever computed (the model's parameters have requires_grad=False).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from bench.bases import Basis
from bench.interventions import intervene
from bench.models import ModelHandle
from bench.patching import LayerUnits, check_finite, metric, unit_values
from bench.protocol import REFERENCES, batch_reference, mean_units
from bench.relp import relp_replacement

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MethodArgs:
    """What a method may use besides the model, the bases and the train split."""

    batch_size: int = 32
    ig_steps: int = 10
    seed: int = 0
    progress: bool = False
    reference: str = "patch"  # r(x): "patch" | "mean" | "zero"


@dataclass(frozen=True)
class Method:
    """A registered attribution method and its properties."""

    name: str
    joint: bool  # one set of backward passes serves every basis of a group (same split)
    fn: Callable[..., list[NodeScores]]  # (handle, bases, train, MethodArgs) -> one per basis
    uses_ig_steps: bool = False  # its scores depend on MethodArgs.ig_steps


METHOD_REGISTRY: dict[str, Method] = {}  # filled by @register_method below, in this order


def register_method(name: str, *, joint: bool, uses_ig_steps: bool = False):
    """Register ``fn(handle, bases, train, args) -> list[NodeScores]`` as method ``name``
    (the lm-evaluation-harness ``register_metric`` pattern)."""

    def deco(fn: Callable[..., list[NodeScores]]) -> Callable[..., list[NodeScores]]:
        if name in METHOD_REGISTRY:
            raise ValueError(f"attribution method {name!r} is registered twice")
        METHOD_REGISTRY[name] = Method(name, joint, fn, uses_ig_steps)
        return fn

    return deco


@dataclass
class NodeScores:
    """Scores of every node; error scores only for dictionary bases."""

    units: torch.Tensor  # [layers, pos, n_units]
    error: torch.Tensor | None  # [layers, pos]
    method: str

    def flat(self, include_error: bool) -> torch.Tensor:
        """All node scores in node order: units first, then error nodes.  # [n_nodes]"""
        parts = [self.units.reshape(-1)]
        if include_error and self.error is not None:
            parts.append(self.error.reshape(-1))
        return torch.cat(parts)


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; valid: {', '.join(METHODS)}")


def check_reference(reference: str) -> None:
    if reference not in REFERENCES:
        raise ValueError(f"unknown reference {reference!r}; valid: {', '.join(REFERENCES)}")


def _batches(split: dict[str, torch.Tensor], batch_size: int):
    n = split["clean_ids"].shape[0]
    for start in range(0, n, batch_size):
        yield {k: v[start : start + batch_size] for k, v in split.items()}


def _values(handle: ModelHandle, basis: Basis, ids: torch.Tensor) -> dict[int, LayerUnits]:
    with torch.no_grad(), unit_values(handle, basis) as vals:
        handle.model(input_ids=ids, logits_to_keep=1)
    return dict(vals)


def _site_values(handle, keys, ids) -> dict:
    with torch.no_grad(), intervene(handle.sites, capture=keys) as acts:
        handle.model(input_ids=ids, logits_to_keep=1)
    return dict(acts)


def _gradient_products(handle, bases: list[Basis], batch, relp: bool, accs, ref: str, means):
    """(u(x) − r(x)) · ∂m/∂u for every basis at once, summed over the batch, into ``accs``.

    One gradient forward captures every site a basis writes (and reads): ∂m/∂x at a site is
    shared by all bases there, and a dictionary's latents get it pulled back through their
    linear decoder, its error node gets it unchanged (the error enters the site additively).
    So neurons@mlp_out and sae@mlp_out cost one backward pass, not two. ``ref``: the reference
    (``patch`` encodes the counterfactual prompts' sites; ``mean`` reads ``means``, per basis).
    """
    n_layers = handle.sites.n_layers
    write = list(dict.fromkeys(b.site for b in bases))
    read = [s for s in dict.fromkeys(b.read_site for b in bases) if s not in write]
    grad_keys = [(s, layer) for s in write for layer in range(n_layers)]
    keys = grad_keys + [(s, layer) for s in read for layer in range(n_layers)]
    ctx = relp_replacement(handle.sites) if relp else contextlib.nullcontext()
    with ctx, intervene(handle.sites, capture=keys, grad=True) as acts:
        m = metric(handle, batch["clean_ids"], batch["clean_answer_id"], batch["cf_answer_id"])
    clean = {k: v.detach() for k, v in acts.items()}
    cf = _site_values(handle, keys, batch["cf_ids"]) if ref == "patch" else None
    grads = torch.autograd.grad(m.sum(), [acts[k] for k in grad_keys], allow_unused=True)
    grad = dict(zip(grad_keys, grads, strict=True))
    with torch.no_grad():
        for i, (basis, (acc_u, acc_e)) in enumerate(zip(bases, accs, strict=True)):
            read_site = basis.read_site
            for layer in range(n_layers):
                g = grad[(basis.site, layer)]
                if g is None:
                    continue
                x = clean[(basis.site, layer)]
                check_finite(x, f"{basis.site} layer {layer}")
                u = basis.encode(layer, clean[(read_site, layer)])
                if ref == "patch":
                    u_r = basis.encode(layer, cf[(read_site, layer)])
                    e_r = cf[(basis.site, layer)] - basis.decode(layer, u_r)
                elif ref == "mean":
                    u_r, e_r = means[i][layer].units, means[i][layer].error
                else:  # zero
                    u_r, e_r = torch.zeros_like(u), torch.zeros_like(x)
                gu = basis.pullback(layer, g, u.shape[-1])
                acc_u[layer] += ((u - u_r).float() * gu.float()).sum(0)
                if basis.has_error:
                    diff = (x - basis.decode(layer, u)) - e_r
                    acc_e[layer] += (diff.float() * g.float()).sum(-1).sum(0)


def _ig(handle, basis, batch, steps: int, acc_u, acc_e, ref: str, means) -> None:
    """Per-layer integrated gradients along r + α(u − r), ``steps`` midpoint alphas stacked
    in the batch."""
    clean = _values(handle, basis, batch["clean_ids"])
    cf = batch_reference(handle, basis, batch, ref, clean, means)  # r(x), shaped like clean
    b = batch["clean_ids"].shape[0]
    alphas = (torch.arange(steps, device=handle.device) + 0.5) / steps  # [steps]
    ids = batch["clean_ids"].repeat(steps, 1)
    for layer in range(handle.sites.n_layers):
        a = alphas.view(steps, 1, 1, 1).to(clean[layer].units.dtype)
        du = clean[layer].units - cf[layer].units  # [B, pos, n]
        u = (cf[layer].units + a * du).reshape(steps * b, *du.shape[1:]).requires_grad_(True)
        e = None
        if basis.has_error:
            de = clean[layer].error - cf[layer].error
            e = (cf[layer].error + a * de).reshape(steps * b, *de.shape[1:]).requires_grad_(True)

        def fn(x, u=u, e=e, layer=layer):
            out = basis.decode(layer, u)  # neurons: u itself
            return out + e if e is not None else out

        with intervene(handle.sites, replace={(basis.site, layer): fn}):
            m = metric(handle, ids, batch["clean_answer_id"], batch["cf_answer_id"])
        grads = torch.autograd.grad(m.sum(), [u] if e is None else [u, e])
        gu = grads[0].view(steps, b, *du.shape[1:]).mean(0)
        acc_u[layer] += (du * gu).sum(0)
        if e is not None:
            ge = grads[1].view(steps, b, *de.shape[1:]).mean(0)
            acc_e[layer] += (de * ge).sum(-1).sum(0)


def _single_node_patch(basis, layer, u, clean_l: LayerUnits, cf_l: LayerUnits, pos, is_err):
    """Site replacement for ``exact``: copy g of the batch has its own node set to its
    reference (``cf_l``: r(x) of every unit and error node)."""

    def fn(x: torch.Tensor) -> torch.Tensor:  # [G*B, pos, width]
        base_u = clean_l.units.repeat(u.shape[0], 1, 1)  # [G*B, pos, n]
        out = basis.splice(layer, x, u.reshape(base_u.shape), base_u)  # neurons: u itself
        if is_err.any():  # an error node: add e(x′) − e(x) at its position
            out4 = out.view(u.shape[0], -1, *out.shape[1:]).clone()
            rows_e, pos_e = torch.arange(u.shape[0])[is_err], pos[is_err]
            d = cf_l.error - clean_l.error  # [B, pos, width]: r(e) − e
            out4[rows_e, :, pos_e] += d[:, pos_e].transpose(0, 1)
            out = out4.view_as(out)
        return out

    return fn


def exact_scores(
    handle: ModelHandle,
    basis: Basis,
    split: dict[str, torch.Tensor],
    nodes: torch.Tensor,  # [n_nodes_to_score, 3]: (layer, pos, unit); unit == n_units: error
    batch_size: int = 32,
    nodes_per_forward: int = 16,
    progress: bool = False,
    reference: str = "patch",
) -> torch.Tensor:  # [n_nodes_to_score]
    """Ground truth: m(x) − m(x | node ← r(x)) for each node alone, averaged over pairs."""
    check_reference(reference)
    n_units = basis.n_units()
    means = mean_units(handle, basis, split["cf_ids"], batch_size) if reference == "mean" else None
    total = torch.zeros(len(nodes), dtype=torch.float64)
    n = split["clean_ids"].shape[0]
    bar = tqdm(total=len(nodes) * ((n + batch_size - 1) // batch_size), disable=not progress)
    bar.set_description("exact")
    for batch in _batches(split, batch_size):
        clean = _values(handle, basis, batch["clean_ids"])
        cf = batch_reference(handle, basis, batch, reference, clean, means)  # r(x)
        args = batch["clean_ids"], batch["clean_answer_id"], batch["cf_answer_id"]
        with torch.no_grad():
            base = metric(handle, *args)  # [B]
        for layer in nodes[:, 0].unique().tolist():
            idx = (nodes[:, 0] == layer).nonzero()[:, 0]
            for chunk in idx.split(nodes_per_forward):
                g = len(chunk)
                pos, unit = nodes[chunk, 1], nodes[chunk, 2]
                is_err = unit == n_units
                # patched units: [G, B, pos, n]; each copy has one node set to its x' value
                u = clean[layer].units.unsqueeze(0).repeat(g, 1, 1, 1)
                rows = torch.arange(g)[~is_err]
                cf_u = cf[layer].units[:, pos[~is_err], unit[~is_err]].T  # [g', B]
                u[rows, :, pos[~is_err], unit[~is_err]] = cf_u

                fn = _single_node_patch(basis, layer, u, clean[layer], cf[layer], pos, is_err)
                with torch.no_grad(), intervene(handle.sites, replace={(basis.site, layer): fn}):
                    patched = metric(handle, args[0].repeat(g, 1), args[1], args[2])
                total[chunk] += (base.repeat(g) - patched).view(g, -1).sum(1).double().cpu()
                bar.update(g)
    bar.close()
    return (total / n).float()


def attribute(
    handle: ModelHandle,
    basis: Basis,
    train: dict[str, torch.Tensor],
    method: str,
    batch_size: int = 32,
    ig_steps: int = 10,
    seed: int = 0,
    progress: bool = False,
    reference: str = "patch",
) -> NodeScores:
    """Scores for every node of ``basis`` against ``reference``, averaged over ``train``."""
    return attribute_many(
        handle, [basis], train, method, batch_size, ig_steps, seed, progress, reference
    )[0]


def attribute_many(
    handle: ModelHandle,
    bases: list[Basis],
    train: dict[str, torch.Tensor],
    method: str,
    batch_size: int = 32,
    ig_steps: int = 10,
    seed: int = 0,
    progress: bool = False,
    reference: str = "patch",
) -> list[NodeScores]:
    """Scores for several bases on one split; ``atp``/``relp`` share one backward per batch."""
    check_method(method)
    check_reference(reference)
    if train["clean_ids"].shape[0] == 0:
        raise ValueError(
            "cannot attribute on an empty train split; build the task with n_train > 0"
        )
    args = MethodArgs(batch_size, ig_steps, seed, progress, reference)
    return METHOD_REGISTRY[method].fn(handle, bases, train, args)


def _joint_gradient_products(
    handle: ModelHandle, bases: list[Basis], train, args: MethodArgs, relp: bool
) -> list[NodeScores]:
    """``atp``/``relp``: one gradient forward and backward per batch for every basis."""
    method, reference, batch_size = ("relp" if relp else "atp"), args.reference, args.batch_size
    n = train["clean_ids"].shape[0]
    n_layers, seq = handle.sites.n_layers, train["clean_ids"].shape[1]
    means = [
        mean_units(handle, b, train["cf_ids"], batch_size) if reference == "mean" else None
        for b in bases
    ]
    accs = [
        (
            torch.zeros((n_layers, seq, b.n_units()), dtype=torch.float32, device=handle.device),
            torch.zeros((n_layers, seq), dtype=torch.float32, device=handle.device),
        )
        for b in bases
    ]
    batches = list(_batches(train, batch_size))
    what = f"attribution ({method}, {len(bases)} bases)" if len(bases) > 1 else method
    for batch in tqdm(batches, desc=what, disable=not args.progress):
        _gradient_products(handle, bases, batch, relp, accs, reference, means)
    out = []
    for b, (acc_u, acc_e) in zip(bases, accs, strict=True):
        check_finite(acc_u, f"{method} scores")
        out.append(NodeScores(acc_u / n, acc_e / n if b.has_error else None, method))
    return out


# -- the registry, in the order methods are listed ------------------------------------------------


@register_method("atp", joint=True)
def _atp(handle: ModelHandle, bases: list[Basis], train, args: MethodArgs) -> list[NodeScores]:
    return _joint_gradient_products(handle, bases, train, args, relp=False)


@register_method("ig", joint=False, uses_ig_steps=True)
def _ig_scores(
    handle: ModelHandle, bases: list[Basis], train, args: MethodArgs
) -> list[NodeScores]:
    out = []
    for basis in bases:  # one basis at a time
        n = train["clean_ids"].shape[0]
        n_layers, seq = handle.sites.n_layers, train["clean_ids"].shape[1]
        shape = (n_layers, seq, basis.n_units())
        acc_u = torch.zeros(shape, dtype=torch.float32, device=handle.device)
        acc_e = torch.zeros((n_layers, seq), dtype=torch.float32, device=handle.device)
        means = (
            mean_units(handle, basis, train["cf_ids"], args.batch_size)
            if args.reference == "mean"
            else None
        )
        batches = list(_batches(train, args.batch_size))
        for batch in tqdm(batches, desc="ig", disable=not args.progress):
            _ig(handle, basis, batch, args.ig_steps, acc_u, acc_e, args.reference, means)
        check_finite(acc_u, "ig scores")
        out.append(NodeScores(acc_u / n, acc_e / n if basis.has_error else None, "ig"))
    return out


@register_method("relp", joint=True)
def _relp(handle: ModelHandle, bases: list[Basis], train, args: MethodArgs) -> list[NodeScores]:
    return _joint_gradient_products(handle, bases, train, args, relp=True)


@register_method("exact", joint=False)
def _exact(handle: ModelHandle, bases: list[Basis], train, args: MethodArgs) -> list[NodeScores]:
    out = []
    for basis in bases:  # one basis at a time
        n_layers, seq = handle.sites.n_layers, train["clean_ids"].shape[1]
        n_units = basis.n_units()
        sizes = (n_layers, seq, n_units + basis.has_error)
        grid = torch.cartesian_prod(*(torch.arange(s) for s in sizes))
        flat = exact_scores(
            handle, basis, train, grid, args.batch_size, progress=args.progress,
            reference=args.reference,
        )  # fmt: skip
        full = flat.view(n_layers, seq, n_units + basis.has_error)
        err = full[..., -1].contiguous() if basis.has_error else None
        out.append(NodeScores(full[..., :n_units].contiguous(), err, "exact"))
    return out


@register_method("random", joint=False)
def _random(handle: ModelHandle, bases: list[Basis], train, args: MethodArgs) -> list[NodeScores]:
    out = []
    for basis in bases:  # each basis from its own generator seeded with args.seed
        n_layers, seq = handle.sites.n_layers, train["clean_ids"].shape[1]
        shape = (n_layers, seq, basis.n_units())
        gen = torch.Generator().manual_seed(args.seed)
        err = torch.rand((n_layers, seq), generator=gen) if basis.has_error else None
        out.append(NodeScores(torch.rand(shape, generator=gen), err, "random"))
    return out


METHODS = tuple(METHOD_REGISTRY)  # ("atp", "ig", "relp", "exact", "random")
JOINT_METHODS = tuple(name for name, m in METHOD_REGISTRY.items() if m.joint)  # ("atp", "relp")
