"""In-memory state of the emulator: clients, tokens, catalogue, SIMs, subscriptions, orders, faults and stats.

The state is transport-agnostic (no Starlette here): the app module maps HTTP onto these methods and renders the
JSON. Every public method takes the state lock, so tests in thread mode can read the live object safely.

Time-driven behaviour is evaluated lazily against :class:`EmulatorClock` when something is read: orders advance
``ACCEPTED -> FULFILLING -> COMPLETED|FAILED`` from their creation time, subscriptions move ``PENDING -> ACTIVE`` at
their activation date and ``ACTIVE -> EXPIRED`` at their expiry date. Nothing runs in the background, so a test that
moves the clock sees a deterministic result.
"""

from __future__ import annotations

import base64
import json
import math
import random
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any, Literal

from airflow_provider_truconnect.emulator.config import EmulatorConfig

SMDP_ADDRESS = "rsp.truphone.com"
MAX_ACTIVE_SUBSCRIPTIONS_PER_SIM = 15  # [DOC-v1]
URL_LOG_SIZE = 10_000
REQUEST_LOG_SIZE = 10_000
SIM_STATUSES = ("Released", "Downloaded", "Installed", "Unavailable")
SUBSCRIPTION_STATUSES = ("PENDING", "PENDING_USAGE", "ACTIVE", "DEPLETED", "EXPIRED")
NOTIFICATION_TYPES = {
    "USAGE_THRESHOLD": "USAGE_THRESHOLD",
    "SUBSCRIPTION_END": "SUBSCRIPTION_END",
    # [DOC] the docs misspell it; we accept both spellings and store the correct one.
    "SUBSCRITPION_END": "SUBSCRIPTION_END",
    "DOWNLOAD_PROGRESS": "DOWNLOAD_PROGRESS",
}
ISO_COUNTRIES = frozenset(
    """AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ
    CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR
    GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO
    JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR
    MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO
    RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV
    TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW""".split()
)
_UNIT_BYTES = {"KB": 2**10, "MB": 2**20, "GB": 2**30}
_DAY = 86_400.0


# --------------------------------------------------------------------------------------------------------- errors
@dataclass(frozen=True)
class Problem:
    """One problem of an API error: a classic ``messages`` entry or an RFC 7807 ``errors`` item."""

    detail: str
    json_path: str | None = None
    code: str = "GENERIC_ERROR"


