"""The legacy connection form's widgets, through Airflow 2's own form class, providers manager and view code.

Collected only where Airflow 2's classic web UI exists (see ``conftest.py``); the browser tests in
``tests/e2e/test_ui_connection_af211.py`` drive the same form in Chromium.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.datastructures import MultiDict

from airflow_provider_truconnect.client.config import ClientConfig
from airflow_provider_truconnect.get_provider_info import CONN_FIELDS, CONN_TYPE
from airflow_provider_truconnect.hooks.legacy_form import legacy_form_widgets
from airflow_provider_truconnect.hooks.truconnect import TruConnectHook

PREFIX = f"extra__{CONN_TYPE}__"


@pytest.fixture(scope="module", autouse=True)
def request_context() -> Iterator[None]:
    """A Flask request context with Babel, as the webserver renders forms in (labels are translated lazily)."""
    from flask import Flask
    from flask_babel import Babel

    app = Flask(__name__)
    app.config.update(WTF_CSRF_ENABLED=False, SECRET_KEY="test")
    Babel(app)
    with app.test_request_context():
        yield


@pytest.fixture(scope="module")
def form_class() -> Any:
    """Airflow's connection form class, with the fields of every installed provider."""
    from airflow.www.forms import create_connection_form_class

    return create_connection_form_class()


@pytest.fixture(scope="module")
def view() -> Any:
    """Airflow's connection view, for its ``process_form`` (Save) and ``prefill_form`` (edit page)."""
    from airflow.www.views import ConnectionModelView

    return ConnectionModelView.__new__(ConnectionModelView)


def browser_post(**extras: str) -> MultiDict[str, str]:
    """What a browser submits for a Truphone Connect form: every text, number and select field, checked boxes only.

    :param extras: field name -> submitted text, over the values the add form shows; ``None`` leaves a box unchecked.
    """
    shown = {
        "oauth_url": "https://auth.example.com/token",
        "scope": "",
        "client_auth": "client_secret_post",
        "timeout": "30",
        "max_retries": "4",
        "verify_ssl": "",
        "allow_insecure_http": None,
    }
    for name, spec in CONN_FIELDS.items():
        shown.setdefault(name, str(spec["schema"].get("default", "")))
    shown.update(extras)
    data = {"conn_id": "tc", "conn_type": CONN_TYPE, "host": "https://api.example.com/connect-api", "login": "cid"}
    data.update({PREFIX + k: v for k, v in shown.items() if v is not None})
    return MultiDict(data)


def test_the_providers_manager_keeps_every_widget_and_the_connection_type() -> None:
    """A field class other than the four Airflow accepts would drop the whole form and the connection type."""
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert {PREFIX + name for name in CONN_FIELDS} <= set(manager.connection_form_widgets)
    hook = manager.hooks[CONN_TYPE]
    assert hook is not None and hook.connection_testable and hook.connection_id_attribute_name == "truconnect_conn_id"
    assert manager.field_behaviours[CONN_TYPE]["placeholders"].keys() <= {"host", "login", "password", "schema"}


def test_widgets_render_what_connection_form_js_and_the_client_expect(form_class: Any) -> None:
    form = form_class()
    html = {name: str(getattr(form, PREFIX + name)()) for name in CONN_FIELDS}
    for name, markup in html.items():
        assert f'id="{PREFIX}{name}"' in markup, name
    select = html["client_auth"]
    assert select.startswith("<select") and 'class="form-control"' in select
    assert re.findall(r'value="([^"]*)"', select) == ["client_secret_post", "client_secret_basic"]
    assert re.search(r'<option selected value="client_secret_post">', select), select
    timeout = html["timeout"]
    assert 'type="number"' in timeout and 'step="any"' in timeout and 'min="1"' in timeout and 'value="30"' in timeout
    retries = html["max_retries"]
    assert 'type="number"' in retries and 'step="1"' in retries and 'min="0"' in retries and 'max="10"' in retries
    # A checkbox submits "true", which the client reads as a boolean (wtforms' "y" is not one).
    assert 'value="true"' in html["allow_insecure_http"] and "checked" not in html["allow_insecure_http"]
    # TLS verification is text: empty (the machine's CA variables), true, false or a CA bundle path.
    assert 'type="text"' in html["verify_ssl"] and 'value=""' in html["verify_ssl"]
    assert 'type="text"' in html["oauth_url"] and 'class="form-control"' in html["oauth_url"]


def test_save_stores_typed_extras_under_plain_names(form_class: Any, view: Any) -> None:
    form = form_class(formdata=browser_post(client_auth="client_secret_basic", timeout="2.5", max_retries="0"))
    assert form.validate(), form.errors
    view.process_form(form, True)
    extra = json.loads(form.extra.data)
    assert extra["client_auth"] == "client_secret_basic"
    assert extra["timeout"] == 2.5
    assert extra["max_retries"] == 0 and isinstance(extra["max_retries"], int)
    assert "verify_ssl" not in extra and extra["allow_insecure_http"] is False  # empty: the environment decides
    assert extra["oauth_url"] == "https://auth.example.com/token"
    assert "scope" not in extra, "an empty field is not stored"
    assert not [k for k in extra if k.startswith("extra__")]
    config = ClientConfig.from_connection_fields(host="https://api.example.com", login="c", password="s", extra=extra)
    assert (config.timeout, config.max_retries, config.client_auth) == (2.5, 0, "client_secret_basic")


