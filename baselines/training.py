"""Local SAEs: trained with sae-lens for models that have no reachable pretrained release.

:func:`train_local` (``python -m baselines train``, or on first use of ``dictionary="local"``):

0. range-check the :class:`TrainConfig` (:func:`check_config`: k ≤ width, at least one batch of
   training tokens, ...) before anything is trained or cached;
1. key the cache entry: model (name + weight fingerprint, :func:`model_key`), site, layers, the
   :class:`TrainConfig` (width, k, tokens, ...), the corpus sha256 and the sae-lens version; a
   finished entry whose files match the sha256s in its ``manifest.json`` is returned as is (a
   corrupt one is logged and trained again; :func:`entry_problem`);
2. corpus windows (:mod:`baselines.corpus`): training windows and held-out windows;
3. one TopK SAE per layer (sae-lens ``TopKTrainingSAE``; activations scaled to norm sqrt(d_in)
   during training, ``expected_average_only_in``, folded into the weights at the end);
4. sae-lens's ``MultiSAETrainer`` (no wandb) fed by :mod:`baselines.activations`: one forward of the
   model per group of windows (under no_grad, by default a bfloat16 copy of the model — 2x faster
   on CPU, activations within 0.3% of float32) captures every layer's site through
   ``bench.interventions.intervene``; a chunk of forwards is flattened to ``[tokens, d]``,
   shuffled (seeded by chunk index) and cut into batches, so the stream is a pure function of the
   batch index; sae-lens's ``PrefetchingIterator`` runs the forwards in a producer thread while
   the SAEs train, one intra-op thread each (two threads per op on 2 cores oversubscribe them,
   several times slower when anything else runs);
5. checkpoints (sae-lens's own: weights, optimizer, scheduler, scaler, sparsity state) go to
   ``cache_dir("saes", ".partial", ...)``; a ``DONE`` marker is written after a checkpoint is
   complete, so an interrupted run resumes from the last complete one (the stream restarts at
   the matching batch) and older ones are deleted;
6. the trained SAEs are saved in sae-lens's inference format (``save_inference_model``), their
   quality measured on held-out windows (:mod:`baselines.quality`), and the entry
   ``<hook_name>/`` dirs + ``quality.json`` + ``manifest.json`` (with every file's sha256)
   renamed into place atomically (``bench.cache.atomic_path``): a partial run is never visible
   as a finished entry.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from baselines.activations import activation_batches
from baselines.corpus import Corpus, wikipedia_corpus
from bench.cache import atomic_path, cache_dir, files_sha256, verify_files
from bench.validate import API, FLOAT_DTYPES, BadInputError, check_int, check_positive_float, label

log = logging.getLogger(__name__)

DONE = "DONE"
NOT_IN_KEY = ("n_checkpoints", "prefetch_batches")  # settings that do not change the SAEs


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of local SAEs. The defaults train all 30 layers of smollm2-135m (d_model
    576) on 2 CPU cores in about 6 minutes (+2 for quality): the SAE steps (~50 ms per layer
    per batch on one core) dominate the bf16 forwards (~1.4 s per 1024 tokens on the other).
    Halving the tokens from 131,072 (14 min) cost little: mean FVU 0.335 -> 0.368, CE loss
    recovered 0.717 -> 0.701, dead latents 4.7% -> 6.0%.

    ``skip_first``: a window's first position is left out of training and of every quality
    metric. Models without a BOS token write their attention-sink "massive activations" there
    (smollm2-135m's mlp_out at position 0 has norm ~22,000 at layer 11 and ~14,000 at layer 28,
    against ~30-500 elsewhere: >99% of the variance); kept, they dominate the MSE and the
    activation-norm estimate, and most latents die. In sweeps the SAE still encodes position 0;
    what it misses there is in that position's error node."""

    width: int = 2048  # latents per layer
    k: int = 32  # TopK
    n_tokens: int = 65_536  # training tokens, each used by every layer's SAE
    ctx: int = 65  # tokens per window
    skip_first: int = 1  # leading positions left out of training and quality (see below)
    batch_tokens: int = 512  # SAE batch
    windows_per_forward: int = 16
    forwards_per_chunk: int = 4  # a chunk's tokens are shuffled together (64 x 64 = 8 batches)
    lr: float = 3e-3
    warmup_frac: float = 0.05
    decay_frac: float = 0.2
    dead_tokens: int = 16_384  # a latent unfired for this many tokens is dead (TopK aux loss)
    n_norm_batches: int = 4  # batches for the activation norm estimate
    n_checkpoints: int = 4
    prefetch_batches: int = 16  # activation batches computed ahead, in a producer thread
    forward_dtype: str = "bfloat16"
    autocast: bool = True  # bf16 autocast in SAE steps (sae-lens SAETrainerConfig.autocast)
    seed: int = 0
    eval_tokens: int = 4096  # held-out tokens for L0, FVU, dead fraction
    ce_tokens: int = 1024  # held-out tokens for CE-loss recovered

    @property
    def n_steps(self) -> int:
        return self.n_tokens // self.batch_tokens


