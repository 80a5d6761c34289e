"""The house's import arrows, checked by reading every module's imports with `ast`.

The house reads top-down: the shell (threadline/) -> daemon/ and admin/ -> models/ -> settings/. settings/ is
a leaf that imports nothing of ours; models/ is the core: no Flask, no IMAP or MIME library, nothing of
daemon/ or admin/ or the shell; daemon/ and admin/ never import each other; nothing imports the shell. One
module owns each outside world (daemon/imap.py imports imapclient, one parsing module imports mailparser).
Inside admin/ the imports run one way: no module imports, even indirectly, a module that imports it back, and
only the factory (admin/app.py) may import the factory. A failure lists file:line, or the circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("settings", "models", "daemon", "admin", "threadline")


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in a file, relative imports resolved to absolute names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield node.lineno, module
            # `from models import schema` imports models.schema: check the submodule names too
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def modules_of(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _is(module: str, *roots: str) -> bool:
    return any(module == root or module.startswith(root + ".") for root in roots)


def violations(package: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    found = []
    for path in modules_of(package):
        for line, module in imports(path):
            if _is(module, *forbidden) and not _is(module, *allowed):
                found.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
    return sorted(set(found))


def owners_of(library: str) -> set[str]:
    return {
        f"{path.relative_to(ROOT)}"
        for package in PACKAGES
        for path in modules_of(package)
        for _, module in imports(path)
        if _is(module, library)
    }


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: str) -> dict[str, set[str]]:
    """Each module of `package` -> the modules of `package` it imports (anywhere in the file)."""
    paths = {module_name(path): path for path in modules_of(package)}
    return {
        name: {module for _, module in imports(path) if module in paths and module != name}
        for name, path in paths.items()
    }


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import one another, directly or not (Tarjan's strongly connected
    components with more than one module), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(circles)


def test_every_package_exists_and_parses():
    for package in PACKAGES:
        assert (ROOT / package / "__init__.py").is_file(), package
        for path in modules_of(package):
            list(imports(path))


def test_models_import_no_daemon_admin_web_or_mail_library():
    forbidden = (
        "daemon",
        "admin",
        "flask",
        "flask_admin",
        "flask_login",
        "flask_wtf",
        "imapclient",
        "mailparser",
        "threadline",
    )
    assert violations("models", forbidden) == []


def test_settings_is_a_leaf():
    assert violations("settings", ("models", "daemon", "admin", "threadline")) == []


@pytest.mark.parametrize("package", ["settings", "models", "daemon", "admin"])
def test_nothing_imports_the_shell(package):
    assert violations(package, ("threadline",)) == []


def test_daemon_never_imports_admin_or_flask():
    assert (
        violations(
            "daemon", ("admin", "threadline", "flask", "flask_admin", "flask_login", "flask_wtf", "wtforms")
        )
        == []
    )


def test_admin_never_imports_daemon_or_the_mail_libraries():
    assert violations("admin", ("daemon", "imapclient", "mailparser")) == []


def test_admin_has_no_import_circle():
    assert import_circles(import_graph("admin")) == []


def test_views_reach_shared_state_through_the_context_module_never_the_factory():
    importers = {name for name, targets in import_graph("admin").items() if "admin.app" in targets}
    assert importers == set()


@pytest.mark.parametrize(
    ("library", "owner"), [("imapclient", "daemon/imap.py"), ("mailparser", "daemon/parsing/body.py")]
)
def test_one_module_owns_each_mail_library(library, owner):
    assert owners_of(library) <= {owner}


def test_the_checker_reports_file_and_line(tmp_path, monkeypatch):
    """The checks above can fail: a planted bad import is found with its file and line."""
    fake_root = tmp_path
    (fake_root / "models").mkdir()
    (fake_root / "models" / "__init__.py").write_text("", encoding="utf-8")
    (fake_root / "models" / "bad.py").write_text(
        "import os\nfrom daemon import sync\nfrom . import schema\n", encoding="utf-8"
    )
    monkeypatch.setitem(globals(), "ROOT", fake_root)
    assert violations("models", ("daemon",)) == [
        "models/bad.py:2: imports daemon",
        "models/bad.py:2: imports daemon.sync",
    ]
    assert owners_of("os") == {"models/bad.py"}


def test_the_circle_finder_names_the_modules_of_a_circle(tmp_path, monkeypatch):
    """The circle check can fail: a factory and a view importing each other (as admin/ once did) are found."""
    (tmp_path / "admin" / "views").mkdir(parents=True)
    for name, text in {
        "__init__.py": "",
        "app.py": "def create_app():\n    from admin import views\n",
        "context.py": "",
        "views/__init__.py": "from admin.views import board\n",
        "views/board.py": "from admin.app import create_app\nfrom admin.context import db\n",
    }.items():
        (tmp_path / "admin" / name).write_text(text, encoding="utf-8")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert import_circles(import_graph("admin")) == [["admin.app", "admin.views", "admin.views.board"]]
