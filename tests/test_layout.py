"""The package layout: the IM REST API subpackage stands on its own."""

from __future__ import annotations

import ast
from pathlib import Path

import batchedit

PACKAGE = Path(batchedit.__file__).parent


def _our_imports(path: Path) -> set[str]:
    """Every ``batchedit...`` module a file imports (absolute or relative)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.split(".")[0] == "batchedit")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                names.add("." * node.level + (node.module or ""))
            elif node.module and node.module.split(".")[0] == "batchedit":
                names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_im_package_imports_only_itself() -> None:
    """batchedit/im/ depends on nothing else of ours (absolute imports only, all under im)."""
    for path in sorted((PACKAGE / "im").glob("*.py")):
        for name in _our_imports(path):
            assert name.startswith("batchedit.im."), f"{path.name} imports {name}"


def test_emulator_does_not_import_the_pipeline_or_cli() -> None:
    """The emulator builds on batchedit.im only, never on the pipeline or the CLI layer."""
    for path in sorted((PACKAGE / "emulator").glob("*.py")):
        for name in _our_imports(path):
            assert name.startswith(("batchedit.im.", "batchedit.emulator.")), (
                f"emulator/{path.name} imports {name}"
            )