def test_whole_numbers_are_stored_as_integers_and_empty_numbers_not_at_all(form_class: Any, view: Any) -> None:
    form = form_class(formdata=browser_post(timeout="45", max_retries=""))
    assert form.validate(), form.errors
    view.process_form(form, True)
    extra = json.loads(form.extra.data)
    assert extra["timeout"] == 45 and isinstance(extra["timeout"], int)
    assert "max_retries" not in extra


@pytest.mark.parametrize(
    ("field", "text", "error"),
    [
        ("timeout", "soon", "Not a number."),
        ("timeout", "nan", "Not a number."),
        ("timeout", "inf", "Not a number."),
        ("timeout", "0.5", "Must be at least 1."),
        ("max_retries", "2.5", "Not a whole number."),
        ("max_retries", "11", "Must be at most 10."),
        ("max_retries", "-1", "Must be at least 0."),
        ("client_auth", "private_key_jwt", "Invalid value"),
    ],
)
def test_invalid_values_are_refused_on_save(form_class: Any, field: str, text: str, error: str) -> None:
    form = form_class(formdata=browser_post(**{field: text}))
    assert not form.validate()
    assert list(form.errors) == [PREFIX + field]
    assert form.errors[PREFIX + field][0].startswith(error), form.errors


def test_another_connection_type_ignores_these_fields(form_class: Any, view: Any) -> None:
    """``connection_form.js`` removes other types' rows, so the browser submits none of these fields."""
    form = form_class(formdata=MultiDict({"conn_id": "h", "conn_type": "http", "host": "example.com"}))
    assert form.validate(), form.errors
    view.process_form(form, True)
    assert not form.extra.data


def test_the_edit_page_shows_the_stored_values(form_class: Any, view: Any) -> None:
    stored = {"oauth_url": "https://a.example.com/t", "client_auth": "client_secret_basic", "timeout": 2.5}
    form = form_class()
    form.extra.data = json.dumps(stored)
    view.prefill_form(form, 1)
    assert 'value="https://a.example.com/t"' in str(form[PREFIX + "oauth_url"]())
    assert '<option selected value="client_secret_basic">' in str(form[PREFIX + "client_auth"]())
    assert 'value="2.5"' in str(form[PREFIX + "timeout"]())


def test_a_stored_value_outside_the_choices_is_shown_and_refused(form_class: Any, view: Any) -> None:
    form = form_class()
    form.extra.data = json.dumps({"client_auth": "tls_client_auth"})
    view.prefill_form(form, 1)
    assert '<option selected value="tls_client_auth">' in str(form[PREFIX + "client_auth"]())
    resubmitted = form_class(formdata=browser_post(client_auth="tls_client_auth"))
    assert not resubmitted.validate() and PREFIX + "client_auth" in resubmitted.errors


def test_what_the_test_button_sends_is_read_by_the_client() -> None:
    """*Test* posts the raw form text (``connection_form.js``), not the converted values."""
    sent = {"timeout": "2.5", "max_retries": "4", "verify_ssl": "true", "allow_insecure_http": "true"}
    config = ClientConfig.from_connection_fields(host="https://h.example.com", login="c", password="s", extra=sent)
    assert (config.timeout, config.max_retries, config.verify_ssl, config.allow_insecure_http) == (2.5, 4, True, True)


def test_the_builder_handles_any_enum_and_field_kind() -> None:
    from wtforms import Form, PasswordField, StringField

    spec = {
        "level": {"label": "Level", "schema": {"type": ["integer", "null"], "enum": [1, 2, 3], "default": 2}},
        "mode": {"label": "Mode", "description": "d", "schema": {"type": ["string", "null"], "enum": ["a", "b"]}},
        "api_pass": {"label": "Pass", "schema": {"type": ["string", "null"], "format": "password"}},
        "name": {"label": "Name", "schema": {"type": "string", "default": "x"}},
    }
    widgets = legacy_form_widgets(spec)
    assert widgets["level"].field_class is StringField and widgets["api_pass"].field_class is PasswordField
    synthetic = type("Synthetic", (Form,), dict(widgets))
    form = synthetic()
    mode = str(form.mode())
    assert re.findall(r'value="([^"]*)"', mode) == ["", "a", "b"], "no default: an empty choice first"
    assert '<option selected value="2">' in str(form.level())
    assert 'type="password"' in str(form.api_pass()) and 'value="x"' in str(form.name())
    submitted = synthetic(formdata=MultiDict({"level": "3", "mode": "", "api_pass": "p", "name": "y"}))
    assert submitted.validate(), submitted.errors
    assert submitted.data == {"level": 3, "mode": "", "api_pass": "p", "name": "y"}
    assert not synthetic(formdata=MultiDict({"level": "4"})).validate()


def test_hook_method_builds_one_widget_per_declarative_field() -> None:
    widgets = TruConnectHook.get_connection_form_widgets()
    assert list(widgets) == list(CONN_FIELDS)
    for name, field in widgets.items():
        assert str(field.kwargs["label"]) == CONN_FIELDS[name]["label"]
        assert field.kwargs["description"] == CONN_FIELDS[name]["description"]
