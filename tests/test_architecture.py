"""The architecture, checked: an Airflow-free client core whose imports form a stack, sensors that import nothing from
the operators, and modules and classes small enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "airflow_provider_truconnect"
CLIENT = PACKAGE / "client"
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside functions (a lazy import is a dependency too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _client_graph() -> dict[str, set[str]]:
    modules = {p.stem for p in CLIENT.glob("*.py") if p.stem != "__init__"}
    prefix = "airflow_provider_truconnect.client."
    return {
        name: {m[len(prefix) :].split(".")[0] for m in _imports(CLIENT / f"{name}.py") if m.startswith(prefix)}
        & modules - {name}
        for name in modules
    }


def test_the_client_core_imports_no_airflow() -> None:
    offenders = {p.name for p in CLIENT.glob("*.py") if any(m.split(".")[0] == "airflow" for m in _imports(p))}
    assert offenders == set()


def test_client_imports_form_a_stack_without_loops() -> None:
    graph = _client_graph()
    order: list[str] = []
    remaining = {k: set(v) for k, v in graph.items()}
    while remaining:
        ready = sorted(k for k, deps in remaining.items() if not deps)
        assert ready, f"import loop among {sorted(remaining)}: {remaining}"
        order.extend(ready)
        for k in ready:
            del remaining[k]
        for deps in remaining.values():
            deps.difference_update(ready)
    # The layers the team notes describe: errors at the bottom, the transports at the top.
    position = {name: i for i, name in enumerate(order)}
    assert position["errors"] < position["config"] < position["core"] < position["client"]
    assert position["core"] < position["async_client"]
    assert "resources" not in graph["core"] and "client" not in graph["core"]


def test_sensors_import_nothing_from_the_operators() -> None:
    imports = _imports(PACKAGE / "sensors" / "truconnect.py")
    assert not {m for m in imports if m.startswith("airflow_provider_truconnect.operators")}


def test_no_module_imports_private_names_of_another() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("airflow_provider_truconnect"):
                own = path.relative_to(PACKAGE.parent).with_suffix("").as_posix().replace("/", ".")
                if node.module == own:
                    continue
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private and not (node.module or "").startswith(own.rsplit(".", 1)[0]):
                    offenders.append(f"{path.name}: {node.module}.{private}")
    assert offenders == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_modules_and_classes_stay_readable(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{lines} lines"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef):
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            assert size <= MAX_CLASS_LINES, f"class {node.name}: {size} lines"
