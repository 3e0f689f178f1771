"""Browser tests: the Truphone Connect form in Airflow 2.11's classic web UI (the legacy hook form methods).

An Airflow 2.11.2 webserver runs from ``.venv-af211``; Playwright in this (Airflow 3.3) environment drives Debian's
Chromium against it. Screenshots go to ``test-results/e2e/screenshots/af211-*.png``.
"""

from __future__ import annotations

import atexit
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow211_webserver import Airflow211Webserver, venv211_missing
from browser import TIMEOUT_MS, JsErrors, KnownError, launch_chromium

from airflow_provider_truconnect.emulator.server import RunningEmulator
from airflow_provider_truconnect.get_provider_info import CONN_FIELDS, HOOK_NAME, UI_FIELD_BEHAVIOUR

pytestmark = pytest.mark.e2e

PREFIX = "extra__truconnect__"
AIRFLOW_211_PAGE_ERRORS = [
    KnownError(
        r"Cannot set properties of undefined \(setting 'autocomplete'\)",
        r"/static/dist/(main|dags)\.",
        "main.js turns off autocomplete on #username and #password, which only the login page has",
    )
]
WRONG_SECRET = "wrong-secret-0123456789"


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    # SIGTERM takes the same path as Ctrl-C, so the fixture below still stops the webserver.
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="module")
def af211(e2e_results_dir: Path) -> Iterator[Airflow211Webserver]:
    """The Airflow 2.11 webserver; fails (never skips) when ``.venv-af211`` is missing."""
    missing = venv211_missing()
    if missing:
        pytest.fail(missing, pytrace=False)
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    web = Airflow211Webserver(e2e_results_dir)
    atexit.register(web.stop)
    try:
        web.start()
        (e2e_results_dir / "af211-startup.json").write_text(
            json.dumps({"seconds": web.startup_seconds, "url": web.url}) + "\n"
        )
        yield web
    finally:
        web.stop()
        atexit.unregister(web.stop)
        web.cleanup()
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium; fails (never skips) when it is missing."""
    with launch_chromium() as chromium:
        yield chromium


@pytest.fixture
def js_errors() -> JsErrors:
    """The JavaScript errors of this test's page, from the login on."""
    return JsErrors(AIRFLOW_211_PAGE_ERRORS)


@pytest.fixture
def page(browser: Any, af211: Airflow211Webserver, js_errors: JsErrors, e2e_results_dir: Path) -> Iterator[Any]:
    """A page logged in to the 2.11 UI; a screenshot of where it ended is kept."""
    context = browser.new_context(viewport={"width": 1400, "height": 1300})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    js_errors.watch(pg)
    pg.goto(f"{af211.url}/login/")
    pg.locator("input[name=username]").fill(af211.user)
    pg.locator("input[name=password]").fill(af211.password)
    pg.locator("input[type=submit]").click()
    pg.wait_for_url("**/home")
    try:
        yield pg
    finally:
        pg.screenshot(path=str(e2e_results_dir / "screenshots" / "af211-last-page.png"), full_page=True)
        context.close()


def _field(page: Any, name: str) -> Any:
    return page.locator(f"#{name}")


def _row(page: Any, name: str) -> Any:
    """The form row (``<tr>``) of a field; ``connection_form.js`` hides and moves rows, not inputs."""
    return page.locator(f"tr:has(#{name})")


def _choose_type(page: Any) -> None:
    """Pick the type as a user does: open the select2 drop-down, type, click the entry."""
    page.locator("#select2-conn_type-container").click()
    page.locator(".select2-search__field").fill("Truphone")
    page.locator(".select2-results__option", has_text=HOOK_NAME).click()
    _row(page, f"{PREFIX}oauth_url").wait_for()


def _test(page: Any) -> tuple[dict[str, Any], str]:
    """Press *Test*; :return: the API's answer and the alert the page shows."""
    button = page.locator("#test-connection")
    assert button.is_enabled(), f"Test is disabled: {button.get_attribute('title')}"
    with page.expect_response("**/api/v1/connections/test") as info:
        button.click()
    response = info.value
    assert response.status == 200, response.text()
    body = response.json()
    alert = page.locator(".alert", has_text=body["message"][:40]).first
    alert.wait_for()
    page.evaluate("window.scrollTo(0, 0)")  # the alert is at the top; the navigation bar sticks to the view
    page.wait_for_timeout(300)  # the alert fades in; let the screenshot show it
    return body, alert.inner_text()


def _defaults_stored() -> dict[str, Any]:
    """:return: what Save stores for the fields left as the add form shows them (their defaults; empty ones not)."""
    stored: dict[str, Any] = {}
    for name, spec in CONN_FIELDS.items():
        schema = spec["schema"]
        default = bool(schema.get("default")) if "boolean" in schema["type"] else schema.get("default")
        if default is not None:
            stored[name] = default
    return stored


