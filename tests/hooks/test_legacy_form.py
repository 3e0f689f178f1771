"""The legacy connection form's field behaviour (Airflow 2.11 to 3.1); its widgets are in test_legacy_form_flask.py."""

from __future__ import annotations

import copy

from airflow.providers_manager import _ensure_prefix_for_placeholders

from airflow_provider_truconnect.get_provider_info import CONN_FIELDS, CONN_TYPE, UI_FIELD_BEHAVIOUR
from airflow_provider_truconnect.hooks.legacy_form import legacy_field_behaviour
from airflow_provider_truconnect.hooks.truconnect import TruConnectHook

#: Element ids of Airflow 2's connection form (``airflow/www/forms.py``), where ``connection_form.js`` looks fields up.
AIRFLOW2_FORM_IDS = {"conn_id", "conn_type", "description", "host", "schema", "login", "password", "port", "extra"}
EXTRA_IDS = {f"extra__{CONN_TYPE}__{name}" for name in CONN_FIELDS}


def test_every_behaviour_key_names_an_element_of_the_airflow2_form() -> None:
    """``connection_form.js`` calls ``getElementById(key)`` for each key and stops at the first it cannot find."""
    behaviour = TruConnectHook.get_ui_field_behaviour()
    # What the providers manager hands the page: placeholder keys other than connection attributes get prefixed.
    on_page = _ensure_prefix_for_placeholders(copy.deepcopy(behaviour), CONN_TYPE)
    ids = AIRFLOW2_FORM_IDS | EXTRA_IDS
    assert set(on_page["hidden_fields"]) <= ids
    assert set(on_page["relabeling"]) <= ids
    assert set(on_page["placeholders"]) <= ids, on_page["placeholders"]


def test_legacy_behaviour_is_the_declarative_one_minus_unplaceable_placeholders() -> None:
    behaviour = TruConnectHook.get_ui_field_behaviour()
    assert behaviour["hidden_fields"] == UI_FIELD_BEHAVIOUR["hidden-fields"]
    assert behaviour["relabeling"] == UI_FIELD_BEHAVIOUR["relabeling"]
    assert behaviour["placeholders"] == {
        k: v for k, v in UI_FIELD_BEHAVIOUR["placeholders"].items() if k != "description"
    }
    assert behaviour["placeholders"]["host"] == UI_FIELD_BEHAVIOUR["placeholders"]["host"]


def test_legacy_behaviour_drops_every_placeholder_airflow2_would_prefix() -> None:
    declarative = {
        "hidden-fields": ["port"],
        "relabeling": {"login": "Client ID"},
        "placeholders": {"host": "h", "schema": "s", "extra": "{}", "description": "d", "oauth_url": "u"},
    }
    assert legacy_field_behaviour(declarative) == {
        "hidden_fields": ["port"],
        "relabeling": {"login": "Client ID"},
        "placeholders": {"host": "h", "schema": "s", "extra": "{}"},
    }
    assert legacy_field_behaviour({}) == {"hidden_fields": [], "relabeling": {}, "placeholders": {}}


def test_legacy_behaviour_is_a_copy() -> None:
    TruConnectHook.get_ui_field_behaviour()["hidden_fields"].append("host")
    TruConnectHook.get_ui_field_behaviour()["relabeling"]["host"] = "changed"
    assert TruConnectHook.get_ui_field_behaviour()["hidden_fields"] == UI_FIELD_BEHAVIOUR["hidden-fields"]
    assert UI_FIELD_BEHAVIOUR["relabeling"]["host"] == "API base URL"
