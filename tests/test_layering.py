"""The layering of bench/, tasks/ and reports/, checked over the import graph.

Data flows one way (docs/METHOD.md, "Layout"): a module imports only from its own stage or
from stages below it, and no modules import each other in a circle. Every import counts,
inside functions too; only ``if TYPE_CHECKING:`` blocks (annotations, never executed) are
left out. Entry points (``__main__``, the suite's conftest and test modules, the lazy public
face ``bench/__init__.py``) sit on top and may import anything.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "tasks", "reports")

# stage -> rank: a module may import modules of its own rank or lower
STAGES = [
    ("bench.core", 0), ("bench.protocol", 0), ("tasks", 0),
    ("bench.model", 1),
    ("bench.bases", 2),
    ("bench.cell", 3),
    ("bench.training", 4),
    ("bench.sweep", 5),
    ("bench.attribution", 6),
    ("bench.results", 7), ("bench.stages", 7),
    ("bench.pipeline", 8),
    ("reports", 9), ("bench.suite", 9), ("bench.studies", 9),
    ("bench.cli", 10),
]  # fmt: skip
TOP = 99  # entry points
ENTRY_POINTS = ("bench", "bench.conftest")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rank(module: str) -> int:
    if module in ENTRY_POINTS or module.endswith("__main__") or ".test_" in module:
        return TOP
    best = [(len(s), r) for s, r in STAGES if module == s or module.startswith(s + ".")]
    assert best, f"{module}: no stage in tests/test_layering.py STAGES; add it"
    return max(best)[1]


def _type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports, at any depth, outside TYPE_CHECKING blocks."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for n in ast.walk(tree) if isinstance(n, ast.If) and _type_checking(n)}
    skipped = {id(c) for n in ast.walk(tree) if id(n) in skip for c in ast.walk(n)} - skip
    out = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from pkg import sub``: the module pkg.sub where it is one (as import-linter)
            subs = [f"{node.module}.{a.name}" for a in node.names]
            names = [s for s in subs if s in modules] or [node.module]
            if len(names) < len(subs):  # some names are not modules: pkg itself is read too
                names.append(node.module)
        for name in names:
            if name.split(".")[0] in PACKAGES and name in modules:
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")]
    modules = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, modules) - {module_name(p)} for p in files}


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in g:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert _cycles(graph()) == []


def test_every_import_follows_the_flow():
    g = graph()
    against = [
        f"{a} (stage {rank(a)}) imports {b} (stage {rank(b)})"
        for a, targets in sorted(g.items())
        for b in sorted(targets)
        if rank(b) > rank(a) and not b.startswith(a + ".")  # a package's face may name its own
    ]
    assert against == []


def test_the_checker_sees_cycles_and_imports_against_the_flow(tmp_path):
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert rank("bench.sweep.units") < rank("bench.attribution.joint")
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import bench.pipeline\n"
        "def f():\n    from bench.sweep import units\n"
    )
    found = imports_of(src, {"bench.pipeline", "bench.sweep", "bench.sweep.units"})
    assert found == {"bench.sweep.units"}  # inside functions counted; TYPE_CHECKING not


def test_bench_keeps_at_most_14_top_level_modules_and_modules_stay_small():
    top = sorted(p.name for p in (REPO / "bench").glob("*.py"))
    assert len(top) <= 14, top
    long = {
        str(p.relative_to(REPO)): n
        for pkg in PACKAGES
        for p in (REPO / pkg).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert long == {}


def test_reading_results_and_reports_imports_no_torch():
    code = (
        "import sys, reports, bench.results.result, bench.results.verdict, "
        "bench.results.baselines, bench.cell, bench.protocol, bench.suite.options, "
        "bench.attribution.registry, bench.bases, bench.core.checks; "
        "heavy = [m for m in ('torch', 'transformers', 'sae_lens') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
