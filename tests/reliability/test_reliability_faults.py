"""Idempotent calls under injected faults, on the hook (sync) and async client paths, over real sockets.

Every scenario checks: the call succeeds within the retry budget, the simulated waiting stays within the policy's
``max_total_wait``; when the budget runs out, the error is typed, says what happened and carries the correlation id
that the emulator recorded.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_truconnect.client import (
    TruConnectAuthError,
    TruConnectConnectionError,
    TruConnectRateLimitError,
    TruConnectServerError,
)
from tests.reliability.support import Harness, report

ROUTE = "GET /v2/products"
TOKEN = "POST /auth/realms/tru-staff/protocol/openid-connect/token"


def ok_call(h: Harness) -> Any:
    body = h.call("GET", "/v2/products", params={"page_size": 1})
    assert body["data"], "the call should have returned the first product page"
    return body


def budget_ok(h: Harness) -> None:
    assert sum(h.waits) <= h.policy.max_total_wait
    assert len(h.waits) <= h.policy.max_retries


@pytest.mark.parametrize(
    ("name", "fault", "failures"),
    [
        ("5xx burst (503 x3)", {"status": 503, "count": 3}, 3),
        ("429 without Retry-After (x2)", {"status": 429, "count": 2}, 2),
        ("dropped connection (x2)", {"drop": True, "count": 2}, 2),
        ("malformed JSON on 200 (x2)", {"body": "malformed", "count": 2}, 2),
        ("HTML gateway page 502 (x2)", {"body": "html", "count": 2}, 2),
    ],
)
def test_transient_fault_is_retried_within_budget(harness: Harness, name: str, fault: dict, failures: int) -> None:
    ok_call(harness)  # token in the cache first: the fault hits the API route
    harness.emu.control.add_fault(ROUTE, **fault)
    ok_call(harness)
    assert len(harness.waits) == failures
    budget_ok(harness)
    counts = harness.route_counts(ROUTE)
    assert sum(counts.values()) == 2 + failures
    report(
        f"{name} [{harness.mode}]",
        outcome="success",
        retries=len(harness.waits),
        simulated_wait_s=round(sum(harness.waits), 2),
        budget_s=harness.policy.max_total_wait,
    )


def test_mixed_5xx_burst(harness: Harness) -> None:
    ok_call(harness)
    for status in (500, 502, 504):
        harness.emu.control.add_fault(ROUTE, status=status, count=1)
    ok_call(harness)
    assert len(harness.waits) == 3
    budget_ok(harness)
    assert harness.route_counts(ROUTE) == {"500": 1, "502": 1, "504": 1, "200": 2}


def test_429_retry_after_is_honoured(harness: Harness) -> None:
    ok_call(harness)
    harness.emu.control.add_fault(ROUTE, status=429, retry_after=3, count=2)
    ok_call(harness)
    assert harness.waits == [3.0, 3.0]
    budget_ok(harness)
    report(
        f"429 with Retry-After: 3 (x2) [{harness.mode}]",
        outcome="success",
        retries=2,
        simulated_wait_s=sum(harness.waits),
        budget_s=harness.policy.max_total_wait,
    )


def test_huge_retry_after_is_capped_and_budget_ends_it(harness: Harness) -> None:
    ok_call(harness)
    harness.emu.control.add_fault(ROUTE, status=429, retry_after=3600, count=100)
    with pytest.raises(TruConnectRateLimitError) as info:
        ok_call(harness)
    assert all(w == harness.policy.max_retry_after for w in harness.waits)
    budget_ok(harness)
    err = info.value
    assert err.status_code == 429 and "rate limited" in str(err)
    assert harness.recorded_statuses(err.correlation_id or "") == [429]
    report(
        f"429 with Retry-After: 3600, never ends [{harness.mode}]",
        outcome=f"{type(err).__name__} after {len(harness.waits) + 1} attempts",
        retries=len(harness.waits),
        simulated_wait_s=sum(harness.waits),
        budget_s=harness.policy.max_total_wait,
    )


def test_read_timeout_is_retried(harness: Harness) -> None:
    harness.reconfigure(timeout=0.3)
    ok_call(harness)
    harness.emu.control.add_fault(ROUTE, delay=1.0, count=1)
    ok_call(harness)
    harness.settle(ROUTE, 3)
    assert len(harness.waits) == 1
    budget_ok(harness)
    report(
        f"read timeout (0.3 s timeout, 1 s delay) [{harness.mode}]",
        outcome="success",
        retries=1,
        simulated_wait_s=round(sum(harness.waits), 2),
        budget_s=harness.policy.max_total_wait,
    )


@pytest.mark.parametrize(
    ("fault", "error", "says"),
    [
        ({"status": 503}, TruConnectServerError, "failed on the server"),
        ({"drop": True}, TruConnectConnectionError, "connection failed"),
        ({"status": 429}, TruConnectRateLimitError, "rate limited"),
        ({"body": "html"}, TruConnectServerError, "Bad Gateway"),
    ],
    ids=["503", "drop", "429", "html"],
)
def test_exhausted_budget_gives_typed_error_with_correlation_id(
    harness: Harness, fault: dict, error: type, says: str
) -> None:
    ok_call(harness)
    harness.emu.control.add_fault(ROUTE, count=100, **fault)
    with pytest.raises(error) as info:
        ok_call(harness)
    err = info.value
    attempts = harness.policy.max_retries + 1
    assert len(harness.waits) == harness.policy.max_retries
    budget_ok(harness)
    assert says in str(err)
    assert err.correlation_id and err.correlation_id in str(err)
    # The correlation id on the error is the one of the last attempt, as the emulator saw it.
    expected = 0 if fault.get("drop") else (502 if fault.get("body") else fault["status"])
    assert harness.recorded_statuses(err.correlation_id) == [expected]
    assert sum(harness.route_counts(ROUTE).values()) == 1 + attempts
    report(
        f"budget exhausted: {next(iter(fault))}={next(iter(fault.values()))} forever [{harness.mode}]",
        outcome=f"{type(err).__name__} after {attempts} attempts, correlation id recorded by the emulator",
        retries=len(harness.waits),
        simulated_wait_s=round(sum(harness.waits), 2),
        budget_s=harness.policy.max_total_wait,
    )


def test_tight_budget_bounds_total_wait(harness: Harness) -> None:
    harness.reconfigure(policy=harness.make_policy(max_retries=50, max_total_wait=5.0))
    ok_call(harness)
    harness.emu.control.add_fault(ROUTE, status=503, count=1000)
    with pytest.raises(TruConnectServerError):
        ok_call(harness)
    assert 0 < sum(harness.waits) <= 5.0
    assert len(harness.waits) < 50


def test_token_endpoint_down_for_a_while(harness: Harness) -> None:
    harness.emu.control.add_fault("token", status=503, count=3)
    ok_call(harness)
    assert len(harness.waits) == 3
    budget_ok(harness)
    assert harness.route_counts(TOKEN) == {"503": 3, "200": 1}
    assert harness.stats()["token_grants_total"] == {"client_credentials": 1}
    report(
        f"token endpoint 503 x3 [{harness.mode}]",
        outcome="success",
        retries=3,
        simulated_wait_s=round(sum(harness.waits), 2),
        budget_s=harness.policy.max_total_wait,
        token_requests=4,
    )


def test_token_endpoint_down_for_good_is_one_budget_not_nested(harness: Harness) -> None:
    # Regression: the token fetch used to run its own retry loop inside each API attempt (5 x 5 = 25 token requests,
    # waiting up to 5 budgets). Now one loop, one budget.
    harness.emu.control.add_fault("token", status=503, count=1000)
    with pytest.raises(TruConnectServerError) as info:
        ok_call(harness)
    err = info.value
    attempts = harness.policy.max_retries + 1
    assert harness.route_counts(TOKEN) == {"503": attempts}
    budget_ok(harness)
    assert "Token endpoint failed" in str(err) and err.status_code == 503
    assert err.correlation_id and harness.recorded_statuses(err.correlation_id) == [503]
    assert harness.route_counts(ROUTE) == {}
    report(
        f"token endpoint 503 forever [{harness.mode}]",
        outcome=f"{type(err).__name__} after {attempts} token requests, correlation id recorded",
        retries=len(harness.waits),
        simulated_wait_s=round(sum(harness.waits), 2),
        budget_s=harness.policy.max_total_wait,
    )


def test_token_revoked_mid_run(harness: Harness) -> None:
    ok_call(harness)
    harness.emu.control.revoke()
    ok_call(harness)
    stats = harness.stats()
    assert stats["unauthorized"] == 1
    assert stats["token_grants_total"] == {"client_credentials": 2}
    assert harness.waits == []
    report(f"token revoked mid-run [{harness.mode}]", outcome="success after one 401 and one re-auth", grants=2)


def test_refresh_token_rejected_falls_back_to_client_credentials(harness: Harness) -> None:
    ok_call(harness)
    harness.clock.advance(300)
    ok_call(harness)  # refresh grant
    harness.emu.control.revoke()  # the refresh token dies too
    harness.clock.advance(300)
    ok_call(harness)
    stats = harness.stats()
    assert stats["token_grants_total"] == {"client_credentials": 2, "refresh_token": 1}
    assert stats["token_failures_by_error"] == {"invalid_grant": 1}
    assert stats["unauthorized"] == 0
    report(
        f"refresh token rejected [{harness.mode}]",
        outcome="success; one invalid_grant, then client_credentials",
        grants=3,
    )


def test_no_refresh_token_issued(harness: Harness) -> None:
    harness.emu.control.set_config(issue_refresh_tokens=False)
    for _ in range(4):
        ok_call(harness)
        harness.clock.advance(290)
    assert harness.stats()["token_grants_total"] == {"client_credentials": 4}
    assert harness.stats()["unauthorized"] == 0


def test_expires_in_shorter_than_real_lifetime(harness: Harness) -> None:
    # The server says 60 s, the token lives 300 s: the client renews early (wasteful but safe), never sees a 401.
    harness.emu.control.set_config(reported_expires_in=60, issue_refresh_tokens=False)
    for _ in range(5):
        ok_call(harness)
        harness.clock.advance(50)
    stats = harness.stats()
    assert stats["unauthorized"] == 0
    assert stats["token_grants_total"] == {"client_credentials": 5}
    report(
        f"expires_in 60 s, token lives 300 s [{harness.mode}]",
        outcome="success, renewed every call 50 s apart, 0 x 401",
        grants=5,
    )


def test_expires_in_longer_than_real_lifetime(harness: Harness) -> None:
    # The server says 600 s, the token dies at 300 s: one 401, one re-auth, the call still succeeds.
    harness.emu.control.set_config(reported_expires_in=600, issue_refresh_tokens=False)
    ok_call(harness)
    harness.clock.advance(350)
    ok_call(harness)
    stats = harness.stats()
    assert stats["unauthorized"] == 1
    assert stats["token_grants_total"] == {"client_credentials": 2}
    report(
        f"expires_in 600 s, token dies at 300 s [{harness.mode}]",
        outcome="success after one 401 and one re-auth",
        grants=2,
    )


def test_401_twice_is_an_auth_error_not_retried(harness: Harness) -> None:
    ok_call(harness)
    harness.emu.control.add_fault(ROUTE, status=401, count=5)
    with pytest.raises(TruConnectAuthError) as info:
        ok_call(harness)
    assert harness.waits == []
    assert harness.route_counts(ROUTE) == {"200": 1, "401": 2}
    assert info.value.correlation_id in [r["correlation_id"] for r in harness.stats()["requests"]]


def test_delete_processed_but_answer_lost_counts_as_deleted(harness: Harness) -> None:
    """A DELETE whose first answer was lost is repeated; the repeat's 404 means the first one worked."""
    from airflow_provider_truconnect.client import TruConnectNotFoundError
    from tests.reliability.support import activation_order

    created = harness.create_order(activation_order(harness.emu))
    harness.clock.advance(60)
    iccid = harness.call("GET", f"/v2/orders/{created['id']}")["output"]["iccid"]
    harness.emu.control.add_fault("DELETE /v2/sims/{iccid}", status=503, after=True, count=1)
    assert harness.call("DELETE", f"/v2/sims/{iccid}") is None
    assert harness.route_counts("DELETE /v2/sims/{iccid}") == {"503": 1, "404": 1}
    # Without an earlier attempt that may have acted, a 404 is still an error.
    with pytest.raises(TruConnectNotFoundError):
        harness.call("DELETE", f"/v2/sims/{iccid}")
