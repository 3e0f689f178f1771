"""Request rate limit per (client, route template) per emulator minute ([INFERRED from DOC V3],
docs/connect-api.md §6.1)."""

from __future__ import annotations

import math

from airflow_provider_truconnect.emulator.errors import ApiError
from airflow_provider_truconnect.emulator.runtime import Runtime


class RateLimiter:
    """Fixed one-minute windows of the emulator clock; ``rate_limit_per_minute=None`` disables the limit."""

    def __init__(self, runtime: Runtime) -> None:
        """:param runtime: the shared lock, configuration and clock."""
        self.runtime = runtime
        self._window = -1
        self._counts: dict[tuple[str, str], int] = {}

    def check(self, client_id: str, route: str) -> None:
        """Count one request.

        :param client_id: the client.
        :param route: the route template.
        :raises ApiError: 429 ``TOO MANY REQUESTS`` over the limit (with ``Retry-After`` unless configured off).
        """
        cfg = self.runtime.config
        limit = cfg.rate_limit_per_minute
        if limit is None:
            return
        with self.runtime.lock:
            now = self.runtime.now()
            window = math.floor(now / 60.0)
            if window != self._window:
                self._window = window
                self._counts = {}
            key = (client_id, route)
            n = self._counts.get(key, 0) + 1
            self._counts[key] = n
            if n > limit:
                headers = {}
                if cfg.retry_after:
                    headers["Retry-After"] = str(max(1, math.ceil((window + 1) * 60.0 - now)))
                raise ApiError(
                    429, "TOO MANY REQUESTS", [f"Rate limit of {limit} requests per minute exceeded"], headers
                )
