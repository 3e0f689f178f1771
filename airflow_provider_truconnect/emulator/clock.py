"""Emulator time: a clock that tests move instead of sleeping, and the ISO-8601 helpers of the API."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime


def iso(ts: float | None) -> str | None:
    """:param ts: epoch seconds. :return: ISO-8601 UTC with ``Z`` ([DOC CONV]), or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_datetime(value: str) -> float:
    """Parse an ISO-8601 date-time (``Z``, ``+00:00`` or ``+0000``; naive = UTC).

    :param value: the text.
    :return: epoch seconds.
    :raises ValueError: when it is not a date-time.
    """
    text = value.strip()
    if " " in text and "T" in text:
        # An unencoded "+0000" in a query string arrives as " 0000".
        text = text.replace(" ", "+")
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


class EmulatorClock:
    """Emulator time: a source (real ``time.time`` or an injected callable) plus an offset moved by the control
    plane."""

    def __init__(self, source: Callable[[], float] | None = None) -> None:
        """:param source: epoch-seconds callable; default ``time.time``."""
        self._source = source or time.time
        self.offset = 0.0

    def now(self) -> float:
        """:return: the emulator's current epoch seconds."""
        return self._source() + self.offset

    def advance(self, seconds: float) -> float:
        """:param seconds: how far to move time forward (negative moves back).
        :return: the new now."""
        self.offset += seconds
        return self.now()

    def set(self, epoch: float) -> float:
        """:param epoch: the new current time.
        :return: the new now."""
        self.offset = epoch - self._source()
        return self.now()
