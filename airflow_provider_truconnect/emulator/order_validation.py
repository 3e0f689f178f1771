"""Validation of a ``POST /v2/orders`` body ([DOC] docs/connect-api.md §7.1; the exact checks are [INFERRED]).

Problems are collected, so one answer lists every missing or bad field, as the documented examples do. Two checks end
the validation at once: a bad date (400 ``INVALID_HTTP_MESSAGE``) and another client's SIM (403).
"""

from __future__ import annotations

from typing import Any

from airflow_provider_truconnect.emulator.clock import parse_datetime
from airflow_provider_truconnect.emulator.errors import ApiError, Problem, access_denied
from airflow_provider_truconnect.emulator.models import (
    LIVE_SUBSCRIPTION_STATUSES,
    MAX_ACTIVE_SUBSCRIPTIONS_PER_SIM,
    Sim,
)
from airflow_provider_truconnect.emulator.store import DataStore

ISO_COUNTRIES = frozenset(
    """AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ
    CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR
    GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO
    JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR
    MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO
    RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV
    TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW""".split()
)


class _Problems:
    def __init__(self) -> None:
        self.items: list[Problem] = []

    def need(self, path: str) -> None:
        self.items.append(Problem(f"{path} is required", f"$.{path}", "MISSING_MANDATORY_FIELD"))

    def bad(self, path: str, message: str) -> None:
        self.items.append(Problem(f"{path} {message}", f"$.{path}", "INVALID_FIELD"))


def validate_order(store: DataStore, client_id: str, body: Any, now: float) -> tuple[list[Problem], Sim | None]:
    """Check an order body against the caller's data (call with the lock held).

    :param store: the data.
    :param client_id: caller.
    :param body: the parsed JSON body.
    :param now: the emulator's now.
    :return: the problems found (empty when valid) and, for a valid TOPUP, the SIM it tops up.
    :raises ApiError: 400 ``INVALID_HTTP_MESSAGE`` on a bad date; 403 for another client's SIM.
    """
    if not isinstance(body, dict):
        return [Problem("request body must be a JSON object", "$", "INVALID_FIELD")], None
    p = _Problems()
    operation = body.get("operation_type")
    sim_type = body.get("sim_type")
    if operation is None:
        p.need("operation_type")
    elif operation not in ("ACTIVATION", "TOPUP"):
        p.bad("operation_type", "must be one of ACTIVATION, TOPUP")
    if sim_type is None:
        p.need("sim_type")
    elif sim_type not in ("ESIM", "PSIM"):
        p.bad("sim_type", "must be one of ESIM, PSIM")
    country = body.get("country")
    if country is None:
        if operation == "ACTIVATION":
            p.need("country")
    elif not isinstance(country, str) or country not in ISO_COUNTRIES:
        p.bad("country", "must be an ISO-3166 alpha-2 country code")
    product = body.get("product")
    if not isinstance(product, dict):
        if product is not None:
            p.bad("product", "must be an object")
        product = {}
    _check_product(store, p, product, sim_type, now)
    subscriber = body.get("subscriber")
    if not isinstance(subscriber, dict):
        if subscriber is not None:
            p.bad("subscriber", "must be an object")
        subscriber = {}
    sim: Sim | None = None
    if operation == "ACTIVATION":
        _check_activation(store, p, client_id, subscriber, sim_type)
    elif operation == "TOPUP":
        sim = _check_topup(store, p, client_id, subscriber, product, sim_type, now)
    return p.items, sim


