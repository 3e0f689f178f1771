"""The documentation says what the code does: parameter tables, templated fields, included snippets, code samples.

Everything documented is read from the pages under ``docs/`` (not from a copy here), so a page and the class it
describes cannot drift apart without a failing test. ``make docs`` builds the site itself, with warnings as errors.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs"
#: The pages that document classes with parameter tables.
CLASS_PAGES = ("hook.md", "operators.md", "sensors.md", "triggers.md")
#: Every documented public class, by name: each has exactly one parameter table in CLASS_PAGES.
CLASSES = {
    "TruConnectHook": "airflow_provider_truconnect.hooks.truconnect",
    "TruConnectOperator": "airflow_provider_truconnect.operators.truconnect",
    "TruConnectCreateOrderOperator": "airflow_provider_truconnect.operators.truconnect",
    "TruConnectOrderSensor": "airflow_provider_truconnect.sensors.truconnect",
    "TruConnectSensor": "airflow_provider_truconnect.sensors.truconnect",
    "TruConnectOrderTrigger": "airflow_provider_truconnect.triggers.truconnect",
    "TruConnectSensorTrigger": "airflow_provider_truconnect.triggers.truconnect",
}
#: Classes whose tables have a "templated" column: operators and sensors.
TEMPLATED = {"TruConnectOperator", "TruConnectCreateOrderOperator", "TruConnectOrderSensor", "TruConnectSensor"}
_HEADING = re.compile(r"^#{1,6}\s+(.*)$")
_CLASS_NAME = re.compile(r"\bTruConnect\w+\b")


@dataclass
class ParamTable:
    cls_name: str
    page: str
    line: int
    rows: list[dict[str, str]]

    def names(self) -> list[str]:
        return [row["parameter"] for row in self.rows]


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _unquote(cell: str) -> str:
    return cell.strip().strip("`").strip()


def parameter_tables() -> list[ParamTable]:
    """Every table whose first column is ``parameter``, attributed to the class named by the heading above it."""
    tables: list[ParamTable] = []
    for page in CLASS_PAGES:
        lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
        current: str | None = None
        i = 0
        while i < len(lines):
            heading = _HEADING.match(lines[i])
            if heading:
                named = [n for n in _CLASS_NAME.findall(heading.group(1)) if n in CLASSES]
                current = named[0] if named else None
            if lines[i].startswith("|") and _cells(lines[i])[0] == "parameter":
                header = _cells(lines[i])
                start = i + 1
                rows = []
                i += 2  # the header and the |---| line
                while i < len(lines) and lines[i].startswith("|"):
                    cells = _cells(lines[i])
                    assert len(cells) == len(header), f"{page}:{i + 1}: {len(cells)} cells, header has {len(header)}"
                    rows.append(
                        {h: (_unquote(c) if h == "parameter" else c) for h, c in zip(header, cells, strict=True)}
                    )
                    i += 1
                assert current is not None, f"{page}:{start}: a parameter table under no heading naming a class"
                tables.append(ParamTable(current, page, start, rows))
                continue
            i += 1
    return tables


def _class(name: str) -> Any:
    return getattr(importlib.import_module(CLASSES[name]), name)


def _own_parameters(cls: Any) -> dict[str, inspect.Parameter]:
    params = inspect.signature(cls.__init__).parameters
    return {name: p for name, p in params.items() if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def _accepted_keywords(cls: Any) -> set[str]:
    """Parameters the class or any base class names in its ``__init__`` (what a DAG author may pass)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None or klass is object:
            continue
        names |= {
            name
            for name, p in inspect.signature(init).parameters.items()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        }
    return names - {"self"}


TABLES = parameter_tables()


def _table(cls_name: str) -> ParamTable:
    found = [t for t in TABLES if t.cls_name == cls_name]
    assert len(found) == 1, f"{cls_name}: expected one parameter table in {CLASS_PAGES}, found {len(found)}"
    return found[0]


@pytest.mark.parametrize("cls_name", sorted(CLASSES))
def test_documented_parameters_are_the_signature(cls_name: str) -> None:
    table = _table(cls_name)
    documented = table.names()
    assert len(documented) == len(set(documented)), f"{table.page}:{table.line}: a parameter is listed twice"
    actual = set(_own_parameters(_class(cls_name)))
    assert not set(documented) - actual, f"{table.page}: documented but not parameters of {cls_name}"
    assert not actual - set(documented), f"{table.page}: parameters of {cls_name} missing from the table"


