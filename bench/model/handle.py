"""ModelHandle: a loaded model, its tokenizer, name, device, dtype and site table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bench.model.sites import SiteTable


def _contiguous(module, args):
    return (args[0].contiguous(), *args[1:])


def _contiguous_head_input(model) -> None:
    """Give the output head a contiguous input (values unchanged; once per model).

    With ``logits_to_keep=1`` transformers slices ``hidden[:, -1:, :]``, a strided view; torch
    then multiplies it with the tied ``[vocab, d_model]`` head as a batched matmul over an
    expanded weight, copying the weight once per sequence. On CPU that took 21% of a
    smollm2-135m forward in fp32 and 80% in bf16; a contiguous input makes it one plain matmul.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or getattr(head, "_sparsebench_contiguous", False):
        return
    head.register_forward_pre_hook(_contiguous)
    head._sparsebench_contiguous = True


@dataclass
class ModelHandle:
    """A loaded model: ``.model`` (eval mode, no parameter grads), ``.tokenizer``, ``.sites``."""

    model: Any
    tokenizer: Any
    name: str
    source: str  # where it came from: registry entry, path or hub id
    sites: SiteTable

    def __post_init__(self) -> None:
        _contiguous_head_input(self.model)

    @property
    def arch(self) -> str:
        return self.sites.arch

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def synchronize(self) -> None:
        """Wait for the model's device to finish queued work (CUDA runs asynchronously: a
        wall-clock timing must synchronize before it reads the clock); a no-op on the CPU."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