# How ``python -m baselines train`` spells the fields it sets.
CLI_NAMES = {
    "width": "--width",
    "k": "--k",
    "n_tokens": "--tokens",
    "ctx": "--ctx",
    "batch_tokens": "--batch",
    "lr": "--lr",
}


def check_config(
    cfg: TrainConfig, names: dict[str, str] | None = None, max_ctx: int | None = None
) -> None:
    """Range-check ``cfg`` before anything trains; ``names``: how the entry point spells each
    field (default ``TrainConfig.<field>``); ``max_ctx``: the model's positions."""
    names = names or {}

    def name(field: str) -> str:
        return names.get(field, f"TrainConfig.{field}")

    def at_least(field: str, minimum: int, maximum: int | None = None, why: str = "") -> None:
        check_int(getattr(cfg, field), name(field), minimum, maximum, API, why)

    at_least("width", 1)
    at_least(
        "k", 1, cfg.width if isinstance(cfg.width, int) else None, f"the width, {name('width')}"
    )
    at_least("skip_first", 0)
    at_least("ctx", cfg.skip_first + 1, max_ctx, "a window needs a position to train on"
             + (f" and must fit the model's {max_ctx} positions" if max_ctx else ""))  # fmt: skip
    for field in ("windows_per_forward", "forwards_per_chunk", "n_norm_batches",
                  "prefetch_batches", "dead_tokens", "eval_tokens", "ce_tokens"):  # fmt: skip
        at_least(field, 1)
    at_least("n_checkpoints", 0)
    at_least("seed", 0)
    chunk = cfg.windows_per_forward * cfg.forwards_per_chunk * (cfg.ctx - cfg.skip_first)
    at_least("batch_tokens", 1, chunk, f"the {chunk} training tokens of one chunk of windows")
    few = f"too few training tokens: at least one SAE batch, {name('batch_tokens')}"
    at_least("n_tokens", cfg.batch_tokens, None, few)
    check_positive_float(cfg.lr, name("lr"))
    for field in ("warmup_frac", "decay_frac"):
        value = getattr(cfg, field)
        if not isinstance(value, int | float) or not 0 <= value <= 1:
            raise BadInputError(f"{label(name(field), value)}: must be a number in [0, 1]")
    if cfg.forward_dtype not in FLOAT_DTYPES:
        raise BadInputError(
            f"{label(name('forward_dtype'), cfg.forward_dtype)}: valid: {', '.join(FLOAT_DTYPES)}"
        )


def _max_positions(model) -> int | None:
    config = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


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
    return f"{site}-w{cfg.width}-k{cfg.k}-c{corpus_sha[:8]}-sl{ver}-{digest}"


def entry_dirs(model, site: str, layers: list[int], cfg: TrainConfig, corpus: Corpus):
    """(finished entry dir, partial-run dir) for this model, site, layers, config and corpus."""
    key, name = model_key(model), entry_name(site, layers, cfg, corpus.sha256)
    return cache_dir("saes", key) / name, cache_dir("saes", ".partial", key) / name


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


# -- steps 3-5: training with resumable checkpoints -------------------------------------------


def _new_saes(handle, site: str, layers: list[int], cfg: TrainConfig) -> dict[str, Any]:
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(cfg.seed)
    saes = {}
    for layer in layers:
        hook = handle.sites.hook_name(site, layer)
        meta = SAEMetadata(
            model_name=handle.name,
            hook_name=hook,
            context_size=cfg.ctx,
            prepend_bos=bool(handle.tokenizer("").input_ids),
            sparsebench_site=site,
            sparsebench_layer=layer,
        )
        sae_cfg = TopKTrainingSAEConfig(
            d_in=handle.sites.width(site),
            d_sae=cfg.width,
            k=cfg.k,
            dtype="float32",
            device=str(handle.device),
            normalize_activations="expected_average_only_in",
            metadata=meta,
        )
        saes[hook] = TopKTrainingSAE(sae_cfg)
    return saes