@pytest.mark.parametrize("cls_name", sorted(TEMPLATED))
def test_documented_templated_parameters_are_the_template_fields(cls_name: str) -> None:
    table = _table(cls_name)
    values = {row["parameter"]: row.get("templated", "") for row in table.rows}
    assert set(values.values()) <= {"yes", "no"}, f"{table.page}:{table.line}: templated must be yes or no: {values}"
    documented = {name for name, templated in values.items() if templated == "yes"}
    assert documented == set(_class(cls_name).template_fields), (
        f"{table.page}: {cls_name} documents {sorted(documented)} as templated; "
        f"template_fields is {sorted(_class(cls_name).template_fields)}"
    )


@pytest.mark.parametrize("cls_name", sorted(CLASSES))
def test_documented_defaults_are_the_signature_defaults(cls_name: str) -> None:
    table = _table(cls_name)
    params = _own_parameters(_class(cls_name))
    for row in table.rows:
        name, default = row["parameter"], row["default"]
        param = params[name]
        if default == "required":
            assert param.default is inspect.Parameter.empty, f"{table.page}: {name} has a default, documented required"
            continue
        assert param.default is not inspect.Parameter.empty, f"{table.page}: {name} is required, documented {default}"
        try:
            literal = ast.literal_eval(_unquote(default))
        except (ValueError, SyntaxError):
            continue  # prose, e.g. "[operators] default_deferrable"
        assert literal == param.default and type(literal) is type(param.default), (
            f"{table.page}: {cls_name}.{name} documented default {default}, actual {param.default!r}"
        )


def test_every_class_page_table_is_attributed() -> None:
    assert {t.cls_name for t in TABLES} == set(CLASSES)


# ------------------------------------------------------------------------------------------- included snippets
_MYST_INCLUDE = re.compile(r"^```\{literalinclude\}\s+(\S+)\s*$")
_RST_INCLUDE = re.compile(r"^\.\. literalinclude::\s+(\S+)\s*$")
_OPTION = re.compile(r"^\s*:([\w-]+):\s*(.*)$")


@dataclass
class Include:
    page: Path
    line: int
    target: Path
    options: dict[str, str]


def includes() -> list[Include]:
    found: list[Include] = []
    for page in sorted(DOCS.rglob("*")):
        if page.suffix not in (".md", ".rst") or "_build" in page.parts:
            continue
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            match = _MYST_INCLUDE.match(line) or _RST_INCLUDE.match(line)
            if not match:
                continue
            options: dict[str, str] = {}
            for option_line in lines[i + 1 :]:
                option = _OPTION.match(option_line)
                if not option:
                    break
                value = option.group(2).strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                options[option.group(1)] = value
            found.append(Include(page, i + 1, (page.parent / match.group(1)).resolve(), options))
    return found


INCLUDES = includes()


def test_docs_include_the_example_dags() -> None:
    included = {inc.target.relative_to(REPO_ROOT).as_posix() for inc in INCLUDES}
    examples = {p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "dags_examples").glob("example_*.py")}
    assert examples <= included, f"example DAGs no page includes: {sorted(examples - included)}"


@pytest.mark.parametrize("inc", INCLUDES, ids=lambda inc: f"{inc.page.name}:{inc.line}")
def test_included_markers_exist(inc: Include) -> None:
    assert inc.target.is_file(), f"{inc.page.name}:{inc.line}: {inc.target} does not exist"
    assert REPO_ROOT in inc.target.parents, f"{inc.page.name}:{inc.line}: includes a file outside the repository"
    text = inc.target.read_text(encoding="utf-8")
    start, end = inc.options.get("start-after"), inc.options.get("end-before")
    assert start and end, f"{inc.page.name}:{inc.line}: include a marked snippet (start-after and end-before)"
    assert re.fullmatch(r"\[START [\w-]+\]", start) and end == start.replace("[START", "[END"), (start, end)
    assert text.count(f"# {start}") == 1, f"{inc.target.name}: marker '# {start}' missing or repeated"
    assert text.count(f"# {end}") == 1, f"{inc.target.name}: marker '# {end}' missing or repeated"
    assert text.index(start) < text.index(end)


# ------------------------------------------------------------------------------------------------ code samples
_FENCE = re.compile(r"^```python\s*$")


