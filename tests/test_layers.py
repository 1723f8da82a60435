"""Imports point one way: core <- corpora <- upstream <- {pre-training, downstream} <- recipes.

The leaderboard reads only results files (it may use core); recipes and benchmarks sit on top,
and one recipe never imports another. Every import counts, those inside functions included.
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

PRETRAINING = ("upstream.pretrain", "upstream.target_quality")
"""Modules of the upstream package that form the pre-training layer above the models."""


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
    if own == "recipes" and other == "recipes":  # within one recipe only
        return importer.split(".")[:2] == imported.split(".")[:2]
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


def source_files() -> list[Path]:
    files = [ROOT / "run_downstream.py"]
    for top in LAYERS:
        if (ROOT / top).is_dir():
            files += sorted((ROOT / top).rglob("*.py"))
    return files


def test_the_rules_catch_an_upward_import():
    assert not allowed("upstream.pretrain", "downstream.config")
    assert not allowed("upstream.kmeans_targets", "downstream.config")
    assert not allowed("downstream.runner", "upstream.pretrain")
    assert not allowed("corpora.audio", "upstream.base")
    assert not allowed("core.training", "corpora.batching")
    assert not allowed("leaderboard.collect", "downstream.runner")
    assert not allowed("recipes.benchmark.run", "recipes.asr.low_resource")
    assert allowed("downstream.runner", "upstream.registry")
    assert allowed("upstream.pretrain", "upstream.registry")
    assert allowed("recipes.benchmark.run", "recipes.benchmark")
    assert allowed("upstream.hubert", "torchaudio.models")


def test_relative_imports_resolve_to_their_package(tmp_path: Path):
    (tmp_path / "upstream" / "interop").mkdir(parents=True)
    source = tmp_path / "upstream" / "interop" / "x.py"
    source.write_text("from ..pretrain import Pretrainer\nfrom . import y\n")
    assert imports(source, tmp_path) == [(1, "upstream.pretrain.Pretrainer"), (2, "upstream.interop.y")]
    assert not allowed("upstream.interop.x", imports(source, tmp_path)[0][1])


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_runs_up_the_layers(path: Path):
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    bad = [f"{path.relative_to(ROOT)}:{line} imports {name}"
           for line, name in imports(path) if not allowed(module, name)]
    assert not bad, "\n".join(bad)