def _latest_checkpoint(partial: Path) -> Path | None:
    done = [p.parent for p in (partial / "checkpoints").glob(f"*/{DONE}")]
    return max(done, key=lambda p: int(p.name)) if done else None


def _trainer_config(handle, cfg: TrainConfig, partial: Path):
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    steps = cfg.n_steps
    return SAETrainerConfig(
        total_training_samples=steps * cfg.batch_tokens,
        train_batch_size_samples=cfg.batch_tokens,
        lr=cfg.lr,
        lr_end=cfg.lr,
        lr_warm_up_steps=int(cfg.warmup_frac * steps),
        lr_decay_steps=int(cfg.decay_frac * steps),
        device=str(handle.device),
        autocast=cfg.autocast,
        dead_feature_window=max(1, cfg.dead_tokens // cfg.batch_tokens),
        feature_sampling_window=max(1, steps),
        n_checkpoints=cfg.n_checkpoints,
        checkpoint_path=str(partial / "checkpoints"),
        save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=False),
        n_batches_for_norm_estimate=cfg.n_norm_batches,
    )


def _fit(handle, site, layers, cfg: TrainConfig, train_windows, partial: Path, on_batch, progress):
    """Steps 3-5: train (resuming from the last complete checkpoint); the folded SAEs."""
    from sae_lens.training.multi_sae_trainer import MultiSAETrainer
    from sae_lens.training.prefetch import PrefetchingIterator

    saes = _new_saes(handle, site, layers, cfg)
    resume = _latest_checkpoint(partial)

    def mark_done(checkpoint_path: Path | None) -> None:
        if checkpoint_path is None:
            return
        (checkpoint_path / DONE).write_text("complete\n")
        for old in (partial / "checkpoints").iterdir():
            if old != checkpoint_path:
                shutil.rmtree(old, ignore_errors=True)

    fwd_model = handle.model
    dtype = getattr(torch, cfg.forward_dtype)
    if dtype != handle.dtype:
        fwd_model = copy.deepcopy(handle.model).to(dtype)
    trainer_cfg = _trainer_config(handle, cfg, partial)
    holder: dict[str, Any] = {}

    def stream() -> Iterator[dict[str, torch.Tensor]]:  # started lazily, after any resume
        start = 0 if resume is None else cfg.n_norm_batches + holder["done"] // cfg.batch_tokens
        total = cfg.n_norm_batches + cfg.n_steps
        desc = f"{site} batches ({len(layers)} layers per forward)"
        batches = activation_batches(fwd_model, site, layers, train_windows, cfg, start, on_batch)
        with tqdm(total=total, initial=start, desc=desc, disable=not progress) as bar:
            for batch in itertools.islice(batches, total - start):  # what fit() will consume
                yield batch
                bar.update(1)

    trainer = MultiSAETrainer(
        trainer_cfg, saes, {h: h for h in saes}, iter(()), save_checkpoint_fn=mark_done
    )
    if resume is not None:
        log.info("resuming local SAE training from %s", resume)
        try:
            trainer.load_checkpoint(resume)
        except Exception as err:  # a damaged checkpoint: start over rather than fail every run
            log.warning("checkpoint %s is unreadable (%s); training from the start", resume, err)
            shutil.rmtree(partial / "checkpoints", ignore_errors=True)
            return _fit(handle, site, layers, cfg, train_windows, partial, on_batch, progress)
        holder["done"] = trainer.n_training_samples
        for t in (trainer, *trainer.trainers.values()):
            t.checkpoint_thresholds = [
                c for c in t.checkpoint_thresholds if c >= trainer.n_training_samples
            ]
    # The model forwards run in a producer thread while the SAEs train (sae-lens's prefetcher);
    # one intra-op thread each, so the two overlap on two cores instead of oversubscribing.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    trainer.data_provider = PrefetchingIterator(stream(), prefetch=cfg.prefetch_batches)
    try:
        trained = trainer.fit()
    finally:
        trainer.data_provider.close()
        torch.set_num_threads(threads)
    return trained, (None if resume is None else int(resume.name))


