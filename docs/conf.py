"""Sphinx configuration of the provider's documentation site (``make docs``).

The build is offline (no intersphinx inventories) and strict: ``make docs`` runs ``sphinx-build -W --keep-going -n``,
so a broken reference, a missing include marker or a docstring that does not parse fails it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

DOCS_DIR = Path(__file__).resolve().parent
REPO_ROOT = DOCS_DIR.parent
sys.path.insert(0, str(REPO_ROOT))
# Autodoc imports the package, hence Airflow, which writes a default airflow.cfg into AIRFLOW_HOME on first import:
# keep that inside the (ignored) build directory rather than in the user's ~/airflow.
_AIRFLOW_HOME = DOCS_DIR / "_build" / "airflow-home"
_AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
os.environ.setdefault("AIRFLOW_HOME", str(_AIRFLOW_HOME))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from airflow_provider_truconnect import __version__  # noqa: E402 - after the path and environment set-up

project = "airflow-provider-truconnect"
author = "airflow-provider-truconnect developers"
copyright = "airflow-provider-truconnect developers"  # noqa: A001 - Sphinx's name for it
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# TEAM-NOTES.md is the contributors' working agreement, kept in the repository but not published.
exclude_patterns = ["_build", "TEAM-NOTES.md"]

# MyST: GitHub-style anchors for headings, so that links such as connect-api.md#71-post-v2orders work on GitHub and
# here alike.
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = f"{project} {release}"
html_theme_options = {
    "description": "Apache Airflow provider for the Truphone (1GLOBAL) Connect API",
    "fixed_sidebar": True,
    "page_width": "1240px",
    "sidebar_width": "240px",
}
html_show_sourcelink = False

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "separated"
autodoc_default_options = {"show-inheritance": True}

# Nitpicky mode checks every cross-reference. The build has no network, so there are no intersphinx inventories: types
# from Python's standard library (beyond builtins, which Sphinx resolves itself), Airflow, requests, httpx, tenacity,
# Starlette and pytest cannot resolve. They are ignored by module prefix below; references to this package's own
# public objects are still checked.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(airflow|requests|httpx|tenacity|starlette|uvicorn|pytest|_pytest|ssl)(\..*)?"),
    (r"py:.*", r"(collections\.abc|typing|contextlib|datetime|asyncio|socket|subprocess|threading|logging)\..*"),
    (r"py:.*", r"(concurrent\.futures|types|enum|dataclasses|random|pathlib|_thread|os)\..*"),
    # Airflow names that docstrings and TYPE_CHECKING-only annotations use unqualified.
    (r"py:.*", r"(Context|Connection|PokeReturnValue|AirflowSensorTimeout|AirflowFailException|AirflowException)"),
    (r"py:.*", r"(AirflowSkipException|BaseOperator|BaseSensorOperator|BaseHook|BaseTrigger|TriggerEvent)"),
    # Private names (bases shown by show-inheritance, helpers a module docstring mentions) are not documented on
    # purpose, and neither are single-letter type variables.
    (r"py:.*", r"(airflow_provider_truconnect(\.\w+)*\.)?_\w+(\.\w+)*"),
    (r"py:class", r"airflow_provider_truconnect(\.\w+)*\.[A-Z]"),
]

_PACKAGE = "airflow_provider_truconnect."


def _resolve_short_names(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve ``:class:`TruConnectError``` or ``:meth:`TruConnectClient.request``` written without the module path.

    Docstrings name the package's objects by their short names (unique in the package); Sphinx's Python domain only
    finds those in the current module or class, so this fallback looks the name up among every documented object of
    the package and resolves it when exactly one matches.
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "").lstrip("~.")
    if not target or target.startswith(_PACKAGE):
        return None
    domain = env.get_domain("py")
    matches = [name for name in domain.objects if name.startswith(_PACKAGE) and name.endswith("." + target)]
    if len(matches) == 1:
        return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], matches[0], node, contnode)
    if node.get("reftype") == "attr":
        # Dataclass fields and attributes set in __init__ are described in their class's docstring, which has no
        # entry per attribute: link to the class.
        owner = target.rsplit(".", 1)[0] if "." in target else node.get("py:class")
        owners = [
            name
            for name, obj in domain.objects.items()
            if owner and obj.objtype in ("class", "exception") and name.endswith("." + owner)
        ]
        if len(owners) == 1:
            return domain.resolve_xref(env, node["refdoc"], app.builder, "class", owners[0], node, contnode)
    return None


def _prefer_sibling_modules() -> None:
    """Resolve a relative reference such as ``:mod:`.client``` like Python's relative imports: a sibling first.

    Sphinx searches every object whose name ends in ``.client`` and, finding the ``client`` package and its
    ``client`` module, warns about an ambiguity that a reader of ``from . import client`` would not see.
    """
    from sphinx.domains.python import PythonDomain

    find_obj = PythonDomain.find_obj

    def find_sibling_first(
        self: Any, env: Any, modname: str, classname: str, name: str, objtype: str | None, searchmode: int = 0
    ) -> Any:
        matches = find_obj(self, env, modname, classname, name, objtype, searchmode)
        if len(matches) > 1 and searchmode == 1 and modname:
            sibling = f"{modname.rpartition('.')[0]}.{name}"
            preferred = [match for match in matches if match[0] == sibling]
            if len(preferred) == 1:
                return preferred
        return matches

    PythonDomain.find_obj = find_sibling_first  # type: ignore[method-assign]


def _dataclass_factories(
    app: Any, what: str, name: str, obj: Any, options: Any, signature: str | None, return_annotation: str | None
) -> tuple[str | None, str | None] | None:
    """Show ``field=...`` instead of ``field=<factory>`` in dataclass signatures.

    The Python domain cannot parse ``<factory>`` and then splits the signature at every comma, breaking
    ``dict[str, str]`` into two unresolvable "types".
    """
    if signature and "<factory>" in signature:
        return signature.replace("<factory>", "..."), return_annotation
    return None


class PackageModules(SphinxDirective):
    """``.. package-modules:: airflow_provider_truconnect.client``: one section with ``automodule`` per public module.

    Lists the package's modules at build time, so that a new module of the client core is in the API reference (and
    its docstrings are checked) without anyone remembering to add it.
    """

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        package = self.arguments[0]
        lines: list[str] = []
        for path in sorted((REPO_ROOT / package.replace(".", "/")).glob("*.py")):
            if path.stem.startswith("_"):
                continue
            module = f"{package}.{path.stem}"
            lines += [
                f"``{path.stem}``",
                "-" * (len(path.stem) + 4),
                "",
                f".. automodule:: {module}",
                "   :members:",
                "",
            ]
            self.env.note_dependency(str(path))
        container = nodes.section()
        nested_parse_with_titles(self.state, StringList(lines, source=f"<package-modules {package}>"), container)
        return list(container.children)


def setup(app: Any) -> dict[str, Any]:
    _prefer_sibling_modules()
    app.add_directive("package-modules", PackageModules)
    app.connect("missing-reference", _resolve_short_names)
    app.connect("autodoc-process-signature", _dataclass_factories)
    return {"parallel_read_safe": True}
