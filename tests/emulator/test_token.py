"""Token endpoint contract: Keycloak-shaped success and errors (§1)."""

from __future__ import annotations

import base64

import requests


def _cc(emu, **extra):
    data = {"grant_type": "client_credentials", "client_id": emu.client_id, "client_secret": emu.client_secret}
    data.update(extra)
    return requests.post(emu.oauth_url, data=data, timeout=10)


def test_client_credentials_post_shape(emu):
    response = _cc(emu)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "access_token",
        "expires_in",
        "refresh_expires_in",
        "refresh_token",
        "token_type",
        "not-before-policy",
        "scope",
    }
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["refresh_expires_in"] == 1800
    assert body["not-before-policy"] == 0
    for key in ("access_token", "refresh_token"):
        parts = body[key].split(".")
        assert len(parts) == 3 and all(parts)
        assert all(set(p) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") for p in parts)
    assert body["access_token"] != body["refresh_token"]
    assert _cc(emu).json()["access_token"] != body["access_token"]


def test_client_credentials_basic_auth(emu):
    response = requests.post(
        emu.oauth_url,
        data={"grant_type": "client_credentials"},
        auth=(emu.client_id, emu.client_secret),
        headers={"Accept": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.json()["access_token"]


def test_invalid_client_both_styles(emu):
    for response in (
        _cc(emu, client_secret="wrong"),
        _cc(emu, client_id="nobody"),
        requests.post(emu.oauth_url, data={"grant_type": "client_credentials"}, auth=("x", "y"), timeout=10),
        requests.post(
            emu.oauth_url,
            data={"grant_type": "client_credentials"},
            headers={"Authorization": "Basic " + base64.b64encode(b"garbage").decode()},
            timeout=10,
        ),
    ):
        assert response.status_code == 401
        assert response.json() == {"error": "invalid_client", "error_description": "Invalid client credentials"}


def test_missing_and_unsupported_grant(emu):
    response = requests.post(emu.oauth_url, data={"client_id": emu.client_id}, timeout=10)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request", "error_description": "Missing form parameter: grant_type"}
    response = _cc(emu, grant_type="password")
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def _refresh(emu, token, client_id=None, secret=None):
    return requests.post(
        emu.oauth_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": token,
            "client_id": client_id or emu.client_id,
            "client_secret": secret or emu.client_secret,
        },
        timeout=10,
    )


def test_refresh_rotation_and_reuse(emu):
    first = _cc(emu).json()
    second = _refresh(emu, first["refresh_token"])
    assert second.status_code == 200
    body = second.json()
    assert body["refresh_token"] != first["refresh_token"]
    assert body["access_token"] != first["access_token"]
    reused = _refresh(emu, first["refresh_token"])
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    assert _refresh(emu, body["refresh_token"]).status_code == 200
    stats = emu.control.stats()
    assert stats["token_grants"][emu.client_id] == {"client_credentials": 1, "refresh_token": 2}
    assert stats["token_failures"]["refresh_token"] == {"invalid_grant": 1}


def test_refresh_not_single_use(emu):
    emu.control.set_config(refresh_token_single_use=False)
    first = _cc(emu).json()
    assert _refresh(emu, first["refresh_token"]).status_code == 200
    again = _refresh(emu, first["refresh_token"])
    assert again.status_code == 200
    assert again.json()["refresh_token"] == first["refresh_token"]


def test_refresh_errors(emu):
    assert _refresh(emu, "not-a-token").json() == {
        "error": "invalid_grant",
        "error_description": "Invalid refresh token",
    }
    first = _cc(emu).json()
    assert _refresh(emu, first["access_token"]).status_code == 400  # an access token is not a refresh token
    other = _refresh(emu, first["refresh_token"], "other-client", emu.config.clients["other-client"])
    assert other.status_code == 400 and other.json()["error"] == "invalid_grant"
    emu.control.revoke(first["refresh_token"])
    assert _refresh(emu, first["refresh_token"]).json()["error"] == "invalid_grant"
    second = _cc(emu).json()
    emu.control.advance(1801)
    expired = _refresh(emu, second["refresh_token"])
    assert expired.status_code == 400
    assert expired.json() == {"error": "invalid_grant", "error_description": "Token is not active"}


def test_no_refresh_tokens(emu):
    emu.control.set_config(issue_refresh_tokens=False)
    body = _cc(emu).json()
    assert "refresh_token" not in body
    assert body["refresh_expires_in"] == 0


def test_access_token_expiry_and_reported_lie(emu):
    emu.control.set_config(access_token_lifetime=60, reported_expires_in=3600)
    body = _cc(emu).json()
    assert body["expires_in"] == 3600
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert requests.get(emu.api_base + "/v2/products", headers=headers, timeout=10).status_code == 200
    emu.control.advance(59)
    assert requests.get(emu.api_base + "/v2/products", headers=headers, timeout=10).status_code == 200
    emu.control.advance(2)
    response = requests.get(emu.api_base + "/v2/products", headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.json()["type"] == "UNAUTHORISED"


def test_issued_tokens_listed(emu):
    body = _cc(emu).json()
    tokens = emu.control.issued_tokens()
    assert body["access_token"] in tokens and body["refresh_token"] in tokens


def test_grants_counted_in_stats(emu):
    _cc(emu)
    _cc(emu, client_secret="bad")
    stats = emu.control.stats()
    assert stats["token_grants_total"] == {"client_credentials": 1}
    assert stats["token_failures"] == {"client_credentials": {"invalid_client": 1}}
