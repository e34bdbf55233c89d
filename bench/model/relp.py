"""The RelP replacement model: the model's forward values with LRP-style backward rules.

RelP (Jafari et al. 2025, "RelP: Faithful and Efficient Circuit Discovery via Relevance
Patching"; used on neurons by Arora et al. 2026) is attribution patching whose gradient is taken
in a *replacement model*. :func:`relp_replacement` turns the loaded model into it for the
duration of a ``with`` block, by forward hooks only, in four steps:

1. **norms** (every RMSNorm / LayerNorm, including q/k norms and the final norm): the scale
   1/rms (or 1/std) is treated as a constant; LayerNorm's centring stays linear;
2. **activations** f(x) (the MLP's act module) propagate as x·stopgrad(f(x)/x);
3. **gate products** g·u in gated MLPs (input of the down projection): half of the gradient
   to each factor, i.e. the product is replaced by ½(g·stopgrad(u) + stopgrad(g)·u);
4. **attention patterns** are constants: queries and keys are detached where they are made
   (before rotary embeddings and q/k norms), so gradients flow through values only.

Every rule has the form ``y.detach() + (r(x) - r(x).detach())`` where ``r`` is the linearised
rule, so forward values are *bit-identical* to the model's — no attention implementation is
swapped and the causal mask is untouched. Enter this context *before* any capturing
``intervene`` block so that sites see the replacement's graph.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from bench.model.sites import SiteTable


def _same_value(y: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``y`` in value, ``r``'s gradient."""
    return y.detach() + (r - r.detach())


def _ratio(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """stopgrad(y / x), zero where x is zero."""
    x = x.detach()
    safe = torch.where(x == 0, torch.ones_like(x), x)
    return torch.where(x == 0, torch.zeros_like(x), y.detach() / safe)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("RMSNorm")


def _norm_hook(module: nn.Module, args, output):
    x = args[0]
    if not (x.requires_grad or output.requires_grad):
        return None
    if isinstance(module, nn.LayerNorm):  # centring is linear; the scale is frozen
        xf = x.float()
        centred = xf - xf.mean(-1, keepdim=True)
        scale = torch.rsqrt(xf.var(-1, keepdim=True, unbiased=False) + module.eps).detach()
        r = centred * scale
        if module.weight is not None:
            r = r * module.weight
        return _same_value(output, r.to(output.dtype))
    return _same_value(output, x * _ratio(output, x))  # RMSNorm: y = x·(s·w), s frozen


def _activation_hook(_module, args, output):
    x = args[0]
    if not x.requires_grad:
        return None
    return _same_value(output, x * _ratio(output, x))


def _detach_qk(layout: str, n_heads: int):
    def hook(_module, _args, output):
        if not output.requires_grad:
            return None
        if layout == "separate":
            return output.detach()
        if layout == "gpt2_fused":  # [..., q | k | v]
            d = output.shape[-1] // 3
            return torch.cat([output[..., : 2 * d].detach(), output[..., 2 * d :]], dim=-1)
        # neox: [..., heads, (q | k | v) per head]
        shaped = output.view(*output.shape[:-1], n_heads, 3, -1)
        mask = torch.tensor([0.0, 0.0, 1.0], dtype=output.dtype, device=output.device)
        mask = mask.view(3, 1)
        return (shaped.detach() * (1 - mask) + shaped * mask).view(output.shape)

    return hook


@contextlib.contextmanager
def relp_replacement(sites: SiteTable) -> Iterator[None]:
    """Within the block, the model computes the same values with RelP's backward rules."""
    spec = sites.spec
    model = sites.model
    handles = []
    gate_values: dict[int, torch.Tensor] = {}
    up_values: dict[int, torch.Tensor] = {}
    n_heads = int(getattr(model.config, "num_attention_heads", 0) or model.config.n_head)
    try:
        # 1. norms
        for module in model.modules():
            if _is_norm(module):
                handles.append(module.register_forward_hook(_norm_hook))
        for layer in range(sites.n_layers):
            # 2. activations (the act output is also the gate factor g of a gated MLP)
            act = sites.layer_part(layer, spec.act_fn)

            def act_hook(module, args, output, layer=layer):
                new = _activation_hook(module, args, output)
                gate_values[layer] = new if new is not None else output
                return new

            handles.append(act.register_forward_hook(act_hook))
            # 3. gate product g·u at the down projection's input
            if spec.gate_up is not None:
                up = sites.layer_part(layer, spec.gate_up)

                def up_hook(_m, _a, output, layer=layer):
                    up_values[layer] = output

                def down_pre_hook(_m, args, layer=layer):
                    g, u = gate_values.pop(layer, None), up_values.pop(layer, None)
                    p = args[0]
                    if g is None or u is None or not (g.requires_grad or u.requires_grad):
                        return None
                    r = 0.5 * (g * u.detach() + g.detach() * u)
                    return (_same_value(p, r), *args[1:])

                handles.append(up.register_forward_hook(up_hook))
                down = sites.layer_part(layer, spec.mlp_down)
                handles.append(down.register_forward_pre_hook(down_pre_hook))
            # 4. attention pattern constant
            for path in spec.qk:
                qk = sites.layer_part(layer, path)
                handles.append(qk.register_forward_hook(_detach_qk(spec.qk_layout, n_heads)))
        yield
    finally:
        for h in handles:
            h.remove()
        gate_values.clear()
        up_values.clear()
