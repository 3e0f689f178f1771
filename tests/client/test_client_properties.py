"""Property-based tests of the client core's pure parts: link joining, ``Retry-After`` parsing, backoff bounds,
tolerant status parsing."""

from __future__ import annotations

import email.utils
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_truconnect.client import OrderStatus, RetryPolicy, SimStatus, SubscriptionStatus
from airflow_provider_truconnect.client.errors import TruConnectPaginationError, TruConnectRateLimitError
from airflow_provider_truconnect.client.pagination import join_link
from airflow_provider_truconnect.client.retry import parse_retry_after

SEGMENT = st.text(alphabet=string.ascii_letters + string.digits + "-_.=~", min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)
PATH = st.lists(SEGMENT, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
QUERY = st.one_of(
    st.just(""),
    st.dictionaries(
        SEGMENT, st.text(alphabet=string.ascii_letters + string.digits + ":/.", max_size=20), max_size=3
    ).map(lambda d: ("?" + "&".join(f"{k}={v}" for k, v in d.items())) if d else ""),
)
HOST = st.sampled_from(["services.truphone.com", "api.example.com", "127.0.0.1", "localhost"])
SCHEME = st.sampled_from(["https", "http"])
PORT = st.sampled_from(["", ":8443", ":8080"])
PREFIX = st.sampled_from(["", "/connect-api", "/a/b"])


@st.composite
def bases(draw: st.DrawFn) -> tuple[str, str, str]:
    origin = f"{draw(SCHEME)}://{draw(HOST)}{draw(PORT)}"
    prefix = draw(PREFIX)
    return origin, prefix, origin + prefix + draw(st.sampled_from(["", "/"]))


@given(bases(), PATH, QUERY)
def test_relative_link_joins_the_api_base_not_the_host_root(base: tuple[str, str, str], path: str, query: str) -> None:
    origin, prefix, api_base = base
    joined = join_link(api_base, path + query)
    if prefix and (path == prefix or path.startswith(prefix + "/")):
        assert joined == origin + path + query  # prefix already present: not doubled
    else:
        assert joined == origin + prefix + path + query
    assert join_link(api_base, path.lstrip("/") + query) == joined  # with or without the leading slash


@given(bases(), PATH, QUERY)
def test_base_url_placeholder(base: tuple[str, str, str], path: str, query: str) -> None:
    origin, prefix, api_base = base
    assert join_link(api_base, "{BASE_URL}" + path + query) == origin + prefix + path + query


@given(bases(), PATH, QUERY)
def test_absolute_same_origin_link_is_kept(base: tuple[str, str, str], path: str, query: str) -> None:
    origin, prefix, api_base = base
    link = origin + prefix + path + query
    assert join_link(api_base, link) == link
    assert join_link(api_base, "  " + link + " ") == link


@given(bases(), PATH, st.sampled_from(["https://evil.example", "http://evil.example", "//evil.example", "ftp://x"]))
def test_other_origin_is_refused(base: tuple[str, str, str], path: str, other: str) -> None:
    with pytest.raises(TruConnectPaginationError):
        join_link(base[2], other + path)


@given(bases())
def test_scheme_downgrade_or_other_port_is_refused(base: tuple[str, str, str]) -> None:
    origin, prefix, api_base = base
    flipped = (
        origin.replace("https://", "http://") if origin.startswith("https") else origin.replace("http://", "https://")
    )
    with pytest.raises(TruConnectPaginationError):
        join_link(api_base, flipped + prefix + "/v2/x")
    host = origin.split("://", 1)[1].split(":")[0]
    with pytest.raises(TruConnectPaginationError):
        join_link(api_base, f"{origin.split('://')[0]}://{host}:1{prefix}/v2/x")


@given(st.text(max_size=60))
@settings(max_examples=150)
def test_garbage_link_gives_a_url_or_a_pagination_error(link: str) -> None:
    try:
        joined = join_link("https://services.truphone.com/connect-api", link)
    except TruConnectPaginationError:
        return
    assert joined.startswith("https://services.truphone.com")


def test_link_examples_from_the_docs() -> None:
    base = "https://services.truphone.com/connect-api"
    assert join_link(base, "/v2/subscriptions?page=2&page_size=1") == base + "/v2/subscriptions?page=2&page_size=1"
    assert join_link(base, "{BASE_URL}/v2/orders/6d41") == base + "/v2/orders/6d41"
    assert join_link(base, "/v2/s?next=https://evil.example/x") == base + "/v2/s?next=https://evil.example/x"
    with pytest.raises(TruConnectPaginationError):
        join_link(base, "https://services.truphone.com:99999/x")  # used to escape as a bare ValueError
    with pytest.raises(TruConnectPaginationError):
        join_link(base, "   ")


# ------------------------------------------------------------------------------------------------ Retry-After
NOW = 1_780_000_000.0


@given(st.integers(min_value=0, max_value=10**12))
def test_retry_after_seconds(n: int) -> None:
    assert parse_retry_after(str(n), NOW) == float(n)
    assert parse_retry_after(f"  {n} ", NOW) == float(n)


@given(st.integers(min_value=-(10**9), max_value=10**9))
def test_retry_after_http_date(delta: int) -> None:
    value = email.utils.formatdate(NOW + delta, usegmt=True)
    parsed = parse_retry_after(value, NOW)
    assert parsed is not None
    assert parsed == max(0.0, float(delta))  # a date in the past means "now", never a negative wait


@given(st.text(max_size=40))
@settings(max_examples=200)
def test_retry_after_garbage_never_raises_and_is_never_negative(value: str) -> None:
    parsed = parse_retry_after(value, NOW)
    assert parsed is None or parsed >= 0


@pytest.mark.parametrize("value", [None, "", "  ", "-5", "1.5", "soon", "Wed, 99 Foo 2015 07:28:00 GMT", "٣"])
def test_retry_after_unusable_values(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


# ------------------------------------------------------------------------------------------------ backoff
@given(
    st.integers(min_value=1, max_value=100_000),
    st.floats(min_value=0.01, max_value=10),
    st.floats(min_value=0.01, max_value=120),
)
def test_backoff_stays_within_its_ceiling(attempt: int, base: float, maximum: float) -> None:
    policy = RetryPolicy(backoff_base=base, backoff_max=maximum)
    ceiling = min(maximum, base * 2.0 ** min(attempt - 1, 62))
    wait = policy.backoff(attempt, None)  # used to overflow beyond attempt ~1025
    assert ceiling / 2 <= wait <= ceiling <= maximum


@given(st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=1, max_value=50))
def test_retry_after_hint_is_waited_for_only_within_the_cap(hint: float, attempt: int) -> None:
    policy = RetryPolicy()
    exc = TruConnectRateLimitError("x", retry_after=hint)
    wait = policy.backoff(attempt, exc)
    assert wait >= 0
    if hint == hint and 0 <= hint <= policy.max_retry_after:
        assert wait == hint and policy.should_retry(exc, idempotent=True)
    elif hint == hint and hint > policy.max_retry_after:
        # Longer than the cap: not retried at all (retrying sooner would hit the limit again).
        assert not policy.should_retry(exc, idempotent=True)
    else:
        assert wait <= policy.backoff_max and policy.should_retry(exc, idempotent=True)


# ------------------------------------------------------------------------------------------------ statuses
@given(st.one_of(st.text(max_size=20), st.none(), st.integers(), st.floats()))
def test_unknown_status_values_are_unknown_and_not_terminal(value: object) -> None:
    for enum_type in (OrderStatus, SubscriptionStatus, SimStatus):
        parsed = enum_type.parse(value)
        known = isinstance(value, str) and value.strip().upper().replace(" ", "_") in enum_type.__members__
        if not known:
            assert parsed.name == "UNKNOWN"
            assert not parsed.is_terminal  # type: ignore[attr-defined]


def test_known_statuses_parse_case_insensitively() -> None:
    assert OrderStatus.parse(" completed ") is OrderStatus.COMPLETED and OrderStatus.COMPLETED.is_terminal
    assert OrderStatus.parse("FULFILING") is OrderStatus.FULFILING and not OrderStatus.FULFILING.is_terminal
    assert OrderStatus.parse("PENDING_REVIEW") is OrderStatus.UNKNOWN
    assert SimStatus.parse("unavailable") is SimStatus.UNAVAILABLE and SimStatus.UNAVAILABLE.is_terminal
    assert SubscriptionStatus.parse("pending usage") is SubscriptionStatus.PENDING_USAGE