def train_local(
    handle,
    site: str = "mlp_out",
    layers: list[int] | None = None,
    cfg: TrainConfig | None = None,
    corpus: Corpus | None = None,
    on_batch: Callable[[int], None] | None = None,
    progress: bool = True,
    names: dict[str, str] | None = None,
) -> Path:
    """Train (or find) local SAEs; the finished entry directory (module docstring).
    ``names``: how the caller spells the config's fields in messages (:func:`check_config`)."""
    from baselines.quality import measure_quality
    from bench.bases.path import load_dir

    cfg = cfg or DEFAULT_CONFIG
    check_config(cfg, names, max_ctx=_max_positions(handle.model))
    layers = sorted(layers) if layers is not None else list(range(handle.sites.n_layers))
    handle.sites.site(site)
    for layer in layers:
        handle.sites.check_layer(layer)
    corpus = corpus or default_corpus()
    entry, partial = entry_dirs(handle.model, site, layers, cfg, corpus)
    if finished_entry(entry):
        return entry
    train_windows, held_out = corpus.windows(handle.tokenizer, cfg.ctx)
    final = partial / "final"
    start = time.perf_counter()
    resumed_from = None
    if (final / DONE).exists() and (problem := _final_problem(final)):
        log.warning("trained SAEs in %s are corrupt (%s); training again", final, problem)
        shutil.rmtree(final)
    if not (final / DONE).exists():
        trained, resumed_from = _fit(
            handle, site, layers, cfg, train_windows, partial, on_batch, progress
        )
        shutil.rmtree(final, ignore_errors=True)
        for hook, sae in trained.items():
            sae.save_inference_model(final / hook)
        (final / "training.json").write_text(
            json.dumps({"seconds": time.perf_counter() - start, "resumed_from": resumed_from})
        )
        files = files_sha256(final, exclude=(DONE,))
        (final / DONE).write_text(json.dumps({"files": files}) + "\n")
    training = json.loads((final / "training.json").read_text())
    log.info("measuring quality on %d held-out windows", len(held_out))
    qstart = time.perf_counter()
    saes = load_dir(handle.sites, "sae", site, final)
    quality = measure_quality(
        handle, site, site, saes, held_out, cfg.eval_tokens, cfg.ce_tokens, cfg.skip_first, progress
    )
    quality["corpus"] = {"name": corpus.name, "sha256": corpus.sha256}
    quality["training"] = {
        **training,
        "tokens": cfg.n_steps * cfg.batch_tokens,
        "steps": cfg.n_steps,
        "quality_seconds": time.perf_counter() - qstart,
        "quality_threads": torch.get_num_threads(),  # training: 1 per thread, 2 threads
    }
    manifest = {
        "model": handle.name,
        "model_key": model_key(handle.model),
        "site": site,
        "layers": layers,
        "config": asdict(cfg),
        "corpus": quality["corpus"],
        "sae_lens": sae_lens_version(),
        "hooks": {layer: handle.sites.hook_name(site, layer) for layer in layers},
    }
    with atomic_path(entry, kind="dir") as tmp:  # replaces a corrupt entry (inside the cache)
        shutil.copytree(final, tmp, ignore=shutil.ignore_patterns(DONE, "training.json"))
        (tmp / "quality.json").write_text(json.dumps(quality, indent=2) + "\n")
        manifest["files"] = files_sha256(tmp)  # verified on every later use
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(partial, ignore_errors=True)
    return entry


def _final_problem(final: Path) -> str | None:
    try:
        files = json.loads((final / DONE).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return "no file checksums in its DONE marker"
    return verify_files(final, files)


# -- on first use of dictionary="local" ----------------------------------------------------------

DEFAULT_CONFIG = TrainConfig()


def default_corpus() -> Corpus:
    return wikipedia_corpus()


def local_dictionary_dir(handle, site: str, options: dict[str, int]) -> Path:
    """The finished local entry for every layer of ``site`` of ``handle``'s model (a
    :class:`~bench.models.ModelHandle`), trained now if missing."""
    cfg = replace(DEFAULT_CONFIG, **options)
    names = {"width": "local:width", "k": "local:k"}  # as the dictionary string spells them
    check_config(cfg, names, max_ctx=_max_positions(handle.model))
    layers = list(range(handle.sites.n_layers))
    corpus = default_corpus()
    entry, _ = entry_dirs(handle.model, site, layers, cfg, corpus)
    if finished_entry(entry):
        return entry
    log.warning("no local %s SAEs for %s yet: training them now (once)", site, handle.name)
    return train_local(handle, site, layers, cfg, corpus)
