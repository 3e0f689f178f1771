"""The connection form of Airflow 2.11 to 3.1, built from the declarative form data of :mod:`get_provider_info`.

Those versions render the form with Flask-AppBuilder from the hook's ``get_ui_field_behaviour()`` and
``get_connection_form_widgets()``, and Airflow's ``connection_form.js`` drives it. That script looks every
placeholder key up with ``document.getElementById`` and stops at the first it cannot find, before it enables *Test*
and before it turns *Extra* into a JSON editor. The providers manager rewrites every placeholder key other than the
connection attributes below to ``extra__<type>__<key>`` (``_ensure_prefix_for_placeholders``), so only those may
carry a placeholder here.

The providers manager also drops a hook's whole form when a widget is not exactly a ``StringField``,
``IntegerField``, ``BooleanField`` or ``PasswordField``; choices and fractional numbers therefore come from widgets
(how a field renders) and filters (how its text becomes a value) on those classes. Flask-AppBuilder and wtforms are
imported only when a form is built: Airflow 3.2+ installs neither.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: Connection attributes whose placeholder keys keep their element id in Airflow 2's form.
STANDARD_FIELD_IDS = frozenset({"host", "schema", "login", "password", "port", "extra"})


def legacy_field_behaviour(behaviour: Mapping[str, Any]) -> dict[str, Any]:
    """Translate the declarative ``ui-field-behaviour`` into the legacy ``get_ui_field_behaviour()`` shape.

    :param behaviour: ``hidden-fields``, ``relabeling`` and ``placeholders`` as in ``get_provider_info()``.
    :return: ``hidden_fields``, ``relabeling`` and the ``placeholders`` Airflow 2's form script can place.
    """
    return {
        "hidden_fields": list(behaviour.get("hidden-fields", [])),
        "relabeling": dict(behaviour.get("relabeling", {})),
        "placeholders": {k: v for k, v in behaviour.get("placeholders", {}).items() if k in STANDARD_FIELD_IDS},
    }


def legacy_form_widgets(conn_fields: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Build the wtforms fields of the legacy form from declarative ``conn-fields``.

    An ``enum`` becomes a drop-down of its values, ``integer`` and ``number`` a number input (fractions allowed
    for ``number``) that stores a JSON number, ``boolean`` a checkbox, ``format: password`` a masked input, anything
    else a text input. ``default``, ``minimum`` and ``maximum`` carry over; every field may be left empty.

    :param conn_fields: field name -> ``{"label", "description", "schema"}``.
    :return: field name -> unbound wtforms field.
    :raises ImportError: when Flask-AppBuilder or wtforms is missing (Airflow 3.2+).
    """
    from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import BooleanField, PasswordField, StringField
    from wtforms.validators import AnyOf, Optional

    widgets: dict[str, Any] = {}
    for name, spec in conn_fields.items():
        schema = spec["schema"]
        types = {schema["type"]} if isinstance(schema["type"], str) else set(schema["type"])
        default = schema.get("default")
        common: dict[str, Any] = {"label": lazy_gettext(spec["label"]), "description": spec.get("description", "")}
        if "enum" in schema:
            values = [v for v in schema["enum"] if v is not None]
            options = [str(v) for v in values]
            widgets[name] = StringField(
                widget=_Select(options if default is not None else ["", *options]),
                filters=[_Choice(values)],
                validators=[Optional(), AnyOf(values)],
                default=default,
                **common,
            )
        elif "boolean" in types:
            widgets[name] = BooleanField(widget=_Checkbox(), default=bool(default), **common)
        elif types & {"integer", "number"}:
            integer = "number" not in types
            minimum, maximum = schema.get("minimum"), schema.get("maximum")
            widgets[name] = StringField(
                widget=_Input("number", step="1" if integer else "any", min=minimum, max=maximum),
                filters=[_Number(integer)],
                validators=[Optional(), _NumberCheck(integer, minimum, maximum)],
                default=default,
                **common,
            )
        elif schema.get("format") == "password":
            widgets[name] = PasswordField(widget=BS3PasswordFieldWidget(), **common)
        else:
            widgets[name] = StringField(widget=BS3TextFieldWidget(), default=default, **common)
    return widgets


def _html(tag: str, **attrs: Any) -> str:
    from wtforms.widgets import html_params

    return f"<{tag} {html_params(**attrs)}>"


class _Input:
    """An ``<input>`` with Bootstrap's ``form-control`` class, which Airflow 2's form script works on."""

    def __init__(self, input_type: str, **attrs: Any) -> None:
        self.input_type = input_type
        self.attrs = {k: v for k, v in attrs.items() if v is not None}

    def __call__(self, field: Any, **kwargs: Any) -> Any:
        from markupsafe import Markup

        attrs = {"id": field.id, **self.attrs, **kwargs, "class": "form-control"}
        return Markup(_html("input", name=field.name, type=self.input_type, value=field._value(), **attrs))


class _Checkbox:
    """A checkbox that submits ``true``: Airflow 2's *Test* button sends the submitted text, which the client reads
    as a boolean (wtforms' own ``y`` would read as a CA bundle path for ``verify_ssl``)."""

    def __call__(self, field: Any, **kwargs: Any) -> Any:
        from markupsafe import Markup

        attrs = {"id": field.id, **kwargs, "checked": bool(field.data)}
        return Markup(_html("input", name=field.name, type="checkbox", value="true", **attrs))


class _Select:
    """A ``<select>`` of fixed options; a current value outside them is shown too, so that it is seen and rejected
    rather than silently replaced by the first option."""

    def __init__(self, options: Sequence[str]) -> None:
        self.options = list(options)

    def __call__(self, field: Any, **kwargs: Any) -> Any:
        from markupsafe import Markup, escape

        current = field._value()
        options = self.options if current in self.options else [*self.options, current]
        html = [_html("select", name=field.name, **{"id": field.id, **kwargs, "class": "form-control"})]
        for value in options:
            html.append(f"{_html('option', value=value, selected=value == current)}{escape(value)}</option>")
        return Markup("".join(html) + "</select>")


class _Choice:
    """Filter: the submitted text of an option back to its enum value (an integer enum stays an integer)."""

    def __init__(self, values: Sequence[Any]) -> None:
        self.by_text = {str(v): v for v in values}

    def __call__(self, value: Any) -> Any:
        return self.by_text.get(value, value) if isinstance(value, str) else value


class _Number:
    """Filter: submitted text to an ``int`` (a whole number) or ``float``; empty stays ``""`` so that Airflow stores
    nothing; anything else is left for :class:`_NumberCheck` to reject."""

    def __init__(self, integer: bool) -> None:
        self.integer = integer

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str) or not value.strip():
            return value
        try:
            number = float(value)
        except ValueError:
            return value
        if not math.isfinite(number) or (self.integer and not number.is_integer()):
            return value
        return int(number) if number.is_integer() else number


class _NumberCheck:
    """Validator: the filtered value is a finite number (whole for ``integer``) within the schema's bounds."""

    def __init__(self, integer: bool, minimum: float | None, maximum: float | None) -> None:
        self.integer, self.minimum, self.maximum = integer, minimum, maximum

    def __call__(self, form: Any, field: Any) -> None:
        from wtforms.validators import ValidationError

        value = field.data
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError("Not a whole number." if self.integer else "Not a number.")
        if self.minimum is not None and value < self.minimum:
            raise ValidationError(f"Must be at least {self.minimum:g}.")
        if self.maximum is not None and value > self.maximum:
            raise ValidationError(f"Must be at most {self.maximum:g}.")