def test_add_form_renders_and_enables_test(
    page: Any, js_errors: JsErrors, af211: Airflow211Webserver, e2e_results_dir: Path
) -> None:
    page.goto(f"{af211.url}/connection/add")
    js_errors.assert_none("on loading the add form")
    _choose_type(page)
    js_errors.assert_none("after choosing the type")
    page.screenshot(path=str(e2e_results_dir / "screenshots" / "af211-add-form.png"), full_page=True)

    assert page.locator(".select2-container--open").count() == 0, "the type drop-down stayed open"
    test_button = page.locator("#test-connection")
    assert test_button.is_enabled(), test_button.get_attribute("title")

    for field, label in UI_FIELD_BEHAVIOUR["relabeling"].items():
        assert page.locator(f"label[for={field}]").inner_text().strip() == label
    for field in UI_FIELD_BEHAVIOUR["hidden-fields"]:
        assert not _row(page, field).is_visible(), f"{field} should be hidden"
    for field, text in UI_FIELD_BEHAVIOUR["placeholders"].items():
        if field != "description":  # Airflow 2 cannot place it: see hooks/legacy_form.py
            assert _field(page, field).get_attribute("placeholder") == text, field

    for name, spec in CONN_FIELDS.items():
        row = _row(page, PREFIX + name)
        assert row.is_visible(), f"extra field {name} not shown"
        assert row.locator("label").inner_text().strip() == spec["label"], f"label of {name}"
        assert row.locator(".help-block").inner_text().strip() == spec["description"], f"description of {name}"
        element = _field(page, PREFIX + name)
        schema = spec["schema"]
        if "enum" in schema:
            options = element.locator("option").evaluate_all("os => os.map(o => o.value)")
            assert [o for o in options if o] == [str(v) for v in schema["enum"] if v is not None], name
            assert element.input_value() == str(schema.get("default") or "")
        elif "boolean" in schema["type"]:
            assert element.get_attribute("type") == "checkbox"
            assert element.is_checked() is bool(schema.get("default")), name
        elif {"integer", "number"} & set(schema["type"]):
            assert element.get_attribute("type") == "number", name
            assert element.get_attribute("step") == ("any" if "number" in schema["type"] else "1"), name
            assert element.input_value() == str(schema.get("default", "")), name
        else:
            assert element.get_attribute("type") == "text", name


def test_fill_test_save_and_edit(
    page: Any, js_errors: JsErrors, af211: Airflow211Webserver, e2e_emulator: RunningEmulator, e2e_results_dir: Path
) -> None:
    shots = e2e_results_dir / "screenshots"
    secret = e2e_emulator.client_secret
    page.goto(f"{af211.url}/connection/add")
    _choose_type(page)
    js_errors.assert_none("on opening the add form and choosing the type")
    page.get_by_label("Connection Id").fill("tc_ui_af211")
    page.get_by_label("API base URL").fill(e2e_emulator.api_base)
    page.get_by_label("Client ID").fill(e2e_emulator.client_id)
    page.get_by_label("Client Secret").fill(secret)
    page.get_by_label("Token endpoint URL").fill(e2e_emulator.oauth_url)
    page.get_by_label("Client authentication").select_option("client_secret_basic")
    page.get_by_label("Timeout (seconds)").fill("2.5")
    page.screenshot(path=str(shots / "af211-form-filled.png"), full_page=True)

    body, alert = _test(page)
    page.screenshot(path=str(shots / "af211-test-success.png"), full_page=True)
    assert body["status"] is True, body
    assert "Obtained an OAuth2 token and listed products at" in alert, alert

    page.get_by_label("Client Secret").fill(WRONG_SECRET)
    body, alert = _test(page)
    page.screenshot(path=str(shots / "af211-test-failure.png"), full_page=True)
    assert body["status"] is False, body
    assert "401" in alert, alert
    assert WRONG_SECRET not in page.content() and secret not in page.content()
    js_errors.assert_none("while filling and testing the add form")

    page.get_by_label("Client Secret").fill(secret)
    page.get_by_role("button", name="Save").click()
    page.locator(".alert", has_text="Added Row").wait_for()

    stored = page.request.get(f"{af211.url}/api/v1/connections/tc_ui_af211")
    assert stored.status == 200, stored.text()
    assert secret not in stored.text()
    connection = stored.json()
    assert connection["conn_type"] == "truconnect"
    assert connection["host"] == e2e_emulator.api_base
    assert connection["login"] == e2e_emulator.client_id
    extra = json.loads(connection["extra"])
    (e2e_results_dir / "tc_ui_af211-stored-extra.json").write_text(json.dumps(extra, indent=1) + "\n")
    filled = {"oauth_url": e2e_emulator.oauth_url, "client_auth": "client_secret_basic", "timeout": 2.5}
    assert extra == {**_defaults_stored(), **filled}, extra

    page.goto(f"{af211.url}/connection/list/")
    page.get_by_role("row").filter(has=page.get_by_text("tc_ui_af211", exact=True)).get_by_role(
        "link", name="Edit"
    ).click()
    page.wait_for_url("**/connection/edit/**")
    _row(page, f"{PREFIX}oauth_url").wait_for()
    js_errors.assert_none("on loading the edit form")
    assert page.locator(".CodeMirror").is_visible(), "Extra is not the JSON editor"
    assert page.locator("#test-connection").is_enabled()
    assert _field(page, f"{PREFIX}client_auth").input_value() == "client_secret_basic"
    assert _field(page, f"{PREFIX}timeout").input_value() == "2.5"
    assert _field(page, f"{PREFIX}oauth_url").input_value() == e2e_emulator.oauth_url
    page.screenshot(path=str(shots / "af211-edit-form.png"), full_page=True)

    # Airflow 2 never sends a stored password back to the browser, so Test needs the secret typed again.
    body, alert = _test(page)
    assert body["status"] is False and "client secret" in alert.lower(), alert
    page.get_by_label("Client Secret").fill(secret)
    body, alert = _test(page)
    page.screenshot(path=str(shots / "af211-edit-test-success.png"), full_page=True)
    assert body["status"] is True, body
    assert "Obtained an OAuth2 token" in alert, alert
    js_errors.assert_none("on the edit form")
    server_log = (e2e_results_dir / "logs" / "af211-webserver.log").read_text(errors="replace")
    assert secret not in server_log and WRONG_SECRET not in server_log, "a client secret in the webserver log"
