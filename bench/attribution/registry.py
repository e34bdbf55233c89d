"""The attribution methods: their names (torch-free) and the properties each registers.

Each method registers itself, with its properties, where its function is defined
(:func:`register_method`, the lm-evaluation-harness ``register_metric`` pattern): whether one
set of backward passes serves every basis of a group (``joint``) and whether its scores depend
on ``ig_steps``. This leaf also names every method and the module that defines it
(:data:`METHOD_MODULES`, a table of data like TransformerLens's ``supported_models``), so names
are checked without importing torch; :func:`get_method` imports the defining module on first
use and returns the registered :class:`Method`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.cell import CELL, RUN

# every method, in order, and where it is defined (and registered)
METHOD_MODULES = {
    "atp": "bench.attribution.gradients",
    "ig": "bench.attribution.ig",
    "relp": "bench.attribution.gradients",
    "exact": "bench.attribution.exact",
    "random": "bench.attribution.random",
}
METHODS = tuple(METHOD_MODULES)


@dataclass(frozen=True)
class MethodArgs:
    """What a method may use besides the model, the bases and the train split."""

    batch_size: int = RUN.batch_size
    ig_steps: int = CELL.ig_steps
    seed: int = CELL.seed
    progress: bool = False
    reference: str = CELL.ablation  # r(x): "patch" | "mean" | "zero" (bench.sweep.references)
    # atp/relp: a bench.attribution.differences.Differences store of this split, or None
    shared: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class Method:
    """A registered attribution method and its properties."""

    name: str
    joint: bool  # one set of backward passes serves every basis of a group (same split)
    fn: Callable[..., list[Any]]  # (handle, bases, train, MethodArgs) -> NodeScores per basis
    uses_ig_steps: bool = False  # its scores depend on MethodArgs.ig_steps


METHOD_REGISTRY: dict[str, Method] = {}  # filled by @register_method in each defining module


def register_method(name: str, *, joint: bool, uses_ig_steps: bool = False):
    """Register ``fn(handle, bases, train, args) -> list[NodeScores]`` as method ``name``."""

    def deco(fn: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
        if name in METHOD_REGISTRY:
            raise ValueError(f"attribution method {name!r} is registered twice")
        if METHOD_MODULES.get(name) != fn.__module__:
            raise ValueError(f"attribution method {name!r}: add it to METHOD_MODULES")
        METHOD_REGISTRY[name] = Method(name, joint, fn, uses_ig_steps)
        return fn

    return deco


def check_method(method: str) -> None:
    """Unknown names raise naming every valid method."""
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; valid: {', '.join(METHODS)}")


def get_method(method: str) -> Method:
    """The registered method (its module imported on first use)."""
    check_method(method)
    if method not in METHOD_REGISTRY:
        importlib.import_module(METHOD_MODULES[method])
    return METHOD_REGISTRY[method]
