"""The package's layering: a module never imports one above its layer (read from the source,
function-level imports included, so a lazy import cannot hide a backwards dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import graphcnn

ROOT = Path(graphcnn.__file__).parent


def imported(path: Path) -> set[str]:
    """Every ``graphcnn...`` module a source file imports, anywhere in it."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in names if n.split(".")[0] == "graphcnn"}


def modules(*parts: str) -> list[Path]:
    found = []
    for part in parts:
        p = ROOT / part
        found.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p.with_suffix(".py")])
    return found


# (the modules, the packages they must not import)
RULES = [
    (("model",), ("graphcnn.train", "graphcnn.cluster", "graphcnn.cli", "graphcnn.predict", "graphcnn.tensorboard")),
    (("data",), ("graphcnn.model", "graphcnn.train", "graphcnn.cluster", "graphcnn.cli")),
    (("checkpoints", "predict", "evaluate", "explain", "export"),
     ("graphcnn.train", "graphcnn.cluster", "graphcnn.cli")),
    (("registry", "atomic", "runtime", "config", "run_dir"), ("graphcnn.train", "graphcnn.cluster", "graphcnn.cli",
                                                           "graphcnn.model.graph")),
]


@pytest.mark.parametrize("parts,forbidden", RULES, ids=[",".join(r[0]) for r in RULES])
def test_no_module_imports_above_its_layer(parts, forbidden):
    files = modules(*parts)
    assert files and all(f.exists() for f in files), files
    bad = [f"{f.relative_to(ROOT.parent)} imports {name}" for f in files for name in sorted(imported(f))
           if any(name == x or name.startswith(x + ".") for x in forbidden)]
    assert not bad, "\n".join(bad)


def test_only_the_entry_points_import_the_cli():
    bad = [f"{f.relative_to(ROOT.parent)}" for f in sorted(ROOT.rglob("*.py"))
           if f.name not in ("cli.py", "__main__.py") and any(n.startswith("graphcnn.cli") for n in imported(f))]
    assert not bad, bad


def test_the_checker_sees_a_function_level_import(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from graphcnn.train.trainer import train\n    import graphcnn.cli\n")
    assert {"graphcnn.train.trainer", "graphcnn.train.trainer.train", "graphcnn.cli"} <= imported(f)
