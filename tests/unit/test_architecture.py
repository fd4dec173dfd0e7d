"""Import rules: the processor never writes SQL; the store never calls handlers."""

import ast
from pathlib import Path

import eventproc

SRC = Path(eventproc.__file__).parent

# module -> eventproc modules it must not import
FORBIDDEN = {
    "store": (
        "eventproc.processor",
        "eventproc.dispatch",
        "eventproc.registry",
        "eventproc.http",
        "eventproc.runtime",
        "eventproc.cli",
        "eventproc.handler",
    ),
    "processor.py": ("sqlalchemy", "asyncpg", "aiosqlite", "eventproc.http"),
    "completer.py": ("sqlalchemy", "asyncpg", "aiosqlite"),
    "http": (
        "sqlalchemy",
        "asyncpg",
        "aiosqlite",
        "eventproc.store.sqlstore",
        "eventproc.store.postgres",
        "eventproc.store.sqlite",
    ),
}


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


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


def test_public_api_is_exactly_this() -> None:
    assert sorted(eventproc.__all__) == sorted(
        [
            "Event",
            "EventprocError",
            "HandlerContext",
            "NewEvent",
            "Outcome",
            "PermanentError",
            "Registry",
            "RetryLater",
            "__version__",
        ]
    )
    for name in eventproc.__all__:
        assert hasattr(eventproc, name)
