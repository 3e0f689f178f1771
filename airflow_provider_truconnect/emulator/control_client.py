"""HTTP client of the emulator's control plane (``/__emulator/...``), for thread and subprocess mode alike.

:class:`EmulatorControl` is re-exported by :mod:`~airflow_provider_truconnect.emulator.server`, where
``RunningEmulator.control`` comes from.
"""

from __future__ import annotations

from typing import Any, Literal

import requests


class _HostnameAdapter(requests.adapters.HTTPAdapter):
    """Checks the server certificate against a given host name instead of the URL's."""

    def __init__(self, server_name: str) -> None:
        self._server_name = server_name
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["assert_hostname"] = self._server_name
        super().init_poolmanager(*args, **kwargs)


class EmulatorControl:
    """HTTP client of the control plane (``/__emulator/...``); works for thread and subprocess mode alike."""

    def __init__(
        self, url: str, timeout: float = 10.0, verify: str | bool = True, server_name: str | None = None
    ) -> None:
        """:param url: server root, e.g. ``http://127.0.0.1:8765``.
        :param timeout: per-request timeout in seconds.
        :param verify: for an ``https`` server, the CA bundle that verifies it (or True for the system's).
        :param server_name: the host name its certificate must be valid for, when that is not the URL's host."""
        self.base = url.rstrip("/") + "/__emulator"
        self.timeout = timeout
        self.verify = verify
        self.session = requests.Session()
        if server_name is not None:
            self.session.mount(self.base, _HostnameAdapter(server_name))

    def health(self) -> bool:
        """:return: whether the emulator answers its health check."""
        return bool(self._call("GET", "/health", timeout=2)["ok"])

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        # verify on each request: with trust_env, REQUESTS_CA_BUNDLE would override a session-level setting.
        response = self.session.request(
            method, self.base + path, json=body, timeout=timeout or self.timeout, verify=self.verify
        )
        if response.status_code >= 400:
            raise RuntimeError(f"control {method} {path} failed: {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None

    def stats(self) -> dict[str, Any]:
        """:return: the counters (see ``GET /__emulator/stats``)."""
        result: dict[str, Any] = self._call("GET", "/stats")
        return result

    def reset(self) -> None:
        """Restore the default config, data, clock, tokens, faults and stats."""
        self._call("POST", "/reset")

    def advance(self, seconds: float) -> float:
        """:param seconds: how far to move the emulator clock.
        :return: the new emulator time (epoch seconds)."""
        return float(self._call("POST", "/clock", {"advance": seconds})["now"])

    def set_time(self, epoch: float) -> float:
        """:param epoch: the new emulator time. :return: the new emulator time."""
        return float(self._call("POST", "/clock", {"set": epoch})["now"])

    def now(self) -> float:
        """:return: the emulator time (epoch seconds)."""
        return float(self._call("GET", "/clock")["now"])

    def set_config(self, **fields: Any) -> dict[str, Any]:
        """:param fields: :class:`EmulatorConfig` fields to change (JSON values; not ``clock``).
        :return: the whole new configuration."""
        result: dict[str, Any] = self._call("POST", "/config", fields)
        return result

    def config(self) -> dict[str, Any]:
        """:return: the current configuration."""
        result: dict[str, Any] = self._call("GET", "/config")
        return result

    def add_fault(
        self,
        route: str = "*",
        *,
        status: int | None = None,
        retry_after: float | str | None = None,
        delay: float = 0.0,
        drop: bool = False,
        body: Literal["malformed", "html", "text", "empty", "truncated"] | None = None,
        raw: Literal["not_http", "headers_never_end"] | None = None,
        location: str | None = None,
        count: int | None = None,
        fraction: float | None = None,
        after: bool = False,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Inject a fault: the next matching request(s) get a wrong answer, or none.

        With ``after=True`` the request is processed first (the order IS created, the token IS issued, the rate
        limit counts it) and the fault then replaces the answer; otherwise the fault answers instead of processing.
        Kinds, by name:

        * **status** ``status=S``, any S from 100 to 599. 4xx/5xx carry an error body in the active error model (the
          OAuth shape on ``token``); 2xx carry the processed body with ``after`` and ``{}`` without; **redirect**
          3xx carries ``Location`` (``location``, default the API's ``/v2/products``) and no body;
          **no content** 204, 205 and 304 have no body; **informational** 1xx, which an ASGI server cannot send as a
          final answer, is written raw (status line and headers) and the connection closed; **unassigned** codes
          (418, 520, 599 ...) are sent as they are, with an empty reason phrase where none is registered.
        * **malformed** ``body="malformed"``: JSON cut short (default status 200).
        * **html** ``body="html"``: an nginx gateway page (default status 502).
        * **not_json** ``body="text"``: a ``text/plain`` body (default status 200).
        * **empty** ``body="empty"``: ``Content-Length: 0`` under ``application/json`` (default status 200).
        * **truncated** ``body="truncated"``: the headers announce the whole body, half of it is sent, then the
          connection closes (default status 200; with ``after``, half of the processed body).
        * **not_http** ``raw="not_http"``: bytes that are not HTTP at all, then the connection closes.
        * **headers_never_end** ``raw="headers_never_end"``: a status line and one header, then nothing; the
          connection stays open until the client leaves (its read timeout), a reset, or the server stops.
        * **drop** ``drop=True``: the connection closes without any answer.
        * **delay** ``delay=s``: wait ``s`` seconds first (alone: then answer normally; a reset ends the wait).

        ``status`` and ``body`` combine (``status=503, body="html"``); ``retry_after`` adds a header to any of them.
        ``drop`` and ``raw`` take neither. In the stats an answer counts under its status, and under 0 when no HTTP
        answer was completed (drop, not_http, headers_never_end).

        :param route: route template (``GET /v2/sims/{iccid}``, ``POST /v2/orders``), ``token``, ``unmatched``,
            ``method_not_allowed`` or ``*``.
        :param status: HTTP status to answer, 100-599.
        :param retry_after: ``Retry-After`` header: seconds, or a text sent as it is (an HTTP-date, garbage).
        :param delay: seconds to wait before answering (or, with ``after``, after processing).
        :param drop: close the connection without a response.
        :param body: ``malformed``, ``html``, ``text``, ``empty`` or ``truncated`` (see above).
        :param raw: ``not_http`` or ``headers_never_end`` (see above).
        :param location: ``Location`` of a 3xx: a path on this server (``/connect-api/v2/orders``) or a URL.
        :param count: fire for the next ``count`` matching requests (default 1 when ``fraction`` is not given).
        :param fraction: fire for this share of matching requests (seeded RNG).
        :param after: process the request first (e.g. create the order), then apply the fault to the response.
        :param seed: RNG seed for ``fraction``.
        :return: the stored fault.
        :raises RuntimeError: when the emulator refuses the description (the message says why).
        """
        spec: dict[str, Any] = {"route": route, "delay": delay, "drop": drop, "after": after}
        for key, value in (
            ("status", status),
            ("retry_after", retry_after),
            ("body", body),
            ("raw", raw),
            ("location", location),
            ("count", count),
            ("fraction", fraction),
            ("seed", seed),
        ):
            if value is not None:
                spec[key] = value
        result: dict[str, Any] = self._call("POST", "/faults", spec)
        return result

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self._call("DELETE", "/faults")

    def pause(
        self, route: str = "*", *, point: str = "answered", count: int = 1, until: str = "reset", limit: float = 60.0
    ) -> None:
        """Test hook for races: the next ``count`` requests of ``route`` wait at ``point``.

        ``point="arrived"``: before anything happens; ``point="answered"``: the request has been processed and its
        answer decided, but it is neither counted nor sent (so the client is still waiting). They wait until the next
        reset (``until="reset"``; the request is then dropped uncounted) or :meth:`release_pauses`
        (``until="release"``), at most ``limit`` seconds. See :mod:`airflow_provider_truconnect.emulator.inflight`.

        :param route: a route key, as for :meth:`add_fault`.
        :param point: ``arrived`` or ``answered``.
        :param count: how many requests.
        :param until: ``reset`` or ``release``.
        :param limit: the longest wait in seconds.
        """
        self._call("POST", "/pauses", {"route": route, "point": point, "count": count, "until": until, "limit": limit})

    def wait_paused(self, count: int = 1, timeout: float = 10.0) -> int:
        """:param count: how many paused requests to wait for. :param timeout: the longest wait in seconds.
        :return: how many requests are paused (fewer than ``count`` when the time ran out)."""
        body = {"count": count, "timeout": timeout}
        return int(self._call("POST", "/pauses/wait", body, timeout=timeout + self.timeout)["paused"])

    def release_pauses(self) -> int:
        """:return: how many requests held by ``until="release"`` pauses were released."""
        return int(self._call("DELETE", "/pauses")["released"])

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until the emulator serves no request: every answer has been sent and counted in the stats.

        :param timeout: the longest wait in seconds.
        :return: True when idle.
        """
        return bool(self._call("POST", "/idle", {"timeout": timeout}, timeout=timeout + self.timeout)["idle"])

    def revoke(self, token: str | None = None) -> int:
        """:param token: the token to revoke; None revokes every token.
        :return: how many were revoked."""
        return int(self._call("POST", "/revoke", {} if token is None else {"token": token})["revoked"])

    def issued_tokens(self) -> list[str]:
        """:return: every access and refresh token issued since the last reset (for leak scans)."""
        return list(self._call("GET", "/tokens")["tokens"])

    def orders(self) -> list[dict[str, Any]]:
        """:return: every created order with ``correlation_id``, ``status``, ``output`` and the request body."""
        return list(self._call("GET", "/orders")["orders"])

    def usage(self, iccid: str, used_bytes: int) -> dict[str, Any]:
        """Simulate data use on a SIM.

        :param iccid: the SIM.
        :param used_bytes: bytes consumed.
        :return: a summary of the SIM's subscriptions after the usage.
        """
        result: dict[str, Any] = self._call("POST", "/usage", {"iccid": iccid, "bytes": used_bytes})
        return result

    def set_sim_status(self, iccid: str, status: str) -> dict[str, Any]:
        """:param iccid: the SIM. :param status: ``Released``, ``Downloaded``, ``Installed`` or ``Unavailable``.
        :return: ``{"iccid", "status"}``."""
        result: dict[str, Any] = self._call("POST", f"/sims/{iccid}/status", {"status": status})
        return result

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()
