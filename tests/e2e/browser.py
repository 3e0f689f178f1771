"""Debian's Chromium under Playwright for the browser tests, and a watch on the JavaScript errors of a page.

Browsers are never downloaded: Playwright drives ``/usr/bin/chromium`` (``make system-deps`` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

CHROMIUM = os.environ.get("TRUCONNECT_E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000


@contextmanager
def launch_chromium() -> Iterator[Any]:
    """Start headless Debian Chromium; fails (never skips) when it is missing.

    :return: a Playwright ``Browser``, closed on exit.
    """
    path = CHROMIUM if os.path.isabs(CHROMIUM) else shutil.which(CHROMIUM)
    if not path or not os.access(path, os.X_OK):
        pytest.fail(
            f"Chromium not found at {CHROMIUM!r}: install Debian's chromium (`make system-deps`, i.e. "
            "`apt-get install -y chromium`) or point TRUCONNECT_E2E_CHROMIUM at it. Browsers are never downloaded.",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass(frozen=True)
class KnownError:
    """An error Airflow itself logs, whatever the connection form holds.

    :param message: a regular expression the error message must match.
    :param where: a regular expression its stack or source URL must match.
    :param why: where it comes from, for the reader.
    """

    message: str
    where: str
    why: str


class JsErrors:
    """Collect the uncaught exceptions and ``console.error`` messages of the pages it watches.

    :param known: errors that are Airflow's own and never caused by the form; any error whose stack runs through
        the connection form script counts, known or not.
    """

    def __init__(self, known: Iterable[KnownError] = ()) -> None:
        self.known = list(known)
        self.seen: list[tuple[str, str]] = []  # (message, stack or location)

    def watch(self, page: Any) -> None:
        """Collect the errors of ``page`` from now on (call it before the first ``goto``)."""
        page.on("pageerror", lambda exc: self.seen.append((f"{exc.name}: {exc.message}", exc.stack or "")))
        page.on("console", self._on_console)

    def _on_console(self, msg: Any) -> None:
        if msg.type == "error":
            self.seen.append((msg.text, str(msg.location.get("url", ""))))

    def _is_known(self, message: str, where: str) -> bool:
        if re.search(r"connection_?form", where, re.IGNORECASE):
            return False
        return any(re.search(k.message, message) and re.search(k.where, where) for k in self.known)

    def caused_by_form(self) -> list[str]:
        """:return: the errors seen so far that are not Airflow's known page-wide ones, with where they arose."""
        return [f"{message} @ {where[:400]}" for message, where in self.seen if not self._is_known(message, where)]

    def assert_none(self, when: str) -> None:
        """:raises AssertionError: naming ``when`` and listing the errors, if the form caused any."""
        errors = self.caused_by_form()
        assert not errors, f"JavaScript errors {when}:\n" + "\n".join(errors)
