"""Local SAE cache entries (step 1 of :mod:`bench.training`): keys, and whether an entry is
finished and intact.

1. :func:`model_key`: model name + weight fingerprint; :func:`entry_name`: site, layers, the
   config fields that change the SAEs, corpus sha256, sae-lens version;
2. :func:`finished_entry`: a finished entry whose files match the sha256s of its
   ``manifest.json`` is served as is; a corrupt one is logged (:func:`entry_problem`) and
   trained again; :func:`final_problem` checks a finished training run before it is installed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict
from pathlib import Path

import torch

from bench.core.cache import atomic_path, cache_dir, cache_root, files_sha256, verify_files
from bench.training.config import TrainConfig
from bench.training.corpus import Corpus

log = logging.getLogger(__name__)

DONE = "DONE"
NOT_IN_KEY = ("n_checkpoints", "max_buffer_gb")  # settings that do not change the SAEs


def sae_lens_version() -> str:
    import sae_lens

    return str(sae_lens.__version__)


def model_key(model) -> str:
    """``<name>-<fingerprint>``: the model's directory name and a hash of its weights.

    Weights are hashed as bfloat16 (the training forwards' dtype), so the same model loaded in
    float32 or bfloat16 finds the same SAEs."""
    raw = str(getattr(model.config, "_name_or_path", "") or model.config.model_type)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(raw).name or model.config.model_type)
    h = hashlib.sha256(model.config.model_type.encode())
    for pname, p in sorted(model.named_parameters()):
        flat = p.detach().reshape(-1).to("cpu", torch.bfloat16).float()
        h.update(f"{pname}{tuple(p.shape)}".encode())
        h.update(torch.cat([flat[:1024], flat[-1024:]]).numpy().tobytes())
    return f"{name}-{h.hexdigest()[:12]}"


def entry_name(site: str, layers: list[int], cfg: TrainConfig, corpus_sha: str) -> str:
    settings = {k: v for k, v in asdict(cfg).items() if k not in NOT_IN_KEY}
    data = {"site": site, "layers": layers, "cfg": settings, "corpus": corpus_sha}
    data["sae_lens"] = sae_lens_version()
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]
    ver = sae_lens_version().replace(".", "")
    kind = "" if cfg.basis == "sae" else f"{cfg.basis}-"
    size = f"w{cfg.width}-k{cfg.k}-t{cfg.n_tokens}x{cfg.epochs}"
    return f"{kind}{site}-{size}-c{corpus_sha[:8]}-sl{ver}-{digest}"


def entry_dirs(model, site: str, layers: list[int], cfg: TrainConfig, corpus: Corpus):
    """(finished entry dir, partial-run dir) for this model, site, layers, config and corpus;
    the partial dir is created only when training starts (a finished entry leaves none)."""
    key, name = model_key(model), entry_name(site, layers, cfg, corpus.sha256)
    return cache_dir("saes", key) / name, cache_root() / "saes" / ".partial" / key / name


def is_finished(entry: Path) -> bool:
    return (entry / "manifest.json").exists()


def entry_problem(entry: Path) -> str | None:
    """Why a finished entry cannot be trusted (unreadable manifest, a file missing or not
    matching its sha256), or None. An entry from before checksums were stored gets them now."""
    manifest_path = entry / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        return f"manifest.json is unreadable ({err})"
    if "files" not in manifest:  # written before checksums: record them, from now on verified
        manifest["files"] = files_sha256(entry, exclude=("manifest.json",))
        with atomic_path(manifest_path, kind="file") as tmp:
            tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        log.info("recorded file checksums of local SAE entry %s", entry)
        return None
    return verify_files(entry, manifest["files"])


def finished_entry(entry: Path) -> bool:
    """Whether ``entry`` is finished and intact; a corrupt one is logged (and then rebuilt)."""
    if not is_finished(entry):
        return False
    if (problem := entry_problem(entry)) is None:
        return True
    log.warning("local SAE cache entry %s is corrupt (%s); training it again", entry, problem)
    return False


def final_problem(final: Path) -> str | None:
    try:
        files = json.loads((final / DONE).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return "no file checksums in its DONE marker"
    return verify_files(final, files)
