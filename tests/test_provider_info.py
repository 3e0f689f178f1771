"""Provider discovery: a malformed provider info dict breaks every provider of the installation, so guard it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import airflow
import jsonschema
import pytest
from packaging.utils import canonicalize_name

from airflow_provider_truconnect import __version__
from airflow_provider_truconnect.get_provider_info import get_provider_info


def test_provider_info_matches_airflow_schema() -> None:
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_package_name_is_the_canonical_distribution_name() -> None:
    dist = metadata.distribution("airflow-provider-truconnect")
    assert get_provider_info()["package-name"] == canonicalize_name(dist.metadata["Name"])
    assert dist.version == __version__
    entry_points = [ep for ep in dist.entry_points if ep.group == "apache_airflow_provider"]
    assert [ep.load()()["package-name"] for ep in entry_points] == ["airflow-provider-truconnect"]


def test_every_listed_module_imports_and_has_its_classes() -> None:
    import importlib

    info = get_provider_info()
    for section in ("hooks", "operators", "sensors", "triggers"):
        for module in info[section][0]["python-modules"]:
            importlib.import_module(module)
    hook_path = info["connection-types"][0]["hook-class-name"]
    module, _, name = hook_path.rpartition(".")
    hook_cls = getattr(importlib.import_module(module), name)
    assert hook_cls.conn_type == info["connection-types"][0]["connection-type"] == "truconnect"
    assert hook_cls.default_conn_name == "truconnect_default"


def test_declarative_form_and_legacy_behaviour_agree() -> None:
    from airflow_provider_truconnect.hooks.truconnect import TruConnectHook

    conn_type = get_provider_info()["connection-types"][0]
    legacy = TruConnectHook.get_ui_field_behaviour()
    behaviour = conn_type["ui-field-behaviour"]
    assert legacy["hidden_fields"] == behaviour["hidden-fields"]
    assert legacy["relabeling"] == behaviour["relabeling"]
    assert legacy["relabeling"] == {"host": "API base URL", "login": "Client ID", "password": "Client Secret"}
    for name, spec in conn_type["conn-fields"].items():
        assert "null" in spec["schema"]["type"], f"{name} must be nullable or the UI marks it required"
        assert spec["label"] and spec["description"]
        for word in ("token", "secret", "password", "key", "auth_header"):
            assert word not in name, f"extra {name!r} would be redacted by Airflow"


def _airflow(*args: str) -> str:
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    result = subprocess.run(
        [sys.executable, "-m", "airflow", *args], capture_output=True, text=True, env=env, timeout=180, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # The CLI may print notices before the JSON document.
    return result.stdout[result.stdout.index("[{") :]


def test_airflow_cli_lists_the_provider_and_its_connection_type() -> None:
    listed = _airflow("providers", "list", "-o", "json")
    assert any(p["package_name"] == "airflow-provider-truconnect" for p in json.loads(listed))
    hooks = _airflow("providers", "hooks", "-o", "json")
    entries = {h["connection_type"]: h for h in json.loads(hooks)}
    assert "truconnect" in entries
    assert entries["truconnect"]["class"] == "airflow_provider_truconnect.hooks.truconnect.TruConnectHook"


def test_legacy_form_widgets_mirror_the_declarative_fields() -> None:
    """Airflow < 3.2 builds the form from wtforms widgets; they must offer the same fields, kinds and defaults."""
    from airflow_provider_truconnect.get_provider_info import CONN_FIELDS
    from airflow_provider_truconnect.hooks.truconnect import TruConnectHook

    try:
        import flask_appbuilder  # noqa: F401
    except ImportError:
        # Airflow 3 ships no Flask forms: the legacy method may only fail when called, never at import.
        with pytest.raises(ImportError):
            TruConnectHook.get_connection_form_widgets()
        return
    from airflow.providers_manager import ProvidersManager

    widgets = TruConnectHook.get_connection_form_widgets()
    assert set(widgets) == set(CONN_FIELDS)
    # Airflow 2 silently drops a whole form that uses a field class it does not support.
    manager = ProvidersManager()
    manager._add_widgets("airflow-provider-truconnect", TruConnectHook, widgets)
    assert {f"extra__truconnect__{name}" for name in CONN_FIELDS} <= set(manager._connection_form_widgets)
    # Choices and numbers are StringFields with their own widgets (tests/hooks/test_legacy_form_flask.py).
    kinds = {name: field.field_class.__name__ for name, field in widgets.items()}
    assert set(kinds.values()) <= {"StringField", "IntegerField", "BooleanField", "PasswordField"}, kinds
    assert widgets["verify_ssl"].field_class.__name__ == "StringField" and not widgets["verify_ssl"].kwargs.get(
        "default"
    )
    assert widgets["client_auth"].kwargs["default"] == "client_secret_post"
