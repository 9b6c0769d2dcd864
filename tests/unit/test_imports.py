"""picker/ is pure: numpy and the standard library only, at module level.

The CLI may import matplotlib (--plot) and rich (progress bar) lazily, inside functions.
"""

import ast
import sys
from pathlib import Path

PICKER = Path(__file__).resolve().parents[2] / "picker"
LAZY_ALLOWED = {"cli.py": {"matplotlib", "rich"}}


def imported_roots(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name.split(".")[0] for alias in node.names}
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return {node.module.split(".")[0]}
    return set()


def test_picker_imports_only_numpy_and_stdlib() -> None:
    allowed = set(sys.stdlib_module_names) | {"numpy", "picker", "__future__"}
    files = sorted(PICKER.glob("*.py"))
    assert len(files) >= 8
    for path in files:
        tree = ast.parse(path.read_text())
        top_level = {root for stmt in tree.body for root in imported_roots(stmt)}
        assert top_level <= allowed, f"{path.name} imports {top_level - allowed} at module level"
        everywhere = {root for node in ast.walk(tree) for root in imported_roots(node)}
        lazy = everywhere - allowed
        assert lazy <= LAZY_ALLOWED.get(path.name, set()), f"{path.name} imports {lazy}"


def picker_imports(path: Path) -> set[str]:
    """The picker modules `path` imports, anywhere in it (lazy imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n.split(".")[1] for n in names if n.startswith("picker.")}
    modules = {p.stem for p in PICKER.glob("*.py")}
    return found & modules - {path.stem}


def test_picker_has_no_import_circle() -> None:
    graph = {p.stem: picker_imports(p) for p in PICKER.glob("*.py") if p.stem != "__init__"}
    graph = {m: deps - {"__init__"} for m, deps in graph.items()}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import circle: {' -> '.join((*path, module))}"
        if module in done:
            return
        for dep in graph.get(module, set()):
            visit(dep, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())
    assert graph["selectors"] >= {"coda", "model_selector", "pool_based", "pooled"}
