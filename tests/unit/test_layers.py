"""The fence between the layers of `service/` (the README's "Architecture" draws it): each
folder may import only the layers below it, anywhere in a module (lazy imports too).

    app, __main__        the composition root: builds the application from every layer
    http/                the ingress: routes, schemas, auth, OIP v2, the Router deployment
    replica/             what runs in a router replica beside the routes
    state/               the live state: documents, rules, the runner that commits, store/
    models/              the pool file, the loaders, the model runner, Candidates, the roster
    config/              settings and run-time knobs
    picker               the algorithm (pure: tests/unit/test_imports.py)

tools/ talk to a running service over HTTP; of the service they may read only the pool
file's format and the demo's data (`models.pool_file`, `models.demo_data`).
"""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service"
BELOW = {
    "config": set(),
    "models": {"config"},
    "state": {"config", "models"},
    "replica": {"config", "models", "state"},
    "http": {"config", "models", "state", "replica"},
}
TOOLS_MAY_READ = {"service.models.pool_file", "service.models.demo_data"}


def layer_of(module: str) -> str:
    """`service.state.rules.labels` -> `state`; the root modules are their own name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
    return {m for m in found if m == "service" or m.startswith("service.")}


def module_name(path: Path) -> str:
    parts = path.relative_to(SERVICE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_module_lives_in_a_layer() -> None:
    at_root = {p.name for p in SERVICE.glob("*.py")}
    assert at_root == {"__init__.py", "__main__.py", "app.py"}
    folders = {p.name for p in SERVICE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(BELOW) | {"tools"}


def test_no_layer_imports_a_layer_above_it() -> None:
    breaches = []
    for path in sorted(SERVICE.rglob("*.py")):
        name = module_name(path)
        layer = layer_of(name)
        if layer not in BELOW:
            continue
        allowed = BELOW[layer] | {layer}
        for imported in imported_modules(path):
            target = layer_of(imported)
            if target and target not in allowed and imported != "service":
                breaches.append(f"{name} imports {imported}")
    assert not breaches, "\n".join(breaches)


def test_tools_read_only_the_pool_file_format_and_the_demo_data() -> None:
    breaches = []
    for path in sorted((SERVICE / "tools").rglob("*.py")):
        for imported in imported_modules(path):
            if layer_of(imported) in ("tools", ""):
                continue
            if not any(imported.startswith(allowed) for allowed in TOOLS_MAY_READ):
                breaches.append(f"{module_name(path)} imports {imported}")
    assert not breaches, "\n".join(breaches)


def test_the_fence_sees_imports_anywhere_in_a_module(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import os\n\ndef f():\n    from service.http.schemas import Label\n")
    assert imported_modules(probe) == {"service.http.schemas", "service.http.schemas.Label"}
    assert layer_of("service.http.schemas.Label") == "http"
    assert "http" not in BELOW["state"] and "state" in BELOW["http"]
