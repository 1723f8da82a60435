"""Imports point one way: core <- corpora <- upstream <- {pre-training, downstream} <- recipes.

The leaderboard reads only results files (it may use core); recipes and benchmarks sit on top,
and one recipe never imports another but the benchmark (``recipes.asr.low_resource`` wraps it).
No two modules import each other, directly or around a circle. Every import counts, those inside
functions included.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAYERS = {
    "core": set(),
    "corpora": {"core"},
    "upstream": {"core", "corpora"},
    "pretraining": {"core", "corpora", "upstream"},
    "downstream": {"core", "corpora", "upstream"},
    "leaderboard": {"core"},
    "recipes": {"core", "corpora", "upstream", "pretraining", "downstream", "leaderboard"},
    "benchmarks": {"core", "corpora", "upstream", "pretraining", "downstream", "leaderboard"},
    "run_downstream": {"core", "downstream"},
}
"""Layer -> the layers its modules may import (besides their own)."""

PRETRAINING = ("upstream.pretrain",)
"""The sub-package of ``upstream`` that forms the pre-training layer above the models."""


def layer(module: str) -> str | None:
    """The layer of a dotted module name, or None for a module outside the toolkit."""
    if module in PRETRAINING or module.startswith(tuple(f"{m}." for m in PRETRAINING)):
        return "pretraining"
    top = module.split(".")[0]
    return top if top in LAYERS else None


def allowed(importer: str, imported: str) -> bool:
    """Whether module ``importer`` may import module ``imported``."""
    own, other = layer(importer), layer(imported)
    if other is None or own == other and own != "recipes":
        return True
    if own == "recipes" and other == "recipes":  # within one recipe, or the benchmark a recipe wraps
        return importer.split(".")[:2] == imported.split(".")[:2] or imported.startswith("recipes.benchmark")
    return other in LAYERS[own]


def imports(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute name of the module or of the name imported from it) of every import in the
    source file ``path`` under ``root``."""
    package = list(path.relative_to(root).parent.parts)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return found


def source_files(root: Path = ROOT) -> list[Path]:
    files = [root / "run_downstream.py"] if (root / "run_downstream.py").is_file() else []
    for top in LAYERS:
        if (root / top).is_dir():
            files += sorted((root / top).rglob("*.py"))
    return files


def module_name(path: Path, root: Path = ROOT) -> str:
    """The dotted name of the source file ``path`` (a package's ``__init__.py``: the package's)."""
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the toolkit modules it imports (an imported name resolves to the module that defines it:
    ``upstream.hubert.model.build_hubert`` to ``upstream.hubert.model``, ``upstream.Featurizer`` to the
    package ``upstream``). Parent packages that Python runs on the way are not counted."""
    files = source_files(root)
    modules = {module_name(f, root) for f in files}
    graph: dict[str, set[str]] = {}
    for path in files:
        importer = module_name(path, root)
        graph[importer] = set()
        for _, name in imports(path, root):
            parts = name.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts and ".".join(parts) != importer:
                graph[importer].add(".".join(parts))
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as ``[a, b, ..., a]``, or None (depth-first search, in sorted order)."""
    state: dict[str, str] = {}  # "open" while on the search path, "done" once fully explored
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for nxt in sorted(graph.get(module, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (circle := visit(nxt)):
                return circle
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (circle := visit(module)):
            return circle
    return None


def test_the_rules_catch_an_upward_import():
    assert not allowed("upstream.pretrain", "downstream.config")
    assert not allowed("upstream.hubert.targets", "downstream.config")
    assert not allowed("upstream.mockingjay.model", "upstream.pretrain.augment")
    assert not allowed("downstream.runner", "upstream.pretrain")
    assert not allowed("corpora.audio", "upstream.base")
    assert not allowed("core.training", "corpora.batching")
    assert not allowed("leaderboard.collect", "downstream.runner")
    assert not allowed("recipes.benchmark.run", "recipes.asr.low_resource")
    assert allowed("downstream.runner", "upstream.registry")
    assert allowed("upstream.pretrain", "upstream.registry")
    assert allowed("recipes.benchmark.run", "recipes.benchmark")
    assert allowed("recipes.asr.low_resource", "recipes.benchmark.run")
    assert not allowed("recipes.asr.low_resource", "recipes.pr.align")
    assert allowed("upstream.pretrain.target_quality", "upstream.hubert.model")
    assert allowed("upstream.hubert.model", "torchaudio.models")


def test_relative_imports_resolve_to_their_package(tmp_path: Path):
    (tmp_path / "upstream" / "interop").mkdir(parents=True)
    source = tmp_path / "upstream" / "interop" / "x.py"
    source.write_text("from ..pretrain import Pretrainer\nfrom . import y\n")
    assert imports(source, tmp_path) == [(1, "upstream.pretrain.Pretrainer"), (2, "upstream.interop.y")]
    assert not allowed("upstream.interop.x", imports(source, tmp_path)[0][1])


def test_the_circle_check_finds_a_circle_through_an_import_inside_a_function(tmp_path: Path):
    (tmp_path / "upstream" / "hf").mkdir(parents=True)
    (tmp_path / "upstream" / "__init__.py").write_text("from .registry import build\n")
    (tmp_path / "upstream" / "registry.py").write_text("def build():\n    return 1\n")
    (tmp_path / "upstream" / "hf" / "__init__.py").write_text("")
    (tmp_path / "upstream" / "hf" / "model.py").write_text(
        "from upstream import build\n\ndef load():\n    from .fairseq import read\n    return read()\n")
    (tmp_path / "upstream" / "hf" / "fairseq.py").write_text("from .model import load\n\ndef read():\n    pass\n")
    graph = import_graph(tmp_path)
    assert graph["upstream.hf.model"] == {"upstream", "upstream.hf.fairseq"}
    assert find_circle(graph) == ["upstream.hf.fairseq", "upstream.hf.model", "upstream.hf.fairseq"]
    (tmp_path / "upstream" / "hf" / "fairseq.py").write_text("def read():\n    pass\n")
    assert find_circle(import_graph(tmp_path)) is None


def test_no_import_circle():
    circle = find_circle(import_graph())
    assert circle is None, "import circle: " + " -> ".join(circle or [])


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_runs_up_the_layers(path: Path):
    module = module_name(path)
    bad = [f"{path.relative_to(ROOT)}:{line} imports {name}"
           for line, name in imports(path) if not allowed(module, name)]
    assert not bad, "\n".join(bad)