def _check_product(store: DataStore, p: _Problems, product: dict[str, Any], sim_type: Any, now: float) -> None:
    pid = product.get("id")
    if pid is None or pid == "":
        p.need("product.id")
    elif not isinstance(pid, str):
        p.bad("product.id", "must be a string")
    elif pid not in store.products and "FAIL" not in pid:
        p.bad("product.id", f"{pid} is not a known product")
    elif pid in store.products and isinstance(sim_type, str):
        if sim_type not in store.products[pid].sim_type:
            p.bad("product.id", f"{pid} is not available for sim_type {sim_type}")
    price, currency = product.get("sold_price"), product.get("sold_currency")
    if (price is None) != (currency is None):
        p.items.append(
            Problem("product.sold_price and product.sold_currency must be sent together", "$.product", "INVALID_FIELD")
        )
    if price is not None:
        try:
            if isinstance(price, bool) or float(price) < 0:
                raise ValueError
        except (TypeError, ValueError):
            p.bad("product.sold_price", "must be a non-negative number")
    if currency is not None and (not isinstance(currency, str) or len(currency) != 3 or not currency.isupper()):
        p.bad("product.sold_currency", "must be an ISO-4217 currency code")
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
                p.bad("product.activation_date", "must not be in the past")
        else:
            start = activation if activation is not None else now
            if ts <= start:
                p.bad("product.expiration_date", "must be after the activation date")
            elif isinstance(pid, str) and pid in store.products and ts > start + store.products[pid].duration_seconds:
                p.bad("product.expiration_date", "must not be later than the plan allows")
    fu = product.get("is_first_usage_activation")
    if fu is not None and not isinstance(fu, bool):
        p.bad("product.is_first_usage_activation", "must be a boolean")


def _sim_iccid(subscriber: dict[str, Any]) -> Any:
    sim_data = subscriber.get("sim")
    return sim_data.get("iccid") if isinstance(sim_data, dict) else None


def _check_activation(
    store: DataStore, p: _Problems, client_id: str, subscriber: dict[str, Any], sim_type: Any
) -> None:
    email = subscriber.get("email")
    if not email:
        p.need("subscriber.email")
    elif not isinstance(email, str) or "@" not in email:
        p.bad("subscriber.email", "must be an email address")
    for key in ("first_name", "last_name"):
        if not subscriber.get(key):
            p.need(f"subscriber.{key}")
    residence = subscriber.get("country_of_residence")
    if not residence:
        p.need("subscriber.country_of_residence")
    elif residence not in ISO_COUNTRIES:
        p.bad("subscriber.country_of_residence", "must be an ISO-3166 alpha-2 country code")
    iccid = _sim_iccid(subscriber)
    if sim_type == "ESIM":
        if not isinstance(subscriber.get("device"), dict):
            p.need("subscriber.device")
        if subscriber.get("sim") is not None:
            p.bad("subscriber.sim", "must not be set for an eSIM activation")
    elif sim_type == "PSIM":
        if not iccid:
            p.need("subscriber.sim.iccid")
        elif not isinstance(iccid, str) or not iccid.isdigit() or not 19 <= len(iccid) <= 22:
            p.bad("subscriber.sim.iccid", "must be an ICCID of 19 to 22 digits")
        elif iccid in store.sims:
            if store.sims[iccid].client_id != client_id:
                raise access_denied("SIM", iccid)
            p.bad("subscriber.sim.iccid", f"{iccid} is already activated")


def _check_topup(
    store: DataStore,
    p: _Problems,
    client_id: str,
    subscriber: dict[str, Any],
    product: dict[str, Any],
    sim_type: Any,
    now: float,
) -> Sim | None:
    if sim_type == "ESIM" and not isinstance(subscriber.get("device"), dict):
        p.need("subscriber.device")
    if sim_type == "PSIM":
        for key in ("sold_price", "sold_currency", "activation_date"):
            if product.get(key) is None:
                p.need(f"product.{key}")
    iccid = _sim_iccid(subscriber)
    if not iccid:
        p.need("subscriber.sim.iccid")
        return None
    if not isinstance(iccid, str):
        p.bad("subscriber.sim.iccid", "must be a string")
        return None
    found = store.sims.get(iccid)
    if found is None:
        p.bad("subscriber.sim.iccid", f"{iccid} is not a known SIM")
        return None
    if found.client_id != client_id:
        raise access_denied("SIM", iccid)
    if found.status == "Unavailable":
        p.bad("subscriber.sim.iccid", f"{iccid} is Unavailable and cannot be topped up")
        return None
    subs = store.subs_by_iccid.get(iccid, [])
    for s in subs:
        s.refresh(now)
    if sum(1 for s in subs if s.status in LIVE_SUBSCRIPTION_STATUSES) >= MAX_ACTIVE_SUBSCRIPTIONS_PER_SIM:
        p.bad("subscriber.sim.iccid", f"{iccid} already has {MAX_ACTIVE_SUBSCRIPTIONS_PER_SIM} active subscriptions")
    return found
