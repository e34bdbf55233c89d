"""Forwards that start at block L (bench.model.resume) give a full forward's values bit for bit,
on every architecture, and CE-loss quality measured that way equals the full forwards'."""

from __future__ import annotations

import pytest
import torch
from _tiny_data import tiny_handle

from bench.model.interventions import intervene
from bench.model.resume import block_inputs, start_at
from bench.model.tiny import TINY_ARCHS
from bench.training.quality import _ce, _encode, _reconstruct, ce_loss
from bench.training.transcoder import new_transcoder


def _ids(h, n=3, seq=9):
    g = torch.Generator().manual_seed(1)
    return torch.randint(3, h.model.config.vocab_size, (n, seq), generator=g)


def _handle(arch, dtype):
    h = tiny_handle(arch)
    h.model.to(dtype)
    return h


def _scaled(x):  # a change at one site, so the blocks above it see something new
    return x * 0.5 + 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_a_forward_started_at_block_l_gives_the_full_forwards_logits(arch, dtype):
    h = _handle(arch, dtype)
    ids, n = _ids(h), h.sites.n_layers
    with torch.no_grad(), block_inputs(h.sites, list(range(n))) as got:
        clean = h.model(input_ids=ids).logits
    assert sorted(got) == list(range(n))
    for layer in range(n):
        for site in ("mlp_out", "attn_out", "mlp_acts"):
            with torch.no_grad(), intervene(h.sites, replace={(site, layer): _scaled}):
                full = h.model(input_ids=ids).logits
            with (
                torch.no_grad(),
                start_at(h.sites, layer, got[layer]),
                intervene(h.sites, replace={(site, layer): _scaled}),
            ):
                resumed = h.model(input_ids=ids).logits
            assert torch.equal(resumed, full), (arch, layer, site)
        with torch.no_grad(), start_at(h.sites, layer, got[layer]):
            assert torch.equal(h.model(input_ids=ids).logits, clean)


def test_the_blocks_below_are_really_skipped_and_put_back():
    h = tiny_handle("llama")
    ids, last = _ids(h), h.sites.n_layers - 1
    ran = []
    hooks = [
        h.sites.layer_module(i).register_forward_hook(lambda *_, i=i: ran.append(i))
        for i in range(last + 1)
    ]
    with torch.no_grad(), block_inputs(h.sites, [last]) as got:
        h.model(input_ids=ids)
    ran.clear()
    with torch.no_grad(), start_at(h.sites, last, got[last]):
        h.model(input_ids=ids)
    assert ran == [last]
    ran.clear()
    with pytest.raises(RuntimeError, match="boom"), start_at(h.sites, last, got[last]):
        raise RuntimeError("boom")
    with torch.no_grad():
        h.model(input_ids=ids)
    assert ran == list(range(last + 1))  # every block back, and the input hook gone
    for hook in hooks:
        hook.remove()


def test_a_captured_input_of_another_shape_is_refused_with_both_shapes():
    h = tiny_handle("llama")
    with torch.no_grad(), block_inputs(h.sites, [1]) as got:
        h.model(input_ids=_ids(h))
    with (
        pytest.raises(ValueError, match=r"shape \(2, 9, .*captured input \(3, 9"),
        torch.no_grad(),
        start_at(h.sites, 1, got[1]),
    ):
        h.model(input_ids=_ids(h, n=2))
    with pytest.raises(ValueError, match="out of range"), start_at(h.sites, 99, got[1]):
        pass


def _full_forward_ce(h, site, read_site, saes, windows, skip_first, batch=8):
    """The CE losses computed the plain way: a whole forward per layer and batch."""
    groups = list(windows.split(batch))
    n_pred = sum(g[:, 1:].numel() for g in groups)
    clean = sum(_ce(h.model, g).item() for g in groups) / n_pred
    spliced, zero = [], []
    for layer, sae in sorted(saes.items()):
        capture = [(read_site, layer)] if read_site != site else []
        held = {}

        def splice(x, sae=sae, layer=layer, held=held):
            src = held["acts"].get((read_site, layer), x)[:, skip_first:]
            new = x.clone()
            new[:, skip_first:] = _reconstruct(sae, src, _encode(sae, src)).to(x.dtype)
            return new

        def zeroed(x):
            new = x.clone()
            new[:, skip_first:] = 0
            return new

        for fn, sink in ((splice, spliced), (zeroed, zero)):
            total = 0.0
            for g in groups:
                with (
                    torch.no_grad(),
                    intervene(h.sites, capture=capture, replace={(site, layer): fn}) as acts,
                ):
                    held["acts"] = acts
                    total += _ce(h.model, g).item()
            sink.append(total / n_pred)
    return clean, spliced, zero


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_ce_loss_quality_equals_the_full_forwards(arch, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path))
    h = _handle(arch, torch.bfloat16)
    d = h.sites.width("mlp_out")
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(0)
    saes = {
        layer: new_transcoder(h.sites.width("mlp_in"), d, 16, 4, "cpu", SAEMetadata())
        for layer in range(h.sites.n_layers)
    }
    windows = _ids(h, n=10, seq=7)
    want = _full_forward_ce(h, "mlp_out", "mlp_in", saes, windows, skip_first=1)
    got = ce_loss(h, "mlp_out", "mlp_in", saes, windows, skip_first=1, progress=False)
    assert got[0] == want[0] and got[1] == want[1] and got[2] == want[2]
    again = ce_loss(h, "mlp_out", "mlp_in", saes, windows, skip_first=1, progress=False)
    assert again == got  # CE_clean and CE_zero from the disk cache: the same numbers
