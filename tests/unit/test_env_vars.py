"""Environment variables are read in one place, `_private/constants.py` (read with ast)."""

import ast

from tests.unit.test_import_graph import ROOT


def _reads_environment(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and \
                isinstance(node.value, ast.Name) and node.value.id == "os":
            return True
    return False


def test_only_constants_reads_the_environment():
    readers = sorted(
        str(path.relative_to(ROOT)) for path in ROOT.rglob("*.py")
        if path.name != "constants.py" and _reads_environment(ast.parse(path.read_text()))
    )
    assert readers == [], f"read environment variables in _private/constants.py, not in {readers}"
