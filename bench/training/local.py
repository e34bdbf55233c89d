"""``dictionary="local"``: the dictionary source that training adds to the bases stage.

Importing this module registers ``local`` in :data:`bench.bases.loading.DICTIONARY_SOURCES`
(run_sweep, the suite and ``python -m bench.training`` import it): the local entry is found,
or trained under its lock (:func:`bench.training.train.local_dictionary_dir`), then loaded
like any ``path:`` directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from bench.bases.loading import register_dictionary_source
from bench.bases.path import load_path
from bench.core.cache import write_json_atomic
from bench.core.checks import _probe_writable
from bench.training.config import DEFAULT_CONFIG
from bench.training.train import local_dictionary_dir

log = logging.getLogger(__name__)


def load_local(handle, basis: str, site: str, spec):
    """(per-layer SAEs, source record, quality) of the local entry for ``spec``."""
    directory = local_dictionary_dir(handle, basis, site, spec.target, spec.options)
    saes, _, quality = load_path(handle.sites, basis, site, str(directory))
    return saes, {"source": f"local:{directory.parent.name}/{directory.name}"}, quality


register_dictionary_source("local", load_local)


def quality_file(spec, basis: str, site: str) -> Path:
    """Where a published dictionary's measured quality lives: ``<dir>/quality.json`` for a
    writable ``path:`` directory, else the cache (as ``python -m bench.training quality``)."""
    from bench.bases.releases import quality_path

    if spec.kind == "path":
        directory = Path(spec.target).expanduser()
        if _probe_writable(directory) is None:
            return directory / "quality.json"
        key = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
        return quality_path(f"path-{key}", None, basis, site)  # the directory is read-only
    return quality_path(spec.target, spec.selector, basis, site)


def ensure_quality(handle, basis) -> None:
    """A dictionary basis loaded without a measured quality (a published one: its nominal L0 is
    a name, not a measurement) gets L0, FVU and CE-loss recovered on the held-out corpus,
    measured once (:class:`~bench.training.config.TrainConfig`'s defaults) and cached; the suite
    and ``python -m bench steer|auroc`` call this for every dictionary they load."""
    from bench.bases.dictionary import parse_dictionary

    if not getattr(basis, "has_error", False) or basis.quality() is not None:
        return
    basis._quality = measure_published(handle, basis, parse_dictionary(basis.dictionary))


def measure_published(handle, basis, spec) -> dict:
    """L0, FVU and CE-loss recovered of a loaded dictionary on the held-out corpus, measured
    once and cached at :func:`quality_file`."""
    from bench.training.quality import measure_quality
    from bench.training.train import default_corpus

    target = quality_file(spec, basis.name, basis.site)
    if target.exists():
        try:
            return json.loads(target.read_text())
        except (OSError, ValueError) as err:
            log.warning("cached quality %s is unreadable (%s); measuring again", target, err)
    log.warning("measuring the quality of %s on held-out text (once; cached at %s)",
                basis.dictionary, target)  # fmt: skip
    cfg = DEFAULT_CONFIG
    _, held_out = default_corpus().windows(handle.tokenizer, cfg.ctx)
    quality = measure_quality(
        handle, basis.site, basis.read_site, dict(enumerate(basis.saes)), held_out,
        cfg.eval_tokens, cfg.ce_tokens, cfg.skip_first, progress=False,
    )  # fmt: skip
    write_json_atomic(target, quality)
    return quality
