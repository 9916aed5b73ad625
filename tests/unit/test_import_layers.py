"""The import graph of tusd_py: no loops, and no module importing a layer above its own.

Read from the source (module-level imports, `TYPE_CHECKING` blocks left out), so a violation is
caught even where Python's import order happens to hide it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tusd_py

ROOT = Path(tusd_py.__file__).parent

# Layers from the bottom up: a module may import its own layer and the ones below it.
LAYERS: list[tuple[str, ...]] = [
    (
        "tusd_py.errors",
        "tusd_py.loop_errors",
        "tusd_py.cors",
        "tusd_py.ids",
        "tusd_py.info",
        "tusd_py.metadata",
        "tusd_py.content_headers",
        "tusd_py.metrics",
        "tusd_py.validation",
        "tusd_py.preflight",
        "tusd_py.config",
        "tusd_py.request_context",
        "tusd_py.redis_slot",
        "tusd_py.redis_client",
        "tusd_py.redis_connect",
        "tusd_py.logs",
        "tusd_py.failures",
        "tusd_py.workers",
    ),
    ("tusd_py.stores", "tusd_py.locking"),
    ("tusd_py.state", "tusd_py.hooks"),
    ("tusd_py.protocol",),
    (
        "tusd_py.expiry",
        "tusd_py.observe",
        "tusd_py.fast_path",
        "tusd_py.probes",
        "tusd_py.demo",
        "tusd_py.connections",
        "tusd_py.redis_backends",
        "tusd_py.direct_s3",
    ),
    ("tusd_py.ops",),
    ("tusd_py.app",),
    ("tusd_py.cli", "tusd_py.supervisor"),
    ("tusd_py.configdoc", "tusd_py.__main__", "tusd_py"),
]
# Only these may name a concrete store; everything else sees `stores.base` (app.py imports the
# chosen store by name from its table).
# tusd_py.direct_s3 is an S3 feature by definition: it presigns with the S3 store's client and
# uses its key layout (app.py imports it only when --s3-direct is on).
CONCRETE_STORE_IMPORTERS = (
    "tusd_py",
    "tusd_py.stores",
    "tusd_py.direct_s3.bucket",
    "tusd_py.direct_s3.routes",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> set[str]:
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.ImportFrom) and sub.module and sub.module.startswith("tusd_py"):
                found.add(sub.module)
                found.update(f"{sub.module}.{alias.name}" for alias in sub.names)
            elif isinstance(sub, ast.Import):
                found.update(a.name for a in sub.names if a.name.startswith("tusd_py"))
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {t for t in runtime_imports(path) if t in modules and t != name}
        # A submodule's own packages are being imported already when it runs: not an edge.
        edges[name] = {t for t in targets if not name.startswith(t + ".")}
    return edges


def layer_of(module: str) -> int:
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes if p != "tusd_py"):
            return index
    if module == "tusd_py":
        return len(LAYERS) - 1
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def test_no_import_loops() -> None:
    edges = graph()
    loops: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                loops.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert loops == []


def test_no_module_imports_a_layer_above_it() -> None:
    upward = [
        f"{module} -> {target}"
        for module, targets in graph().items()
        for target in targets
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_only_the_composition_root_knows_concrete_stores() -> None:
    leaks = [
        f"{module} -> {target}"
        for module, targets in graph().items()
        if not module.startswith("tusd_py.stores.") and module not in CONCRETE_STORE_IMPORTERS
        for target in targets
        if target.startswith("tusd_py.stores.") and target != "tusd_py.stores.base"
    ]
    assert leaks == []