def python_samples() -> list[tuple[str, int, str]]:
    samples = []
    for page in sorted(DOCS.glob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            if _FENCE.match(lines[i]):
                start = i + 1
                end = start
                while not lines[end].startswith("```"):
                    end += 1
                samples.append((page.name, start + 1, "\n".join(lines[start:end])))
                i = end
            i += 1
    return samples


SAMPLES = python_samples()


@pytest.mark.parametrize(("page", "line", "code"), SAMPLES, ids=[f"{p}:{n}" for p, n, _ in SAMPLES])
def test_code_samples_call_the_classes_with_parameters_they_accept(page: str, line: int, code: str) -> None:
    tree = compile(code, f"{page}:{line}", "exec", flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "partial":  # Operator.partial(...).expand(...)
            func = func.value
        if isinstance(func, ast.Name) and func.id in CLASSES:
            accepted = _accepted_keywords(_class(func.id))
            unknown = {kw.arg for kw in node.keywords if kw.arg is not None} - accepted
            assert not unknown, f"{page}:{line + node.lineno - 1}: {func.id} does not accept {sorted(unknown)}"


def test_docs_have_python_samples_and_includes() -> None:
    # Guards the parsers above: a change of fence or directive syntax must not silently check nothing.
    assert len(SAMPLES) >= 5 and len(INCLUDES) >= 5 and len(TABLES) == len(CLASSES)


# ------------------------------------------------------------------------------------------------ API notes
_SECTION_HEADING = re.compile(r"^#{2,3} (\d+(?:\.\d+)?)[. ]")
_CITATION = re.compile(r"§\s?\d+(?:\.\d+)?(?:\s?[-–/]\s?§?\d+(?:\.\d+)?)*")
_CITING_TREES = ("airflow_provider_truconnect", "dags_examples", "tests", "benchmarks")


def _cited_files() -> list[Path]:
    files = [p for tree in _CITING_TREES for p in (REPO_ROOT / tree).rglob("*.py")]
    return sorted(p for p in files if p != Path(__file__).resolve())


def test_every_section_citation_resolves_to_the_api_notes() -> None:
    """``connect-api.md §7.1``, ``[DOC §4.1]`` and plain ``§9.2`` in code all point at a section of the notes."""
    notes = (DOCS / "connect-api.md").read_text(encoding="utf-8").splitlines()
    sections = {m.group(1) for line in notes if (m := _SECTION_HEADING.match(line))}
    missing = []
    for path in _cited_files():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for citation in _CITATION.findall(line):
                missing += [
                    f"{path.relative_to(REPO_ROOT)}:{lineno}: §{number}"
                    for number in re.findall(r"\d+(?:\.\d+)?", citation)
                    if number not in sections
                ]
    assert not missing, "citations of sections docs/connect-api.md does not have:\n" + "\n".join(missing)


def test_the_api_notes_are_cited_inside_the_repository() -> None:
    """A citation names ``connect-api.md`` or ``docs/connect-api.md``, never a path outside the repository."""
    outside = []
    for path in _cited_files():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in re.finditer(r"(\S*)connect-api\.md", line):
                prefix = match.group(1).lstrip("`'\"([")
                if prefix not in ("", "docs/"):
                    outside.append(f"{path.relative_to(REPO_ROOT)}:{lineno}: {match.group(0)}")
    assert not outside, "citations of the API notes outside the repository:\n" + "\n".join(outside)


def test_documented_connection_extras_are_the_known_extras() -> None:
    """The extras table of the connection page lists exactly the extras the client reads and the form shows."""
    from airflow_provider_truconnect.client.config import KNOWN_EXTRAS
    from airflow_provider_truconnect.get_provider_info import CONN_FIELDS

    lines = (DOCS / "connection.md").read_text(encoding="utf-8").splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("|") and _cells(line)[0] == "extra"]
    assert len(headers) == 1, "connection.md: expected one table whose first column is 'extra'"
    documented = []
    for line in lines[headers[0] + 2 :]:
        if not line.startswith("|"):
            break
        documented.append(_unquote(_cells(line)[0]))
    assert sorted(documented) == sorted(KNOWN_EXTRAS), f"connection.md documents {documented}; known: {KNOWN_EXTRAS}"
    assert sorted(documented) == sorted(CONN_FIELDS), (
        f"connection.md documents {documented}; form: {sorted(CONN_FIELDS)}"
    )
