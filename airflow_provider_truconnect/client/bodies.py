"""Request bodies: JSON serialisation that names what JSON cannot carry, before anything is sent.

At the bottom of the client's layers (it needs only :mod:`.errors`), so that order validation and the client core can
both use it.
"""

from __future__ import annotations

import json as jsonlib
import math
from typing import Any

from airflow_provider_truconnect.client.errors import TruConnectConfigError


def json_body(value: Any, field_name: str = "json") -> bytes:
    """Serialise a request body, rejecting what JSON cannot carry before anything is sent.

    :param value: the body.
    :param field_name: the argument's name, for the error.
    :raises TruConnectConfigError: naming the first value that is not JSON-serialisable (or a NaN/infinity).
    """
    try:
        return jsonlib.dumps(value, allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError):
        where, problem = find_unserialisable(value, field_name)
        raise TruConnectConfigError(where or field_name, problem or "is not JSON-serialisable") from None


def find_unserialisable(value: Any, path: str, depth: int = 0) -> tuple[str, str]:
    """The path of the first value JSON cannot carry inside ``value``, and what is wrong with it.

    :param value: the value to search.
    :param path: the name of ``value``, e.g. ``json`` or ``order``; nested fields are appended with dots.
    """
    if depth > 100:
        return path, "is nested too deeply (or contains itself)"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int | float | bool) and key is not None:
                return f"{path}.{key!r}", f"has a key of type {type(key).__name__}; JSON keys must be strings"
            found = find_unserialisable(item, f"{path}.{key}", depth + 1)
            if found[0]:
                return found
        return "", ""
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = find_unserialisable(item, f"{path}[{index}]", depth + 1)
            if found[0]:
                return found
        return "", ""
    if isinstance(value, float) and not math.isfinite(value):
        return path, f"is {value!r}, which JSON cannot carry"
    if value is None or isinstance(value, str | int | float | bool):
        return "", ""
    return path, f"is not JSON-serialisable ({type(value).__name__}); convert it to a string or number first"
