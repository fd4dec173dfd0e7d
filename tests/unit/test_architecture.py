"""Import rules and shape, read from the source with ``ast``.

The engine never writes SQL (it imports no SQLAlchemy and reaches the store
only through its protocol); the store never calls handlers; eventproc never
imports a handler pack, and a pack imports only eventproc's public API (the
names in ``eventproc.__all__`` and the module ``eventproc.columns``);
``runtime`` does not import ``http``; nothing in eventproc imports in a
cycle; no function in ``src/`` is over 60 lines, no engine or store module
over 400; the store is one class over a driver, with no stubs.
"""

import ast
import inspect
import types
from collections.abc import Iterator
from pathlib import Path

import eventproc
import eventproc.columns

SRC = Path(eventproc.__file__).parent
PACK = SRC.parent / "yachtparty"
MAX_FUNCTION_LINES = 60
ENGINE = SRC / "engine"
STORE = SRC / "store"
MAX_ENGINE_MODULE_LINES = 400  # the engine's and the store's modules

# The public API: a module, and the names a pack may import from it.
PUBLIC_MODULES: dict[str, types.ModuleType] = {
    "eventproc": eventproc,
    "eventproc.columns": eventproc.columns,
}

# module -> eventproc modules it must not import
FORBIDDEN = {
    "store": (
        "eventproc.engine",
        "eventproc.registry",
        "eventproc.http",
        "eventproc.runtime",
        "eventproc.cli",
        "eventproc.handler",
    ),
    # The dispatcher gets the connection type through eventproc.handler.
    "engine": (
        "sqlalchemy",
        "asyncpg",
        "aiosqlite",
        "eventproc.http",
        "eventproc.runtime",
        "eventproc.app",
        "eventproc.cli",
    ),
    "http": (
        "sqlalchemy",
        "asyncpg",
        "aiosqlite",
        "eventproc.store.driver",
        "eventproc.store.postgres",
        "eventproc.store.sqlite",
    ),
    # The HTTP app is wired in by eventproc.app: runtime knows nothing of it.
    "runtime.py": ("eventproc.http",),
    # The engine reaches a handler pack only through HANDLERS (load_registry).
    ".": ("yachtparty",),
}


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top, inside functions or for type checking."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports that run (lazy ones included), not those under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            children = child.orelse
        else:
            children = [child]
        for node in children:
            if isinstance(node, ast.Import | ast.ImportFrom):
                yield node
            yield from _runtime_imports(node)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """eventproc module -> the eventproc modules it imports when it runs."""
    modules = {_module_name(path): path for path in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in modules else node.module)
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def public_names(module: types.ModuleType) -> list[str]:
    """What ``module`` defines or re-exports for callers: not private, not a submodule."""
    return sorted(
        name
        for name, value in vars(module).items()
        if (not name.startswith("_") or name == "__version__") and not inspect.ismodule(value)
    )


def test_layers_are_respected() -> None:
    problems = []
    for name, banned in FORBIDDEN.items():
        target = SRC / name
        files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
        for path in files:
            for module in imports_of(path):
                if any(module == b or module.startswith(b + ".") for b in banned):
                    problems.append(f"{path.relative_to(SRC)} imports {module}")
    assert problems == []


def test_the_engine_reaches_the_store_only_through_its_protocol() -> None:
    store_imports = {
        f"{path.relative_to(SRC)} imports {module}"
        for path in sorted(ENGINE.rglob("*.py"))
        for module in imports_of(path)
        if module == "eventproc.store" or module.startswith("eventproc.store.")
    }
    assert store_imports  # the walk sees the engine's imports at all
    assert {
        line for line in store_imports if not line.endswith("eventproc.store.protocol")
    } == set()


def test_the_pack_imports_only_the_public_api() -> None:
    problems = []
    for path in sorted(PACK.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                problems += [
                    f"{path.name}: import {alias.name}"
                    for alias in node.names
                    if alias.name.split(".")[0] == "eventproc" and alias.name not in PUBLIC_MODULES
                ]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("eventproc"):
                module = PUBLIC_MODULES.get(node.module or "")
                allowed = set(module.__all__) if module is not None else set()
                problems += [
                    f"{path.name}: from {node.module} import {alias.name}"
                    for alias in node.names
                    if alias.name not in allowed
                ]
    assert problems == []


def test_no_import_cycles_inside_eventproc() -> None:
    graph = import_graph()
    assert "eventproc.http" in graph["eventproc.app"]  # the walk sees imports at all
    assert cycles(graph) == []


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_public_api_is_exactly_what_the_modules_export() -> None:
    for module in PUBLIC_MODULES.values():
        assert module.__all__ == sorted(module.__all__), module.__name__
        assert module.__all__ == public_names(module), module.__name__


def test_public_api_is_exactly_this() -> None:
    assert eventproc.__all__ == [
        "Event",
        "EventprocError",
        "HandlerContext",
        "NewEvent",
        "Outcome",
        "PermanentError",
        "Registry",
        "RetryLater",
        "Sample",
        "__version__",
    ]


def _functions(path: Path) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def test_no_function_is_over_60_lines() -> None:
    """From ``def`` to the last line, docstring included (decorators not counted)."""
    too_long = [
        f"{path.relative_to(SRC.parent)}:{node.lineno} {node.name} "
        f"({node.end_lineno - node.lineno + 1} lines)"
        for path in sorted(SRC.parent.rglob("*.py"))
        for node in _functions(path)
        if node.end_lineno is not None and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert too_long == []


def test_no_engine_or_store_module_is_over_400_lines() -> None:
    modules = sorted(ENGINE.rglob("*.py")) + sorted(STORE.rglob("*.py"))
    assert len(modules) > 20  # the engine and the store are where this test thinks
    too_long = [
        f"{path.relative_to(SRC.parent)} ({lines} lines)"
        for path in modules
        if (lines := len(path.read_text().splitlines())) > MAX_ENGINE_MODULE_LINES
    ]
    assert too_long == []


def test_the_store_is_one_class_over_a_driver_with_no_stubs() -> None:
    stubs, store_classes = [], []
    for path in sorted(STORE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id == "NotImplementedError":
                stubs.append(f"{path.relative_to(SRC.parent)}:{node.lineno}")
            if isinstance(node, ast.ClassDef) and node.name.endswith("Store"):
                store_classes.append(f"{path.relative_to(SRC.parent)}:{node.name}")
    assert stubs == []
    assert store_classes == ["eventproc/store/store.py:Store"]
