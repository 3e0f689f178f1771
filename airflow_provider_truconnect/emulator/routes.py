"""The emulated endpoints: where the token server, the Connect API routes and the control plane live, and the route
keys that stats and faults use."""

from __future__ import annotations

TOKEN_PATH = "/auth/realms/tru-staff/protocol/openid-connect/token"
TOKEN_ROUTE = f"POST {TOKEN_PATH}"
CONTROL_PREFIX = "/__emulator"

#: Connect API v2 routes relative to ``api_prefix`` ([DOC] docs/connect-api.md §7; the notification routes and
#: ``/expire`` are guesses). A route's template (``"GET /v2/sims/{iccid}"``) names it in stats and faults.
API_ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "/v2/orders"),
    ("GET", "/v2/orders/{order_id}"),
    ("GET", "/v2/products"),
    ("GET", "/v2/products/{product_id}"),
    ("GET", "/v2/sims/{iccid}"),
    ("DELETE", "/v2/sims/{iccid}"),
    ("PUT", "/v2/sims/{iccid}/preferences/notifications/{type}"),
    ("DELETE", "/v2/sims/{iccid}/preferences/notifications/{type}"),
    ("GET", "/v2/subscriptions"),
    ("GET", "/v2/subscriptions/{subscription_id}"),
    ("POST", "/v2/subscriptions/{subscription_id}/activate"),
    ("POST", "/v2/subscriptions/{subscription_id}/expire"),
)
API_TEMPLATES = tuple(f"{method} {path}" for method, path in API_ROUTES)

#: What a fault (or a pause) can target: every request (``*``), the token endpoint (``token``), one API route, an
#: unknown path (``unmatched``) or a known path with the wrong method (``method_not_allowed``).
FAULT_ROUTES = frozenset({"*", "token", "unmatched", "method_not_allowed", *API_TEMPLATES})