class ApiError(Exception):
    """An error answered by the Connect API routes in the configured error model."""

    def __init__(
        self,
        status: int,
        error_type: str,
        problems: Iterable[Problem | str],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """:param status: HTTP status.
        :param error_type: classic ``type`` (e.g. ``INVALID_REQUEST_PARAMS``).
        :param problems: problems or plain messages.
        :param headers: extra response headers.
        """
        self.status = status
        self.error_type = error_type
        self.problems = [p if isinstance(p, Problem) else Problem(p) for p in problems]
        self.headers = dict(headers or {})
        super().__init__(f"{status} {error_type}: {'; '.join(p.detail for p in self.problems)}")


class OAuthError(Exception):
    """A token-endpoint error in the OAuth ``error``/``error_description`` shape (§1.4)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        """:param status: HTTP status.
        :param error: OAuth error code.
        :param description: ``error_description``.
        """
        self.status = status
        self.error = error
        self.description = description
        super().__init__(f"{status} {error}: {description}")


def not_found(what: str, ident: str) -> ApiError:
    """[INFERRED] 404 is undocumented; the ``NOT_FOUND`` type name is invented."""
    return ApiError(404, "NOT_FOUND", [f"{what} {ident} not found"])


def access_denied(what: str, ident: str) -> ApiError:
    """[DOC CONV] 403 ``ACCESS_DENIED`` for another client's resource."""
    return ApiError(403, "ACCESS_DENIED", [f"{what} {ident} belongs to another client"])


def invalid_params(problems: Iterable[Problem | str]) -> ApiError:
    """[DOC CONV] 400 ``INVALID_REQUEST_PARAMS``: parsed but semantically wrong."""
    return ApiError(400, "INVALID_REQUEST_PARAMS", problems)


# ----------------------------------------------------------------------------------------------------- time utils
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


# ----------------------------------------------------------------------------------------------------- entities
@dataclass(slots=True)
class Product:
    """A catalogue product ([DOC PROD] fields)."""

    id: str
    name: str
    sim_type: list[str]
    duration: int
    duration_unit: str
    data: int
    data_unit: str
    price: float
    price_currency: str
    footprint_code: str

    @property
    def data_bytes(self) -> int:
        """:return: the allowance in bytes."""
        return self.data * _UNIT_BYTES[self.data_unit]

    @property
    def duration_seconds(self) -> float:
        """:return: the plan length; a month counts as 30 days ([INFERRED])."""
        return self.duration * (30 * _DAY if self.duration_unit == "MONTHS" else _DAY)


@dataclass(slots=True)
class Sim:
    """A SIM / eSIM profile ([DOC ESIMLC] fields plus owner, subscriber email and webhook registrations)."""

    iccid: str
    client_id: str
    matching_id: str
    sim_type: str
    status: str
    last_modified: float
    email: str | None = None
    used: bool = False
    notifications: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Subscription:
    """A subscription ([DOC SUBLC] fields); balances in bytes."""

    id: str
    client_id: str
    sim_id: str
    product_id: str
    name: str
    created: float
    activation: float | None
    expiry: float | None
    status: str
    initial_balance: int
    current_balance: int
    duration_seconds: float
    threshold_notified: bool = False


@dataclass(slots=True)
class Order:
    """An order; its status is derived from the clock until it settles."""

    id: str
    client_id: str
    operation_type: str
    sim_type: str
    created: float
    fulfilling_at: float
    complete_at: float
    request: dict[str, Any]
    correlation_id: str | None
    fail_reason: str | None
    settled_status: str | None = None
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


@dataclass(slots=True)
class TokenRecord:
    """An issued access or refresh token."""

    kind: Literal["access", "refresh"]
    client_id: str
    expires_at: float
    revoked: bool = False
    used: bool = False


@dataclass
class Fault:
    """An injected fault (see the control plane ``POST /__emulator/faults``)."""

    route: str
    status: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    drop: bool = False
    body: Literal["malformed", "html"] | None = None
    count: int | None = None
    fraction: float | None = None
    after: bool = False
    seed: int | None = None
    applied: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

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
        return {
            "route": self.route,
            "status": self.status,
            "retry_after": self.retry_after,
            "delay": self.delay,
            "drop": self.drop,
            "body": self.body,
            "count": self.count,
            "fraction": self.fraction,
            "after": self.after,
            "applied": self.applied,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], default_seed: int) -> Fault:
        """Validate and build a fault from its JSON description.

        :param data: ``{"route", "status"?, "retry_after"?, "delay"?, "drop"?, "body"?, "count"?, "fraction"?,
            "after"?, "seed"?}``.
        :param default_seed: seed of the fraction RNG when ``seed`` is absent.
        :return: the fault.
        :raises ValueError: on a bad description.
        """
        allowed = {"route", "status", "retry_after", "delay", "drop", "body", "count", "fraction", "after", "seed"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")
        route = data.get("route", "*")
        if not isinstance(route, str) or not route:
            raise ValueError("route must be a non-empty string")
        status = data.get("status")
        if status is not None and (not isinstance(status, int) or not 100 <= status <= 599):
            raise ValueError("status must be an HTTP status code")
        body = data.get("body")
        if body not in (None, "malformed", "html"):
            raise ValueError("body must be 'malformed' or 'html'")
        drop = bool(data.get("drop", False))
        delay = float(data.get("delay", 0.0))
        if delay < 0:
            raise ValueError("delay must be >= 0")
        if status is None and body is None and not drop and delay == 0:
            raise ValueError("a fault needs at least one of status, body, drop or delay")
        count = data.get("count")
        fraction = data.get("fraction")
        if fraction is not None:
            fraction = float(fraction)
            if not 0.0 <= fraction <= 1.0:
                raise ValueError("fraction must be between 0 and 1")
        elif count is None:
            count = 1
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ValueError("count must be a positive integer")
        retry_after = data.get("retry_after")
        seed = data.get("seed")
        return cls(
            route=route,
            status=status,
            retry_after=None if retry_after is None else float(retry_after),
            delay=delay,
            drop=drop,
            body=body,
            count=count,
            fraction=fraction,
            after=bool(data.get("after", False)),
            seed=seed,
            rng=random.Random(f"{default_seed if seed is None else seed}:{route}"),
        )


# ------------------------------------------------------------------------------------------------------- ids
def _b64id(rng: random.Random) -> str:
    # [DOC] product/subscription ids look like base64url of 32 bytes: 43 characters plus one "=".
    return base64.urlsafe_b64encode(rng.randbytes(32)).decode("ascii")


_MATCHING_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _matching_id(rng: random.Random) -> str:
    # [DOC] shape of "6C-DA326D-K86D".
    pick = rng.choices
    return "-".join("".join(pick(_MATCHING_ALPHABET, k=n)) for n in (2, 6, 4))


def _jwt_like(claims_hint: str) -> str:
    """Random, unique token shaped like a JWT (three base64url segments); its content means nothing ([INFERRED])."""
    header = base64.urlsafe_b64encode(
        json.dumps({"alg": "RS256", "typ": claims_hint, "kid": "truconnect-emulator"}).encode()
    )
    return ".".join(
        part.decode("ascii").rstrip("=")
        for part in (
            header,
            base64.urlsafe_b64encode(secrets.token_bytes(96)),
            base64.urlsafe_b64encode(secrets.token_bytes(64)),
        )
    )


# ------------------------------------------------------------------------------------------------------ catalogue
_CATALOGUE: list[tuple[str, list[str], int, str, int, str, float, str, str]] = [
    ("1GB 7-Day Europe", ["ESIM"], 7, "DAYS", 1, "GB", 5, "EUR", "EUROPE"),
    ("3GB 30-Day Europe", ["ESIM", "PSIM"], 30, "DAYS", 3, "GB", 12, "EUR", "EUROPE"),
    ("5GB 30-Day Data Bundle", ["ESIM"], 30, "DAYS", 5, "GB", 20, "USD", "GLOBAL"),
    ("10GB 30-Day Global", ["ESIM", "PSIM"], 30, "DAYS", 10, "GB", 45.5, "USD", "GLOBAL"),
    ("500MB 3-Day UK", ["ESIM"], 3, "DAYS", 500, "MB", 3, "GBP", "UK"),
    ("20GB 90-Day Americas", ["ESIM"], 90, "DAYS", 20, "GB", 60, "USD", "AMERICAS"),
    ("Plan name", ["ESIM"], 90, "DAYS", 50, "MB", 20, "EUR", "GLOBAL"),
    ("2GB Monthly Asia", ["PSIM", "ESIM"], 1, "MONTHS", 2, "GB", 15, "USD", "ASIA"),
]


# ---------------------------------------------------------------------------------------------------------- state
class EmulatorState:
    """All mutable emulator state. Thread-safe: each public method holds :attr:`lock`."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        """:param config: initial (and reset-default) configuration."""
        self.lock = threading.RLock()
        self.default_config = config or EmulatorConfig()
        self.config = self.default_config
        self.clock = EmulatorClock(self.config.clock)
        self.reset()

    # ---------------------------------------------------------------------------------------------- lifecycle
    def reset(self, config: EmulatorConfig | None = None) -> None:
        """Restore the default config (or ``config``), clock, data, tokens, faults and stats.

        :param config: a configuration to use instead of the default one.
        """
        with self.lock:
            self.config = config or self.default_config
            self.clock = EmulatorClock(self.config.clock)
            self.tokens: dict[str, TokenRecord] = {}
            self.issued_tokens: list[str] = []
            self.faults: list[Fault] = []
            self._rate_window = -1
            self._rate_counts: dict[tuple[str, str], int] = {}
            self._reset_stats()
            self._seed_data()

    def _reset_stats(self) -> None:
        self.requests_total = 0
        self.requests_by_route: dict[str, dict[str, int]] = {}
        self.grants: dict[str, dict[str, int]] = {}
        self.grant_failures: dict[str, dict[str, int]] = {}
        self.unauthorized = 0
        self.rate_limited = 0
        self.urls: deque[str] = deque(maxlen=URL_LOG_SIZE)
        self.request_log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self.notifications: list[dict[str, Any]] = []

    def update_config(self, updates: Mapping[str, Any]) -> EmulatorConfig:
        """Change configuration fields now; changing seed data fields (``seed``, ``seed_subscriptions``, ``clients``)
        re-seeds the data.

        :param updates: field -> value.
        :return: the new configuration.
        :raises ValueError: on an unknown field or bad value.
        """
        with self.lock:
            new = self.config.with_updates(updates)
            reseed = any(k in updates for k in ("seed", "seed_subscriptions", "clients"))
            clock_changed = "clock" in updates
            self.config = new
            if clock_changed:
                offset = self.clock.offset
                self.clock = EmulatorClock(new.clock)
                self.clock.offset = offset
            if reseed:
                self._seed_data()
            return new

    def now(self) -> float:
        """:return: the emulator clock's now."""
        return self.clock.now()

    # ---------------------------------------------------------------------------------------------- seeding
    def _seed_data(self) -> None:
        cfg = self.config
        self.products: dict[str, Product] = {}
        self.product_list: list[Product] = []
        self.sims: dict[str, Sim] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.subs_by_iccid: dict[str, list[Subscription]] = {}
        self.client_subs: dict[str, list[Subscription]] = {c: [] for c in cfg.clients}
        self.client_emails: dict[str, dict[str, list[str]]] = {c: {} for c in cfg.clients}
        self.orders: dict[str, Order] = {}
        self.order_log: list[Order] = []
        self._pending_orders: list[Order] = []
        self._activations: dict[str, list[float]] = {c: [] for c in cfg.clients}
        self._sim_counter = 0
        self._client_numbers = {c: i + 1 for i, c in enumerate(sorted(cfg.clients))}
        self._rng = random.Random(f"{cfg.seed}:runtime")

        prng = random.Random(f"{cfg.seed}:products")
        for name, sim_types, duration, dunit, data, unit, price, currency, footprint in _CATALOGUE:
            product = Product(
                _b64id(prng), name, list(sim_types), duration, dunit, data, unit, price, currency, footprint
            )
            self.products[product.id] = product
            self.product_list.append(product)

        now = self.clock.now()
        for client_id in sorted(cfg.clients):
            count = cfg.seed_subscriptions if client_id == cfg.default_client else min(12, cfg.seed_subscriptions)
            self._seed_client(client_id, count, now)

    def _new_iccid(self, client_id: str, rng: random.Random) -> str:
        self._sim_counter += 1
        # [DOC] ICCIDs start 8944; 19 digits here: 8944 + client(2) + counter(7) + random(6).
        return f"8944{self._client_numbers.get(client_id, 99):02d}{self._sim_counter:07d}{rng.randrange(10**6):06d}"

    def _seed_client(self, client_id: str, count: int, now: float) -> None:
        rng = random.Random(f"{self.config.seed}:{client_id}")
        products = self.product_list
        subs = self.client_subs[client_id]
        emails = self.client_emails[client_id]
        email_pool = max(1, count // 4)
        domain = "example.com" if client_id == self.config.default_client else "other.example"
        remaining = count
        while remaining > 0:
            per_sim = min(remaining, rng.choice((1, 1, 2, 2, 3, 3, 4, 5)))
            remaining -= per_sim
            iccid = self._new_iccid(client_id, rng)
            email = f"customer{rng.randrange(email_pool)}@{domain}"
            sim = Sim(iccid, client_id, _matching_id(rng), "ESIM" if rng.random() < 0.9 else "PSIM", "Released", now)
            sim.email = email
            self.sims[iccid] = sim
            emails.setdefault(email, []).append(iccid)
            sim_subs: list[Subscription] = []
            for _ in range(per_sim):
                product = rng.choice(products)
                sub = self._seed_subscription(rng, client_id, iccid, product, now)
                sim_subs.append(sub)
            used = any(s.current_balance < s.initial_balance for s in sim_subs)
            sim.used = used
            roll = rng.random()
            if used:
                terminal = all(s.status in ("EXPIRED", "DEPLETED") for s in sim_subs)
                sim.status = "Unavailable" if terminal and roll < 0.05 else "Installed"
            else:
                sim.status = "Downloaded" if roll < 0.2 else "Released"
            sim.last_modified = max(s.created for s in sim_subs)
            self.subs_by_iccid[iccid] = sim_subs
            subs.extend(sim_subs)
            for s in sim_subs:
                self.subscriptions[s.id] = s
        subs.sort(key=lambda s: (s.created, s.id))

    def _seed_subscription(
        self, rng: random.Random, client_id: str, iccid: str, product: Product, now: float
    ) -> Subscription:
        dur = product.duration_seconds
        initial = product.data_bytes
        roll = rng.random()
        activation: float | None
        expiry: float | None
        if roll < 0.45:
            status = "ACTIVE"
            activation = now - rng.uniform(0.0, dur * 0.9)
            expiry = activation + dur
            # ~20 % of active plans are nearly used up (< 10 % left), so a low-balance report finds some.
            left = rng.uniform(0.005, 0.09) if rng.random() < 0.2 else rng.uniform(0.1, 1.0)
            current = max(1, int(initial * left))
            created = activation - rng.uniform(0.0, 3600.0)
        elif roll < 0.55:
            status = "PENDING"
            activation = now + rng.uniform(3600.0, 30 * _DAY)
            expiry = activation + dur
            current = initial
            created = now - rng.uniform(60.0, 10 * _DAY)
        elif roll < 0.62:
            status = "PENDING_USAGE"
            activation = expiry = None
            current = initial
            created = now - rng.uniform(60.0, 30 * _DAY)
        elif roll < 0.8:
            status = "DEPLETED"
            activation = now - rng.uniform(dur * 0.2, dur * 3)
            expiry = activation + dur
            current = 0
            created = activation - rng.uniform(0.0, 3600.0)
        else:
            status = "EXPIRED"
            activation = now - dur - rng.uniform(_DAY, 200 * _DAY)
            expiry = activation + dur
            current = int(initial * rng.uniform(0.0, 0.8))
            created = activation - rng.uniform(0.0, 3600.0)
        return Subscription(
            id=_b64id(rng),
            client_id=client_id,
            sim_id=iccid,
            product_id=product.id,
            name=product.name,
            created=float(int(created)),
            activation=None if activation is None else float(int(activation)),
            expiry=None if expiry is None else float(int(expiry)),
            status=status,
            initial_balance=initial,
            current_balance=current,
            duration_seconds=dur,
        )

    # ---------------------------------------------------------------------------------------------- stats
    def record_request(
        self,
        route: str,
        status: int,
        raw_target: str,
        correlation_id: str | None,
        client_id: str | None,
        method: str,
    ) -> None:
        """Record one answered request in the stats.

        :param route: route template (``GET /v2/sims/{iccid}``) or ``unmatched``.
        :param status: the HTTP status sent (0 for a dropped connection).
        :param raw_target: raw request target (path and query as received).
        :param correlation_id: the ``X-Correlation-ID`` header, if any.
        :param client_id: the authenticated client, if any.
        :param method: HTTP method.
        """
        with self.lock:
            self.requests_total += 1
            by_status = self.requests_by_route.setdefault(route, {})
            key = str(status)
            by_status[key] = by_status.get(key, 0) + 1
            if status == 401:
                self.unauthorized += 1
            elif status == 429:
                self.rate_limited += 1
            self.urls.append(raw_target)
            self.request_log.append(
                {
                    "method": method,
                    "route": route,
                    "status": status,
                    "correlation_id": correlation_id,
                    "client_id": client_id,
                    "at": self.clock.now(),
                }
            )

    def stats(self) -> dict[str, Any]:
        """:return: a JSON-serialisable snapshot of the counters (see the control plane docs)."""
        with self.lock:
            totals: dict[str, int] = {}
            for per_client in self.grants.values():
                for grant, n in per_client.items():
                    totals[grant] = totals.get(grant, 0) + n
            failures: dict[str, int] = {}
            for per_grant in self.grant_failures.values():
                for error, n in per_grant.items():
                    failures[error] = failures.get(error, 0) + n
            return {
                "now": self.clock.now(),
                "requests_total": self.requests_total,
                "requests_by_route": {r: dict(s) for r, s in self.requests_by_route.items()},
                "token_grants": {c: dict(g) for c, g in self.grants.items()},
                "token_grants_total": totals,
                "token_failures": {g: dict(e) for g, e in self.grant_failures.items()},
                "token_failures_by_error": failures,
                "unauthorized": self.unauthorized,
                "rate_limited": self.rate_limited,
                "orders_created": [
                    {"id": o.id, "client_id": o.client_id, "correlation_id": o.correlation_id} for o in self.order_log
                ],
                "requests": list(self.request_log),
                "urls": list(self.urls),
                "notifications": list(self.notifications),
            }

    # ---------------------------------------------------------------------------------------------- faults
    def add_fault(self, data: Mapping[str, Any]) -> Fault:
        """:param data: fault JSON (see :meth:`Fault.from_json`).
        :return: the stored fault."""
        with self.lock:
            fault = Fault.from_json(data, self.config.seed)
            self.faults.append(fault)
            return fault

    def clear_faults(self) -> None:
        """Remove every fault."""
        with self.lock:
            self.faults.clear()

    def take_fault(self, route: str, after: bool) -> Fault | None:
        """Pick the first fault that targets ``route`` in this phase and fires now.

        :param route: route template or ``token``.
        :param after: True for the post-processing phase.
        :return: the fault, or None.
        """
        if not self.faults:
            return None
        with self.lock:
            for fault in self.faults:
                if fault.after == after and fault.matches(route) and fault.take():
                    if fault.count == 0:
                        self.faults.remove(fault)
                    return fault
            return None

    # ---------------------------------------------------------------------------------------------- tokens
    def _issue(self, kind: Literal["access", "refresh"], client_id: str, lifetime: float) -> str:
        token = _jwt_like("JWT" if kind == "access" else "Refresh")
        while token in self.tokens:  # pragma: no cover - 160 random bytes do not collide
            token = _jwt_like("JWT")
        self.tokens[token] = TokenRecord(kind, client_id, self.clock.now() + lifetime)
        self.issued_tokens.append(token)
        return token

    def _grant_failed(self, grant_type: str, error: OAuthError) -> OAuthError:
        per = self.grant_failures.setdefault(grant_type or "(missing)", {})
        per[error.error] = per.get(error.error, 0) + 1
        return error

    def token_grant(
        self,
        form: Mapping[str, str],
        basic: tuple[str, str] | None,
    ) -> dict[str, Any]:
        """Run the token endpoint ([INFERRED] Keycloak behaviour, §1).

        :param form: the parsed ``application/x-www-form-urlencoded`` body.
        :param basic: (client_id, secret) from HTTP Basic, if sent (``client_secret_basic``).
        :return: the Keycloak-shaped token response.
        :raises OAuthError: on any failure, shaped as §1.4.
        """
        with self.lock:
            cfg = self.config
            grant_type = form.get("grant_type", "")
            # Keycloak checks the grant type before authenticating the client.
            if not grant_type:
                raise self._grant_failed(
                    grant_type, OAuthError(400, "invalid_request", "Missing form parameter: grant_type")
                )
            if grant_type not in ("client_credentials", "refresh_token"):
                raise self._grant_failed(
                    grant_type, OAuthError(400, "unsupported_grant_type", "Unsupported grant_type")
                )
            client_id, secret = (
                basic if basic is not None else (form.get("client_id", ""), form.get("client_secret", ""))
            )
            if (
                not client_id
                or cfg.clients.get(client_id) is None
                or not secrets.compare_digest(cfg.clients[client_id].encode(), secret.encode())
            ):
                raise self._grant_failed(grant_type, OAuthError(401, "invalid_client", "Invalid client credentials"))
            now = self.clock.now()
            issue_refresh = cfg.issue_refresh_tokens
            if grant_type == "refresh_token":
                presented = form.get("refresh_token", "")
                record = self.tokens.get(presented)
                if record is None or record.kind != "refresh" or record.revoked:
                    raise self._grant_failed(grant_type, OAuthError(400, "invalid_grant", "Invalid refresh token"))
                if record.expires_at <= now:
                    raise self._grant_failed(grant_type, OAuthError(400, "invalid_grant", "Token is not active"))
                if record.client_id != client_id:
                    raise self._grant_failed(
                        grant_type,
                        OAuthError(
                            400,
                            "invalid_grant",
                            "Invalid refresh token. Token client and authorized client don't match",
                        ),
                    )
                if record.used and cfg.refresh_token_single_use:
                    raise self._grant_failed(
                        grant_type, OAuthError(400, "invalid_grant", "Maximum allowed refresh token reuse exceeded")
                    )
                record.used = True
                # A refresh grant always answers with a (rotated) refresh token, as Keycloak does.
                issue_refresh = True
            access = self._issue("access", client_id, cfg.access_token_lifetime)
            body: dict[str, Any] = {
                "access_token": access,
                "expires_in": cfg.reported_expires_in
                if cfg.reported_expires_in is not None
                else cfg.access_token_lifetime,
                "refresh_expires_in": 0,
                "token_type": "Bearer",
                "not-before-policy": 0,
                "scope": "profile email",
            }
            if issue_refresh:
                if grant_type == "refresh_token" and not cfg.refresh_token_single_use:
                    body["refresh_token"] = form["refresh_token"]
                    body["refresh_expires_in"] = max(0, int(self.tokens[form["refresh_token"]].expires_at - now))
                else:
                    body["refresh_token"] = self._issue("refresh", client_id, cfg.refresh_token_lifetime)
                    body["refresh_expires_in"] = cfg.refresh_token_lifetime
            per = self.grants.setdefault(client_id, {})
            per[grant_type] = per.get(grant_type, 0) + 1
            return body

    def authenticate(self, authorization: str | None) -> str:
        """Validate a bearer token ([DOC CONV] 401 ``UNAUTHORISED``).

        :param authorization: the ``Authorization`` header.
        :return: the client id owning the token.
        :raises ApiError: 401 when missing, malformed, unknown, expired or revoked.
        """
        if not authorization:
            raise ApiError(401, "UNAUTHORISED", ["Missing Authorization header"], _WWW_AUTH)
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            raise ApiError(
                401, "UNAUTHORISED", ["Malformed Authorization header, expected 'Bearer <token>'"], _WWW_AUTH
            )
        with self.lock:
            record = self.tokens.get(token)
            if record is None or record.kind != "access":
                raise ApiError(401, "UNAUTHORISED", ["Invalid bearer token"], _WWW_AUTH)
            if record.revoked:
                raise ApiError(401, "UNAUTHORISED", ["Bearer token has been revoked"], _WWW_AUTH)
            if record.expires_at <= self.clock.now():
                raise ApiError(401, "UNAUTHORISED", ["Bearer token has expired"], _WWW_AUTH)
            return record.client_id

    def revoke(self, token: str | None = None) -> int:
        """:param token: a token to revoke, or None for every token.
        :return: how many tokens were revoked."""
        with self.lock:
            if token is None:
                for record in self.tokens.values():
                    record.revoked = True
                return len(self.tokens)
            found = self.tokens.get(token)
            if found is None:
                return 0
            found.revoked = True
            return 1

    def check_rate(self, client_id: str, route: str) -> None:
        """[INFERRED from DOC V3] per (client, route template) limit per emulator minute.

        :param client_id: the client.
        :param route: the route template.
        :raises ApiError: 429 ``TOO MANY REQUESTS`` over the limit.
        """
        limit = self.config.rate_limit_per_minute
        if limit is None:
            return
        with self.lock:
            now = self.clock.now()
            window = math.floor(now / 60.0)
            if window != self._rate_window:
                self._rate_window = window
                self._rate_counts = {}
            key = (client_id, route)
            n = self._rate_counts.get(key, 0) + 1
            self._rate_counts[key] = n
            if n > limit:
                headers = {}
                if self.config.retry_after:
                    headers["Retry-After"] = str(max(1, math.ceil((window + 1) * 60.0 - now)))
                raise ApiError(
                    429, "TOO MANY REQUESTS", [f"Rate limit of {limit} requests per minute exceeded"], headers
                )

    # ---------------------------------------------------------------------------------------------- ownership
    def _own_sim(self, client_id: str, iccid: str) -> Sim:
        sim = self.sims.get(iccid)
        if sim is None:
            raise not_found("SIM", iccid)
        if sim.client_id != client_id:
            raise access_denied("SIM", iccid)
        return sim

    def _own_subscription(self, client_id: str, sub_id: str) -> Subscription:
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            raise not_found("Subscription", sub_id)
        if sub.client_id != client_id:
            raise access_denied("Subscription", sub_id)
        self._refresh_subscription(sub, self.clock.now())
        return sub

    @staticmethod
    def _refresh_subscription(sub: Subscription, now: float) -> None:
        # Lazy time-driven transitions ([INFERRED] §9.2): PENDING -> ACTIVE at activation, ACTIVE -> EXPIRED at expiry.
        if sub.status == "PENDING" and sub.activation is not None and sub.activation <= now:
            sub.status = "ACTIVE"
        if sub.status == "ACTIVE" and sub.expiry is not None and sub.expiry <= now:
            sub.status = "EXPIRED"

    # ---------------------------------------------------------------------------------------------- products
    def list_products(self, page: int, page_size: int) -> tuple[list[Product], bool]:
        """:param page: 1-based page. :param page_size: items per page.
        :return: the page's products and whether another page exists."""
        start = (page - 1) * page_size
        return self.product_list[start : start + page_size], start + page_size < len(self.product_list)

    def get_product(self, product_id: str) -> Product:
        """:param product_id: the id. :return: the product. :raises ApiError: 404."""
        product = self.products.get(product_id)
        if product is None:
            raise not_found("Product", product_id)
        return product

    # ---------------------------------------------------------------------------------------------- SIMs
    def get_sim(self, client_id: str, iccid: str) -> Sim:
        """:param client_id: caller. :param iccid: the SIM. :return: the SIM. :raises ApiError: 403/404."""
        with self.lock:
            self.settle()
            return self._own_sim(client_id, iccid)

    def cancel_sim(self, client_id: str, iccid: str) -> None:
        """[DOC CANCEL] free an unused, uninstalled profile and its subscriptions.

        :param client_id: caller. :param iccid: the SIM.
        :raises ApiError: 403/404; 400 ``INVALID_REQUEST_PARAMS`` ([INFERRED]) if installed or used.
        """
        with self.lock:
            self.settle()
            sim = self._own_sim(client_id, iccid)
            subs = self.subs_by_iccid.get(iccid, [])
            if (
                sim.status in ("Installed", "Unavailable")
                or sim.used
                or any(s.current_balance < s.initial_balance for s in subs)
            ):
                raise invalid_params(
                    [Problem(f"SIM {iccid} cannot be cancelled: it is installed or has been used", "$.iccid")]
                )
            # [INFERRED] "freed": the SIM and its subscriptions disappear (later reads answer 404).
            del self.sims[iccid]
            removed = {s.id for s in subs}
            for sub_id in removed:
                self.subscriptions.pop(sub_id, None)
            self.subs_by_iccid.pop(iccid, None)
            self.client_subs[client_id] = [s for s in self.client_subs[client_id] if s.id not in removed]
            if sim.email:
                iccids = self.client_emails[client_id].get(sim.email, [])
                if iccid in iccids:
                    iccids.remove(iccid)

    def set_sim_status(self, iccid: str, status: str) -> Sim:
        """Control plane: force a profile status (device download/installation is not driven by the API).

        :param iccid: the SIM. :param status: one of ``Released/Downloaded/Installed/Unavailable``.
        :return: the SIM. :raises KeyError: unknown SIM. :raises ValueError: bad status.
        """
        if status not in SIM_STATUSES:
            raise ValueError(f"status must be one of {', '.join(SIM_STATUSES)}")
        with self.lock:
            sim = self.sims[iccid]
            if sim.status != status:
                self._sim_status_changed(sim, status)
            return sim

    def _sim_status_changed(self, sim: Sim, status: str) -> None:
        sim.status = status
        sim.last_modified = self.clock.now()
        step = {"Downloaded": "BPP_DOWNLOAD", "Installed": "BPP_INSTALLATION"}.get(status, status.upper())
        self._notify(
            sim,
            "DOWNLOAD_PROGRESS",
            {
                "iccid": sim.iccid,
                "download_progress_step": step,
                "notification_point_description": step.replace("_", " ").title().replace("Bpp", "BPP"),
                "notification_status": "SUCCESS",
            },
        )

    def set_notification(self, client_id: str, iccid: str, ntype: str, webhook_url: str | None) -> dict[str, Any]:
        """[GUESS modelled on v1] register (or with None, remove) a per-SIM webhook.

        :param client_id: caller. :param iccid: SIM. :param ntype: notification type. :param webhook_url: URL or None.
        :return: the registration. :raises ApiError: 400/403/404.
        """
        with self.lock:
            sim = self._own_sim(client_id, iccid)
            canonical = NOTIFICATION_TYPES.get(ntype.upper())
            if canonical is None:
                raise invalid_params(
                    [Problem(f"type must be one of {', '.join(sorted(set(NOTIFICATION_TYPES.values())))}", "$.type")]
                )
            if webhook_url is None:
                if canonical not in sim.notifications:
                    raise not_found("Notification", f"{canonical} of SIM {iccid}")
                del sim.notifications[canonical]
                return {"type": canonical}
            sim.notifications[canonical] = webhook_url
            return {"type": canonical, "webhook_url": webhook_url}

    def _notify(self, sim: Sim, ntype: str, payload: dict[str, Any]) -> None:
        # Webhooks are recorded, not delivered: tests read them from stats["notifications"].
        event = {"id": str(uuid.UUID(int=self._rng.getrandbits(128))), "type": ntype, **payload}
        self.notifications.append({"webhook_url": sim.notifications.get(ntype), "payload": event})

    # ---------------------------------------------------------------------------------------------- subscriptions
    def get_subscription(self, client_id: str, sub_id: str) -> Subscription:
        """:param client_id: caller. :param sub_id: id. :return: the subscription. :raises ApiError: 403/404."""
        with self.lock:
            self.settle()
            return self._own_subscription(client_id, sub_id)

    def list_subscriptions(
        self,
        client_id: str,
        page: int,
        page_size: int,
        *,
        iccid: str | None = None,
        email: str | None = None,
        product_id: str | None = None,
        before: float | None = None,
        after: float | None = None,
        statuses: frozenset[str] | None = None,
    ) -> tuple[list[Subscription], bool]:
        """List the caller's subscriptions, oldest first, filtered lazily.

        :param client_id: caller.
        :param page: 1-based page.
        :param page_size: items per page.
        :param iccid: [DOC] every subscription the SIM ever had.
        :param email: [DOC] subscriber email.
        :param product_id: [DOC] ``product-id``.
        :param before: [DOC] created strictly before (epoch).
        :param after: [DOC] created strictly after (epoch).
        :param statuses: [INFERRED] emulator extension ``status``.
        :return: the page and whether another page exists.
        """
        with self.lock:
            self.settle()
            now = self.clock.now()
            source: list[Subscription]
            if iccid is not None:
                sim = self.sims.get(iccid)
                # [INFERRED] a filter on someone else's (or an unknown) SIM yields an empty list, not 403/404.
                source = self.subs_by_iccid.get(iccid, []) if sim is not None and sim.client_id == client_id else []
                if email is not None and (sim is None or sim.email != email):
                    source = []
            elif email is not None:
                source = [
                    s for icc in self.client_emails.get(client_id, {}).get(email, []) for s in self.subs_by_iccid[icc]
                ]
            else:
                source = self.client_subs.get(client_id, [])
            start = (page - 1) * page_size
            checks: list[Callable[[Subscription], bool]] = []
            if product_id is not None:
                checks.append(lambda s: s.product_id == product_id)
            if before is not None:
                checks.append(lambda s: s.created < before)
            if after is not None:
                checks.append(lambda s: s.created > after)
            if statuses is not None:
                refresh = self._refresh_subscription

                def status_ok(s: Subscription) -> bool:
                    refresh(s, now)
                    return s.status in statuses

                checks.append(status_ok)
            if checks:
                matching: Iterator[Subscription] = (s for s in source if all(c(s) for c in checks))
                window = list(islice(matching, start, start + page_size + 1))
                items, more = window[:page_size], len(window) > page_size
            else:
                items, more = source[start : start + page_size], start + page_size < len(source)
            for sub in items:
                self._refresh_subscription(sub, now)
            return items, more

    def activate_subscription(self, client_id: str, sub_id: str) -> Subscription:
        """[DOC link, DOC-v1 behaviour] replace a future activation date with now (+ ``activate_delay``).

        :param client_id: caller. :param sub_id: id. :return: the subscription.
        :raises ApiError: 403/404; 400 if not ``PENDING``/``PENDING_USAGE`` ([INFERRED]).
        """
        with self.lock:
            self.settle()
            sub = self._own_subscription(client_id, sub_id)
            if sub.status not in ("PENDING", "PENDING_USAGE"):
                raise invalid_params([Problem(f"subscription {sub_id} is {sub.status}, not PENDING", "$.status")])
            now = self.clock.now()
            sub.activation = now + self.config.activate_delay
            sub.expiry = sub.activation + sub.duration_seconds
            sub.status = "PENDING"
            self._refresh_subscription(sub, now)
            return sub

    def expire_subscription(self, client_id: str, sub_id: str) -> Subscription:
        """[GUESS] force-expire a subscription (path and method undocumented).

        :param client_id: caller. :param sub_id: id. :return: the subscription.
        :raises ApiError: 403/404; 400 if already terminal.
        """
        with self.lock:
            self.settle()
            sub = self._own_subscription(client_id, sub_id)
            if sub.status in ("EXPIRED", "DEPLETED"):
                raise invalid_params([Problem(f"subscription {sub_id} is already {sub.status}", "$.status")])
            sub.status = "EXPIRED"
            sub.expiry = self.clock.now()
            sim = self.sims.get(sub.sim_id)
            if sim is not None:
                self._notify_end(sim, sub)
            return sub

    def _notify_end(self, sim: Sim, sub: Subscription) -> None:
        self._notify(
            sim,
            "SUBSCRIPTION_END",
            {
                "iccid": sim.iccid,
                "subscription_id": sub.id,
                "expiration_date": iso(sub.expiry),
                "current_balance": sub.current_balance,
            },
        )

    def usage(self, iccid: str, used_bytes: int) -> dict[str, Any]:
        """Control plane: simulate data use on a SIM ([INFERRED] §9.2/§9.3 dynamics).

        First use installs the profile and starts a ``PENDING_USAGE`` plan; usage drains ``ACTIVE`` plans oldest
        first; a plan at 0 becomes ``DEPLETED``; crossing 80 % records a ``USAGE_THRESHOLD`` notification.

        :param iccid: the SIM.
        :param used_bytes: bytes consumed.
        :return: a summary ``{"iccid", "consumed", "unconsumed", "subscriptions": [...]}``.
        :raises KeyError: unknown SIM.
        :raises ValueError: negative bytes.
        """
        if used_bytes < 0:
            raise ValueError("bytes must be >= 0")
        with self.lock:
            self.settle()
            sim = self.sims[iccid]
            now = self.clock.now()
            subs = self.subs_by_iccid.get(iccid, [])
            for sub in subs:
                self._refresh_subscription(sub, now)
            active = [s for s in subs if s.status == "ACTIVE"]
            if not active:
                first_usage = next((s for s in subs if s.status == "PENDING_USAGE"), None)
                if first_usage is not None:
                    first_usage.activation = now
                    first_usage.expiry = now + first_usage.duration_seconds
                    first_usage.status = "ACTIVE"
                    active = [first_usage]
            if not sim.used or sim.status in ("Released", "Downloaded"):
                sim.used = True
                if sim.status in ("Released", "Downloaded"):
                    self._sim_status_changed(sim, "Installed")
            remaining = used_bytes
            for sub in active:
                if remaining <= 0:
                    break
                take = min(remaining, sub.current_balance)
                sub.current_balance -= take
                remaining -= take
                if not sub.threshold_notified and sub.current_balance <= sub.initial_balance * 0.2:
                    sub.threshold_notified = True
                    self._notify(
                        sim,
                        "USAGE_THRESHOLD",
                        {
                            "iccid": iccid,
                            "subscription_id": sub.id,
                            "threshold": 80,
                            "expiration_date": iso(sub.expiry),
                            "current_balance": sub.current_balance,
                        },
                    )
                if sub.current_balance == 0:
                    sub.status = "DEPLETED"
                    self._notify_end(sim, sub)
            return {
                "iccid": iccid,
                "consumed": used_bytes - remaining,
                "unconsumed": remaining,
                "subscriptions": [{"id": s.id, "status": s.status, "current_balance": s.current_balance} for s in subs],
            }

    # ---------------------------------------------------------------------------------------------- orders
    def get_order(self, client_id: str, order_id: str) -> Order:
        """:param client_id: caller. :param order_id: id. :return: the order (settled if due).
        :raises ApiError: 403/404."""
        with self.lock:
            self.settle()
            order = self.orders.get(order_id)
            if order is None:
                raise not_found("Order", order_id)
            if order.client_id != client_id:
                raise access_denied("Order", order_id)
            return order

    def order_status(self, order: Order) -> str:
        """:param order: an order. :return: its status at the emulator's now ([DOC ORDLC] states)."""
        if order.settled_status is not None:
            return order.settled_status
        now = self.clock.now()
        return "FULFILLING" if now >= order.fulfilling_at else "ACCEPTED"

    def settle(self) -> None:
        """Complete every order whose completion time has passed (lazy order engine)."""
        if not self._pending_orders:
            return
        with self.lock:
            now = self.clock.now()
            due = [o for o in self._pending_orders if o.complete_at <= now]
            if not due:
                return
            self._pending_orders = [o for o in self._pending_orders if o.complete_at > now]
            for order in sorted(due, key=lambda o: o.complete_at):
                self._complete(order)

    def _complete(self, order: Order) -> None:
        at = order.complete_at
        if order.fail_reason is not None:
            self._fail(order, order.fail_reason)
            return
        req = order.request
        product_req = req.get("product") or {}
        product = self.products[product_req["id"]]
        subscriber = req.get("subscriber") or {}
        if order.operation_type == "ACTIVATION":
            rng = self._rng
            iccid = (subscriber.get("sim") or {}).get("iccid") or self._new_iccid(order.client_id, rng)
            if iccid in self.sims:
                self._fail(order, f"SIM {iccid} is already in use")
                return
            sim = Sim(iccid, order.client_id, _matching_id(rng), order.sim_type, "Released", at)
            sim.email = subscriber.get("email")
            self.sims[iccid] = sim
            self.subs_by_iccid[iccid] = []
            if sim.email:
                self.client_emails[order.client_id].setdefault(sim.email, []).append(iccid)
        else:
            iccid = subscriber["sim"]["iccid"]
            existing = self.sims.get(iccid)
            if existing is None or existing.status == "Unavailable":
                self._fail(order, f"SIM {iccid} is no longer available")
                return
            sim = existing
        activation = parse_datetime(product_req["activation_date"]) if product_req.get("activation_date") else None
        expiry = parse_datetime(product_req["expiration_date"]) if product_req.get("expiration_date") else None
        first_usage = bool(product_req.get("is_first_usage_activation")) and activation is None and expiry is None
        if first_usage:
            status = "PENDING_USAGE"
        else:
            activation = at if activation is None else activation
            expiry = activation + product.duration_seconds if expiry is None else expiry
            status = "PENDING" if activation > at else "ACTIVE"
        sub = Subscription(
            id=_b64id(self._rng),
            client_id=order.client_id,
            sim_id=iccid,
            product_id=product.id,
            name=product.name,
            created=at,
            activation=activation,
            expiry=expiry,
            status=status,
            initial_balance=product.data_bytes,
            current_balance=product.data_bytes,
            duration_seconds=product.duration_seconds,
        )
        self.subscriptions[sub.id] = sub
        self.subs_by_iccid[iccid].append(sub)
        self.client_subs[order.client_id].append(sub)
        sim.last_modified = at
        output: dict[str, Any] = {"iccid": iccid, "subscription_id": sub.id}
        if order.operation_type == "ACTIVATION":
            # [DOC-v1; INFERRED] top-up orders carry no matching id.
            output = {"matching_id": sim.matching_id, **output}
        order.output = output
        order.settled_status = "COMPLETED"

    def _fail(self, order: Order, reason: str) -> None:
        order.settled_status = "FAILED"
        # [INFERRED] the body of a FAILED order is undocumented; this "error" field is invented.
        order.error = {"type": "ORDER_FAILED", "messages": [reason]}

    def create_order(self, client_id: str, body: Any, correlation_id: str | None) -> Order:
        """Validate and accept an order ([DOC] §7.1; validation details [INFERRED]).

        :param client_id: caller.
        :param body: the parsed JSON body.
        :param correlation_id: the request's ``X-Correlation-ID``.
        :return: the ``ACCEPTED`` order.
        :raises ApiError: 400 ``INVALID_REQUEST_PARAMS``, 403 (top-up of another client's SIM), 406 (cap).
        """
        with self.lock:
            self.settle()
            now = self.clock.now()
            problems, sim = self._validate_order(client_id, body, now)
            if problems:
                raise invalid_params(problems)
            assert isinstance(body, dict)
            operation = body["operation_type"]
            if operation == "ACTIVATION":
                self._check_caps(client_id, now)
            product_id = body["product"]["id"]
            email = str((body.get("subscriber") or {}).get("email") or "")
            fail_reason = None
            if "FAIL" in product_id:
                fail_reason = f"Product {product_id} could not be provisioned"
            elif "+fail@" in email:
                fail_reason = "Subscriber could not be provisioned"
            cfg = self.config
            slow = 10.0 if "+slow@" in email else 1.0
            order = Order(
                id=str(uuid.uuid4()),
                client_id=client_id,
                operation_type=operation,
                sim_type=body["sim_type"],
                created=now,
                fulfilling_at=now + cfg.order_fulfilling_after * slow,
                complete_at=now + cfg.order_complete_after * slow,
                request=json.loads(json.dumps(body)),
                correlation_id=correlation_id,
                fail_reason=fail_reason,
            )
            if sim is not None and operation == "TOPUP":
                sim.last_modified = now
            self.orders[order.id] = order
            self.order_log.append(order)
            self._pending_orders.append(order)
            if operation == "ACTIVATION":
                self._activations[client_id].append(now)
            return order

    def _check_caps(self, client_id: str, now: float) -> None:
        # [DOC CAP] 406 UNACCEPTABLE over the daily / monthly activation cap (UTC calendar periods [INFERRED]).
        cfg = self.config
        if cfg.daily_esim_cap is None and cfg.monthly_esim_cap is None:
            return
        today = datetime.fromtimestamp(now, UTC)
        day = month = 0
        for ts in self._activations[client_id]:
            moment = datetime.fromtimestamp(ts, UTC)
            if (moment.year, moment.month) == (today.year, today.month):
                month += 1
                if moment.day == today.day:
                    day += 1
        if cfg.daily_esim_cap is not None and day >= cfg.daily_esim_cap:
            raise ApiError(406, "UNACCEPTABLE", [f"Daily eSIM cap of {cfg.daily_esim_cap} reached"])
        if cfg.monthly_esim_cap is not None and month >= cfg.monthly_esim_cap:
            raise ApiError(406, "UNACCEPTABLE", [f"Monthly eSIM cap of {cfg.monthly_esim_cap} reached"])

    def _validate_order(self, client_id: str, body: Any, now: float) -> tuple[list[Problem], Sim | None]:
        problems: list[Problem] = []

        def need(path: str, code: str = "MISSING_MANDATORY_FIELD") -> None:
            problems.append(Problem(f"{path} is required", f"$.{path}", code))

        def bad(path: str, message: str) -> None:
            problems.append(Problem(f"{path} {message}", f"$.{path}", "INVALID_FIELD"))

        if not isinstance(body, dict):
            return [Problem("request body must be a JSON object", "$", "INVALID_FIELD")], None
        operation = body.get("operation_type")
        sim_type = body.get("sim_type")
        if operation is None:
            need("operation_type")
        elif operation not in ("ACTIVATION", "TOPUP"):
            bad("operation_type", "must be one of ACTIVATION, TOPUP")
        if sim_type is None:
            need("sim_type")
        elif sim_type not in ("ESIM", "PSIM"):
            bad("sim_type", "must be one of ESIM, PSIM")
        country = body.get("country")
        if country is None:
            if operation == "ACTIVATION":
                need("country")
        elif not isinstance(country, str) or country not in ISO_COUNTRIES:
            bad("country", "must be an ISO-3166 alpha-2 country code")

        product = body.get("product")
        if not isinstance(product, dict):
            need("product.id") if product is None else bad("product", "must be an object")
            product = {}
        pid = product.get("id")
        if pid is None or pid == "":
            need("product.id")
        elif not isinstance(pid, str):
            bad("product.id", "must be a string")
        elif pid not in self.products and "FAIL" not in pid:
            bad("product.id", f"{pid} is not a known product")
        elif pid in self.products and isinstance(sim_type, str):
            if sim_type not in self.products[pid].sim_type:
                bad("product.id", f"{pid} is not available for sim_type {sim_type}")
        price, currency = product.get("sold_price"), product.get("sold_currency")
        if (price is None) != (currency is None):
            problems.append(
                Problem(
                    "product.sold_price and product.sold_currency must be sent together", "$.product", "INVALID_FIELD"
                )
            )
        if price is not None:
            try:
                if isinstance(price, bool) or float(price) < 0:
                    raise ValueError
            except (TypeError, ValueError):
                bad("product.sold_price", "must be a non-negative number")
        if currency is not None and (not isinstance(currency, str) or len(currency) != 3 or not currency.isupper()):
            bad("product.sold_currency", "must be an ISO-4217 currency code")
        activation: float | None = None
        for key in ("activation_date", "expiration_date"):
            value = product.get(key)
            if value is None:
                continue
            try:
                ts = parse_datetime(str(value))
            except ValueError:
                # [DOC CONV] a bad date format is INVALID_HTTP_MESSAGE.
                raise ApiError(
                    400,
                    "INVALID_HTTP_MESSAGE",
                    [Problem(f"product.{key} is not an ISO-8601 date-time", f"$.product.{key}", "INVALID_FORMAT")],
                ) from None
            if key == "activation_date":
                activation = ts
                if ts < now - 60:
                    bad("product.activation_date", "must not be in the past")
            else:
                start = activation if activation is not None else now
                if ts <= start:
                    bad("product.expiration_date", "must be after the activation date")
                elif isinstance(pid, str) and pid in self.products and ts > start + self.products[pid].duration_seconds:
                    bad("product.expiration_date", "must not be later than the plan allows")
        fu = product.get("is_first_usage_activation")
        if fu is not None and not isinstance(fu, bool):
            bad("product.is_first_usage_activation", "must be a boolean")

        subscriber = body.get("subscriber")
        if not isinstance(subscriber, dict):
            if subscriber is not None:
                bad("subscriber", "must be an object")
            subscriber = {}
        sim_data = subscriber.get("sim")
        iccid = sim_data.get("iccid") if isinstance(sim_data, dict) else None
        sim: Sim | None = None
        if operation == "ACTIVATION":
            email = subscriber.get("email")
            if not email:
                need("subscriber.email")
            elif not isinstance(email, str) or "@" not in email:
                bad("subscriber.email", "must be an email address")
            for key in ("first_name", "last_name"):
                if not subscriber.get(key):
                    need(f"subscriber.{key}")
            residence = subscriber.get("country_of_residence")
            if not residence:
                need("subscriber.country_of_residence")
            elif residence not in ISO_COUNTRIES:
                bad("subscriber.country_of_residence", "must be an ISO-3166 alpha-2 country code")
            if sim_type == "ESIM":
                if not isinstance(subscriber.get("device"), dict):
                    need("subscriber.device")
                if sim_data is not None:
                    bad("subscriber.sim", "must not be set for an eSIM activation")
            elif sim_type == "PSIM":
                if not iccid:
                    need("subscriber.sim.iccid")
                elif not isinstance(iccid, str) or not iccid.isdigit() or not 19 <= len(iccid) <= 22:
                    bad("subscriber.sim.iccid", "must be an ICCID of 19 to 22 digits")
                elif iccid in self.sims:
                    if self.sims[iccid].client_id != client_id:
                        raise access_denied("SIM", iccid)
                    bad("subscriber.sim.iccid", f"{iccid} is already activated")
        elif operation == "TOPUP":
            if sim_type == "ESIM" and not isinstance(subscriber.get("device"), dict):
                need("subscriber.device")
            if sim_type == "PSIM":
                for key in ("sold_price", "sold_currency", "activation_date"):
                    if product.get(key) is None:
                        need(f"product.{key}")
            if not iccid:
                need("subscriber.sim.iccid")
            elif not isinstance(iccid, str):
                bad("subscriber.sim.iccid", "must be a string")
            else:
                found = self.sims.get(iccid)
                if found is None:
                    bad("subscriber.sim.iccid", f"{iccid} is not a known SIM")
                elif found.client_id != client_id:
                    raise access_denied("SIM", iccid)
                elif found.status == "Unavailable":
                    bad("subscriber.sim.iccid", f"{iccid} is Unavailable and cannot be topped up")
                else:
                    sim = found
                    subs = self.subs_by_iccid.get(iccid, [])
                    for s in subs:
                        self._refresh_subscription(s, now)
                    live = sum(1 for s in subs if s.status in ("ACTIVE", "PENDING", "PENDING_USAGE"))
                    if live >= MAX_ACTIVE_SUBSCRIPTIONS_PER_SIM:
                        bad(
                            "subscriber.sim.iccid",
                            f"{iccid} already has {MAX_ACTIVE_SUBSCRIPTIONS_PER_SIM} active subscriptions",
                        )
        return problems, sim

    def orders_view(self) -> list[dict[str, Any]]:
        """:return: every created order with the correlation id that created it (control plane)."""
        with self.lock:
            self.settle()
            return [
                {
                    "id": o.id,
                    "client_id": o.client_id,
                    "correlation_id": o.correlation_id,
                    "operation_type": o.operation_type,
                    "status": self.order_status(o),
                    "created_date": iso(o.created),
                    "output": o.output,
                    "request": o.request,
                }
                for o in self.order_log
            ]


_WWW_AUTH = {"WWW-Authenticate": 'Bearer realm="tru-staff", error="invalid_token"'}
