"""Counters of the requests the API and the token endpoint answered (control plane ``GET /__emulator/stats``)."""

from __future__ import annotations

from collections import deque
from typing import Any

URL_LOG_SIZE = 10_000
REQUEST_LOG_SIZE = 10_000


class RequestLog:
    """Requests per route and status, 401/429 counts, and bounded logs of requests and raw targets."""

    def __init__(self) -> None:
        self.requests_total = 0
        self.requests_by_route: dict[str, dict[str, int]] = {}
        self.unauthorized = 0
        self.rate_limited = 0
        self.urls: deque[str] = deque(maxlen=URL_LOG_SIZE)
        self.requests: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)

    def record(
        self,
        route: str,
        status: int,
        raw_target: str,
        correlation_id: str | None,
        client_id: str | None,
        method: str,
        at: float,
    ) -> None:
        """Record one answered request (call with the state lock held).

        :param route: route template (``GET /v2/sims/{iccid}``), ``unmatched`` or ``method_not_allowed``.
        :param status: the HTTP status sent (0 when no HTTP answer was: a dropped connection, bytes that are not HTTP,
            headers that never ended).
        :param raw_target: raw request target (path and query as received).
        :param correlation_id: the ``X-Correlation-ID`` header, if any.
        :param client_id: the authenticated client, if any.
        :param method: HTTP method.
        :param at: the emulator time of the answer.
        """
        self.requests_total += 1
        by_status = self.requests_by_route.setdefault(route, {})
        key = str(status)
        by_status[key] = by_status.get(key, 0) + 1
        if status == 401:
            self.unauthorized += 1
        elif status == 429:
            self.rate_limited += 1
        self.urls.append(raw_target)
        self.requests.append(
            {
                "method": method,
                "route": route,
                "status": status,
                "correlation_id": correlation_id,
                "client_id": client_id,
                "at": at,
            }
        )

    def snapshot(self) -> dict[str, Any]:
        """:return: the JSON view of the counters (part of ``stats()``)."""
        return {
            "requests_total": self.requests_total,
            "requests_by_route": {r: dict(s) for r, s in self.requests_by_route.items()},
            "unauthorized": self.unauthorized,
            "rate_limited": self.rate_limited,
            "requests": list(self.requests),
            "urls": list(self.urls),
        }
