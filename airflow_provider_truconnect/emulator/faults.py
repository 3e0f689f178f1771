"""Injected faults: what a fault is, how its JSON description is checked, and the book that decides which fault a
request meets. How a fault is answered on the wire lives in :mod:`~airflow_provider_truconnect.emulator.fault_answers`.

Kinds (``EmulatorControl.add_fault`` documents each with an example):

========================  ===================================================================================
``status``                ``status=S`` for any S in 100-599; 1xx is written raw and the connection closed; 3xx
                          carries a ``Location``; 204/205/304 have no body; unassigned codes (520, 599) are sent
                          as they are
``malformed``             ``body="malformed"``: JSON cut short (default status 200)
``html``                  ``body="html"``: an nginx gateway page (default status 502)
``not_json``              ``body="text"``: a ``text/plain`` body (default status 200)
``empty``                 ``body="empty"``: ``Content-Length: 0`` under ``application/json`` (default 200)
``truncated``             ``body="truncated"``: fewer body bytes than ``Content-Length`` announces, then close
``not_http``              ``raw="not_http"``: bytes that are not HTTP at all, then close
``headers_never_end``     ``raw="headers_never_end"``: a status line and a header, then nothing, connection open
``drop``                  ``drop=True``: close the connection without any answer
``delay``                 ``delay=s``: wait before answering (alone: then answer normally)
========================  ===================================================================================
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from airflow_provider_truconnect.emulator.routes import FAULT_ROUTES

BodyKind = Literal["malformed", "html", "text", "empty", "truncated"]
RawKind = Literal["not_http", "headers_never_end"]
BODY_KINDS: tuple[str, ...] = get_args(BodyKind)
RAW_KINDS: tuple[str, ...] = get_args(RawKind)
NO_CONTENT_STATUSES = frozenset({204, 205, 304})
MAX_DELAY = 3600.0
_FIELDS = (
    "route",
    "status",
    "body",
    "raw",
    "location",
    "retry_after",
    "delay",
    "drop",
    "count",
    "fraction",
    "after",
    "seed",
)


@dataclass
class Fault:
    """An injected fault (see the control plane ``POST /__emulator/faults``)."""

    route: str
    status: int | None = None
    retry_after: float | str | None = None
    delay: float = 0.0
    drop: bool = False
    body: BodyKind | None = None
    count: int | None = None
    fraction: float | None = None
    after: bool = False
    seed: int | None = None
    raw: RawKind | None = None
    location: str | None = None
    applied: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    @property
    def answers(self) -> bool:
        """:return: whether the fault replaces the answer (False for a pure delay)."""
        return self.drop or self.raw is not None or self.status is not None or self.body is not None

    @property
    def effective_status(self) -> int:
        """:return: the status of the answer: ``status``, else 502 for ``html``, else 200."""
        if self.status is not None:
            return self.status
        return 502 if self.body == "html" else 200

    def matches(self, route: str) -> bool:
        """:param route: a route template such as ``GET /v2/sims/{iccid}`` or ``token``.
        :return: whether this fault targets it."""
        return self.route in ("*", route)

    def take(self) -> bool:
        """Decide whether this fault fires now, consuming one of its ``count`` if so.

        :return: True when it fires.
        """
        if self.count is not None and self.count <= 0:
            return False
        if self.fraction is not None and self.rng.random() >= self.fraction:
            return False
        if self.count is not None:
            self.count -= 1
        self.applied += 1
        return True

    def to_json(self) -> dict[str, Any]:
        """:return: the JSON view of the fault."""
        return {name: getattr(self, name) for name in _FIELDS if name != "seed"} | {"applied": self.applied}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], default_seed: int) -> Fault:
        """Validate and build a fault from its JSON description.

        :param data: ``{"route", "status"?, "body"?, "raw"?, "location"?, "retry_after"?, "delay"?, "drop"?,
            "count"?, "fraction"?, "after"?, "seed"?}``.
        :param default_seed: seed of the fraction RNG when ``seed`` is absent.
        :return: the fault.
        :raises ValueError: on a bad description, saying what is wrong.
        """
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(unknown)}; known: {', '.join(_FIELDS)}")
        route = data.get("route", "*")
        if route not in FAULT_ROUTES:
            raise ValueError(f"route {route!r} is not one of: {', '.join(sorted(FAULT_ROUTES))}")
        status = _optional_int(data, "status")
        if status is not None and not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code from 100 to 599, got {status}")
        body = data.get("body")
        if body is not None and body not in BODY_KINDS:
            raise ValueError(f"body must be one of {', '.join(BODY_KINDS)}, got {body!r}")
        raw = data.get("raw")
        if raw is not None and raw not in RAW_KINDS:
            raise ValueError(f"raw must be one of {', '.join(RAW_KINDS)}, got {raw!r}")
        drop = _bool(data, "drop")
        delay = _number(data, "delay", 0.0)
        if not 0.0 <= delay <= MAX_DELAY:
            raise ValueError(f"delay must be between 0 and {MAX_DELAY:g} seconds, got {delay:g}")
        retry_after = _retry_after(data.get("retry_after"))
        location = _location(data.get("location"), status)
        _check_combination(status, body, raw, drop, delay, retry_after, location)
        count = _optional_int(data, "count")
        if count is not None and count < 1:
            raise ValueError(f"count must be a positive integer, got {count}")
        fraction = None if data.get("fraction") is None else _number(data, "fraction", 0.0)
        if fraction is not None and not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be between 0 and 1, got {fraction:g}")
        if fraction is None and count is None:
            count = 1
        seed = _optional_int(data, "seed")
        return cls(
            route=route,
            status=status,
            retry_after=retry_after,
            delay=delay,
            drop=drop,
            body=body,
            count=count,
            fraction=fraction,
            after=_bool(data, "after"),
            seed=seed,
            raw=raw,
            location=location,
            rng=random.Random(f"{default_seed if seed is None else seed}:{route}"),
        )


def _optional_int(data: Mapping[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return value


def _bool(data: Mapping[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def _number(data: Mapping[str, Any], name: str, default: float) -> float:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _retry_after(value: Any) -> float | str | None:
    if value is None:
        return None
    if isinstance(value, str):
        # An HTTP-date or any other text is sent as it is, so a client's parser can be tried on it.
        if not value or any(c in value for c in "\r\n\0"):
            raise ValueError("retry_after text must be one non-empty header line")
        return value
    number = _number({"retry_after": value}, "retry_after", 0.0)
    if number < 0:
        raise ValueError(f"retry_after must be >= 0, got {number:g}")
    return number


def _location(value: Any, status: int | None) -> str | None:
    if value is None:
        return None
    if status is None or not 300 <= status <= 399:
        raise ValueError("location only goes with a 3xx status")
    if not isinstance(value, str) or not value.startswith(("/", "http://", "https://")):
        raise ValueError("location must be a path starting with '/' or an http(s) URL")
    if any(c in value for c in "\r\n\0 "):
        raise ValueError("location must be one URL without spaces or line breaks")
    return value


def _check_combination(
    status: int | None,
    body: str | None,
    raw: str | None,
    drop: bool,
    delay: float,
    retry_after: float | str | None,
    location: str | None,
) -> None:
    answer = {"status": status, "body": body, "retry_after": retry_after, "location": location}
    given = [name for name, value in answer.items() if value is not None]
    if drop and (given or raw):
        raise ValueError(f"drop sends no answer, so it takes no {', '.join(given + (['raw'] if raw else []))}")
    if raw and given:
        raise ValueError(f"raw={raw} is not an HTTP answer, so it takes no {', '.join(given)}")
    if status is not None and status < 200 and body is not None:
        raise ValueError(f"a {status} answer is informational (1xx) and has no body, so it takes no body")
    if status in NO_CONTENT_STATUSES and body is not None:
        raise ValueError(f"a {status} answer has no content, so it takes no body")
    if not (status is not None or body is not None or raw or drop or delay > 0):
        raise ValueError("a fault needs at least one of status, body, raw, drop or delay")


class FaultBook:
    """The faults of one state generation, in the order they were added."""

    def __init__(self, default_seed: Callable[[], int]) -> None:
        """:param default_seed: returns the seed of ``fraction`` faults that name none (``config.seed``)."""
        self.default_seed = default_seed
        self.faults: list[Fault] = []

    def add(self, data: Mapping[str, Any]) -> Fault:
        """:param data: fault JSON (see :meth:`Fault.from_json`). :return: the stored fault.
        :raises ValueError: on a bad description."""
        fault = Fault.from_json(data, self.default_seed())
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every fault."""
        self.faults.clear()

    def take(self, route: str, after: bool) -> Fault | None:
        """Pick the first fault that targets ``route`` in this phase and fires now (call with the state lock held).

        :param route: route template or ``token``.
        :param after: True for the post-processing phase.
        :return: the fault, or None.
        """
        for fault in self.faults:
            if fault.after == after and fault.matches(route) and fault.take():
                if fault.count == 0:
                    self.faults.remove(fault)
                return fault
        return None
