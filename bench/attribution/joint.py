"""The attribution stage: a cell's node scores, cached on disk, and joint attribution.

:class:`JointAttribution` holds a *group*: cells on the same model handle, train split, method
and attribution reference (checked when it is built). Steps of :meth:`JointAttribution.scores`
for one member:

1. scores held in memory from an earlier member's pass: returned (``cached``);
2. the member's disk cache entry (keyed by :func:`attribution_key`, verified): returned;
3. otherwise one pass over the member and — for methods that share one set of backward passes
   (``Method.joint``: atp, relp) — every other member neither held nor
   cached on disk; each basis's scores are checked finite, written to the disk cache when
   asked, and the other members' held in memory for their own cells (with or without the disk
   cache).

A cell measured alone (``run_sweep``) is a group of one. ``shared``: the split's
:class:`~bench.attribution.differences.Differences`, through which the groups of ``atp`` and
``relp`` on one split compute u(x) − r(x) once (the same scores).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from bench.attribution.attribute import attribute_many
from bench.attribution.nodes import NodeScores
from bench.attribution.registry import get_method
from bench.core.cache import CorruptEntryError, cache_root, load_checked, save_checked
from bench.core.finite import check_finite_scores
from bench.protocol import get_protocol

if TYPE_CHECKING:
    from bench.attribution.differences import Differences
    from bench.cell import Cell
    from bench.stages import Prepared

log = logging.getLogger(__name__)

ATTRIBUTION_CODE_VERSION = 4  # bump when a change to attribution code changes scores


def attribution_key(prep: Prepared) -> str:
    """Hash of everything that changes a cell's attribution scores."""
    c = prep.cell
    ids = torch.cat([prep.train["clean_ids"], prep.train["cf_ids"]], 1).cpu().numpy()
    answers = torch.stack([prep.train["clean_answer_id"], prep.train["cf_answer_id"]])
    data = {
        "code": ATTRIBUTION_CODE_VERSION,
        "model": [prep.handle.name, prep.handle.source, str(prep.handle.dtype)],
        "task": [prep.ds.task, str(prep.ds.version)],
        "train": hashlib.sha256(ids.tobytes() + answers.cpu().numpy().tobytes()).hexdigest(),
        "basis": prep.basis.describe(),
        "method": c.method,
        "reference": get_protocol(c.ablation).attribution_reference,
        "seed": c.seed,
        "ig_steps": c.ig_steps if get_method(c.method).uses_ig_steps else None,
        "batch_size": prep.settings.batch_size,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]


def ref_of(prep: Prepared) -> str:
    """The reference a cell's attribution scores against."""
    return get_protocol(prep.cell.ablation).attribution_reference


def _load_cached(path: Path | None, prep: Prepared):
    if path is None or not path.exists():
        return None
    try:
        saved = load_checked(path, map_location=prep.handle.device)  # verifies its sha256
        sc = NodeScores(saved["units"], saved["error"], prep.cell.method)
        check_finite_scores(sc.units, sc.error, f"in cache entry {path}")
        return sc, saved["seconds"], saved.get("joint", [prep.basis.describe()])
    except (CorruptEntryError, FloatingPointError, KeyError) as err:  # recomputed, not trusted
        log.warning("attribution cache entry cannot be trusted (%s); recomputing it", err)
        return None


def _cache_path(prep: Prepared) -> Path:
    return cache_root() / "attributions" / f"{attribution_key(prep)}.pt"


class JointAttribution:
    """Every basis of a group attributed in one pass on first use; the scores held in memory
    until their cell asks (module docstring)."""

    def __init__(self, members: list[Prepared], shared: Differences | None = None):
        if not members:
            raise ValueError("a joint attribution group needs at least one cell")
        first = members[0]
        for other in members[1:]:
            same = other.cell.method == first.cell.method and other.handle is first.handle
            same = same and ref_of(other) == ref_of(first)
            same = same and torch.equal(other.train["clean_ids"], first.train["clean_ids"])
            if not same:
                raise ValueError(
                    f"cell {other.cell.label} {other.cell.method} is not in the joint group of "
                    f"{first.cell.label} {first.cell.method}: one model, train split, method "
                    "and attribution reference per group"
                )
        self.members = list(members)
        self.joint = get_method(first.cell.method).joint
        self.shared = shared if self.joint else None  # atp/relp: their split's store
        self._held: dict[Cell, tuple[NodeScores, float, list]] = {}

    def scores(
        self, prep: Prepared, progress: bool = False, cache: bool = False
    ) -> tuple[NodeScores, float, bool, list]:
        """(scores, attribution seconds, whether they came from memory or disk, the bases of
        the pass that computed them) for ``prep``, one of the group's cells."""
        if (held := self._held.pop(prep.cell, None)) is not None:
            return held[0], held[1], True, held[2]
        path = _cache_path(prep) if cache else None
        if (hit := _load_cached(path, prep)) is not None:
            return hit[0], hit[1], True, hit[2]
        group = [prep]
        if self.joint:
            for other in self.members:
                if other.cell == prep.cell or other.cell in self._held:
                    continue
                if cache and _cache_path(other).exists():  # its own cell reads it (step 2)
                    continue
                group.append(other)
        c = prep.cell
        prep.handle.synchronize()  # on CUDA, time the attribution's own work only
        start = time.perf_counter()
        all_scores = attribute_many(
            prep.handle, [p.basis for p in group], prep.train, c.method, prep.settings.batch_size,
            c.ig_steps, c.seed, progress, get_protocol(c.ablation).attribution_reference,
            self.shared,
        )  # fmt: skip
        prep.handle.synchronize()
        seconds = time.perf_counter() - start
        joint = [p.basis.describe() for p in group]
        for p, sc in zip(group, all_scores, strict=True):  # before anything is cached
            check_finite_scores(
                sc.units, sc.error, f"({p.cell.method}, {p.cell.basis}@{p.cell.site})"
            )
        if cache:
            for p, sc in zip(group, all_scores, strict=True):
                entry = {"units": sc.units, "error": sc.error, "seconds": seconds, "joint": joint}
                try:
                    save_checked(entry, _cache_path(p))
                except OSError as err:  # a full or read-only cache costs the cache, not the cell
                    log.warning("attribution cache entry %s not written (%s); the cell goes on "
                                "without it", _cache_path(p), err)  # fmt: skip
        for p, sc in zip(group[1:], all_scores[1:], strict=True):
            self._held[p.cell] = (sc, seconds, joint)
        return all_scores[0], seconds, False, joint
