"""``dictionary="local"``: the dictionary source that training adds to the bases stage.

Importing this module registers ``local`` in :data:`bench.bases.loading.DICTIONARY_SOURCES`
(run_sweep, the suite and ``python -m bench.training`` import it): the local entry is found,
or trained under its lock (:func:`bench.training.train.local_dictionary_dir`), then loaded
like any ``path:`` directory.
"""

from __future__ import annotations

from bench.bases.loading import register_dictionary_source
from bench.bases.path import load_path
from bench.training.train import local_dictionary_dir


def load_local(handle, basis: str, site: str, spec):
    """(per-layer SAEs, source record, quality) of the local entry for ``spec``."""
    directory = local_dictionary_dir(handle, basis, site, spec.target, spec.options)
    saes, _, quality = load_path(handle.sites, basis, site, str(directory))
    return saes, {"source": f"local:{directory.parent.name}/{directory.name}"}, quality


register_dictionary_source("local", load_local)
