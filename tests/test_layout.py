"""The package's layers import downwards only: models and data import neither training nor bench,
nothing imports the CLI, and the shard format imports neither its reader nor its writer."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "bestrq2"


def imports_of(path: Path) -> set[str]:
    """Every bestrq2 module a file imports, at the top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n == "bestrq2" or n.startswith("bestrq2.")}


def files_in(sub: str) -> list[Path]:
    return sorted((PKG / sub).rglob("*.py"))


@pytest.mark.parametrize(
    "sub, forbidden",
    [
        ("models", ("bestrq2.training", "bestrq2.bench", "bestrq2.data", "bestrq2.evaluation", "bestrq2.objectives")),
        ("data", ("bestrq2.training", "bestrq2.bench", "bestrq2.models", "bestrq2.evaluation", "bestrq2.objectives")),
        ("training", ("bestrq2.bench", "bestrq2.evaluation")),
        ("objectives", ("bestrq2.training", "bestrq2.bench")),
    ],
)
def test_lower_layers_do_not_import_higher_ones(sub: str, forbidden: tuple[str, ...]) -> None:
    assert files_in(sub), sub
    for f in files_in(sub):
        bad = sorted(n for n in imports_of(f) if n.startswith(forbidden))
        assert not bad, f"{f.relative_to(PKG)} imports {bad}"


def test_nothing_imports_the_cli() -> None:
    for f in PKG.rglob("*.py"):
        if f.name == "cli.py":
            continue
        bad = sorted(n for n in imports_of(f) if n == "bestrq2.cli" or n.endswith(".cli"))
        assert not bad, f"{f.relative_to(PKG)} imports {bad}"


def test_shard_format_imports_neither_reader_nor_writer() -> None:
    bad = {n for n in imports_of(PKG / "data" / "shards.py") if "shard_reader" in n or "shard_writer" in n}
    assert not bad


def test_subpackages_import() -> None:
    import bestrq2.bench
    import bestrq2.data
    import bestrq2.models
    import bestrq2.training

    assert bestrq2.data.build_shard_loader and bestrq2.data.write_shards and bestrq2.training.pretrain
    assert bestrq2.models.ViTEncoder
