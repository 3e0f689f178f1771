"""Contract tests of the Connect API v2 routes: shapes, pagination, filters and errors (§4, §5, §7)."""

from __future__ import annotations

import re

import requests

ID_RE = re.compile(r"^[A-Za-z0-9_-]{43}=$")
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
ICCID_RE = re.compile(r"^8944\d{15,16}$")
MATCHING_RE = re.compile(r"^[A-Z0-9]{2}-[A-Z0-9]{6}-[A-Z0-9]{4}$")


def _sim(emu, client=None, status=None):
    client = client or emu.client_id
    return next(s for s in emu.state.sims.values() if s.client_id == client and (status is None or s.status == status))


def test_products_list_and_item(api, emu):
    response = api.get("/v2/products")
    assert response.status_code == 200
    body = response.json()
    assert body["_metadata"]["page"] == 1 and body["_metadata"]["page_size"] == 10
    assert body["_metadata"]["page_count"] == len(body["data"]) == 8
    assert body["_metadata"]["links"] == {"_self": "/v2/products?page=1&page_size=10"}
    product = body["data"][0]
    assert set(product) == {
        "id", "name", "sim_type", "duration", "duration_unit", "data", "data_unit", "price", "price_currency",
        "footprint_code", "_metadata",
    }  # fmt: skip
    assert ID_RE.match(product["id"])
    assert isinstance(product["sim_type"], list)
    assert product["_metadata"]["links"]["_self"] == f"{emu.api_base}/v2/products/{product['id']}"
    one = api.get(f"/v2/products/{product['id']}")
    assert one.status_code == 200 and one.json() == product
    encoded = api.get("/v2/products/" + product["id"].replace("=", "%3D"))
    assert encoded.status_code == 200 and encoded.json()["id"] == product["id"]
    assert api.get("/v2/products/nope=").json() == {"type": "NOT_FOUND", "messages": ["Product nope= not found"]}


def test_products_pagination_links(api):
    first = api.get("/v2/products", params={"page_size": 3}).json()
    assert first["_metadata"]["links"] == {
        "_self": "/v2/products?page=1&page_size=3",
        "_next": "/v2/products?page=2&page_size=3",
    }
    last = api.get("/v2/products", params={"page": 3, "page_size": 3}).json()
    assert last["_metadata"]["page_count"] == 2
    assert "_next" not in last["_metadata"]["links"]
    assert last["_metadata"]["links"]["_prev"] == "/v2/products?page=2&page_size=3"
    assert api.get("/v2/products", params={"page": 0}).json()["type"] == "INVALID_REQUEST_PARAMS"
    assert api.get("/v2/products", params={"page_size": "x"}).status_code == 400
    assert api.get("/v2/products", params={"page_size": 5000}).json()["_metadata"]["page_size"] == 1000


def test_sim_shape(api, emu):
    sim = _sim(emu)
    response = api.get(f"/v2/sims/{sim.iccid}")
    assert response.status_code == 200
    body = response.json()
    assert body["iccid"] == sim.iccid and ICCID_RE.match(body["iccid"])
    assert body["status"] in ("Released", "Downloaded", "Installed", "Unavailable")
    assert MATCHING_RE.match(body["matching_id"])
    assert ISO_RE.match(body["last_modified"])
    assert body["sim_type"] in ("ESIM", "PSIM")
    links = body["_metadata"]["links"]
    lpa = f"LPA:1$rsp.truphone.com${body['matching_id']}"
    assert links == {
        "_lpa": lpa,
        "_subscriptions": f"{emu.api_base}/v2/subscriptions?iccid={sim.iccid}",
        "_qrcode": f"http://services.truphone.com/qrcode/v1/esim/{lpa}",
        "_self": f"{emu.api_base}/v2/sims/{sim.iccid}",
    }


def test_access_denied_and_not_found(api, emu):
    other_sim = _sim(emu, "other-client")
    response = api.get(f"/v2/sims/{other_sim.iccid}")
    assert response.status_code == 403
    assert response.json()["type"] == "ACCESS_DENIED"
    other_sub = emu.state.subs_by_iccid[other_sim.iccid][0]
    assert api.get(f"/v2/subscriptions/{other_sub.id}").status_code == 403
    assert api.post(f"/v2/subscriptions/{other_sub.id}/activate").status_code == 403
    assert api.request("DELETE", f"/v2/sims/{other_sim.iccid}").status_code == 403
    assert api.get("/v2/sims/8944000000000000000").json()["type"] == "NOT_FOUND"
    assert api.get("/v2/subscriptions/unknown%3D").status_code == 404
    assert api.get("/v2/orders/6d41c4ff-1877-4d13-82b0-7dad02c4b02a").status_code == 404
    assert api.get("/v2/nothing").status_code == 404
    assert api.request("PATCH", "/v2/orders").status_code == 405


def test_unauthorised(emu):
    url = emu.api_base + "/v2/products"
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}, {"Authorization": "Bearer x.y.z"}):
        response = requests.get(url, headers=headers, timeout=10)
        assert response.status_code == 401
        body = response.json()
        assert body["type"] == "UNAUTHORISED" and body["messages"]
    token = requests.post(
        emu.oauth_url,
        data={"grant_type": "client_credentials", "client_id": emu.client_id, "client_secret": emu.client_secret},
        timeout=10,
    ).json()
    refresh_as_access = requests.get(url, headers={"Authorization": f"Bearer {token['refresh_token']}"}, timeout=10)
    assert refresh_as_access.status_code == 401
    good = {"Authorization": f"bearer {token['access_token']}"}
    assert requests.get(url, headers=good, timeout=10).status_code == 200
    emu.control.revoke(token["access_token"])
    assert requests.get(url, headers=good, timeout=10).status_code == 401
    assert emu.control.stats()["unauthorized"] == 6


def test_revoke_all(api, emu):
    assert api.get("/v2/products").status_code == 200
    assert emu.control.revoke() >= 1
    assert api.get("/v2/products").status_code == 401


def test_subscription_shape_and_ids(api, emu):
    body = api.get("/v2/subscriptions", params={"page_size": 1}).json()
    sub = body["data"][0]
    assert set(sub) == {
        "id", "name", "sim_id", "product_id", "created_date", "activation_date", "expiry_date", "status",
        "initial_balance", "current_balance", "spend_balance", "balance_units", "_metadata",
    }  # fmt: skip
    assert ID_RE.match(sub["id"]) and ICCID_RE.match(sub["sim_id"])
    assert isinstance(sub["initial_balance"], int) and sub["balance_units"] == "Bytes"
    assert sub["spend_balance"] == sub["initial_balance"] - sub["current_balance"]
    base = emu.api_base
    assert sub["_metadata"]["links"] == {
        "_activate": f"{base}/v2/subscriptions/{sub['id']}/activate",
        "_sim": f"{base}/v2/sims/{sub['sim_id']}",
        "_self": f"{base}/v2/subscriptions/{sub['id']}",
        "_product": f"{base}/v2/products/{sub['product_id']}",
    }
    assert body["_metadata"]["page_count"] == 1
    assert body["_metadata"]["links"]["_next"] == "/v2/subscriptions?page=2&page_size=1"
    for path in (f"/v2/subscriptions/{sub['id']}", "/v2/subscriptions/" + sub["id"].replace("=", "%3D")):
        assert api.get(path).json() == sub
    emu.control.set_config(balances_as_strings=True)
    as_strings = api.get(f"/v2/subscriptions/{sub['id']}").json()
    assert as_strings["current_balance"] == str(sub["current_balance"])


def test_subscription_list_pagination_covers_all(api, emu):
    seen = []
    url = "/v2/subscriptions?page_size=37"
    while url:
        body = api.get(url).json()
        seen.extend(s["id"] for s in body["data"])
        assert body["_metadata"]["page_count"] == len(body["data"])
        url = body["_metadata"]["links"].get("_next")
    assert len(seen) == len(set(seen)) == 200


def test_subscription_filters(api, emu):
    state = emu.state
    sim = next(s for s in state.sims.values() if s.client_id == emu.client_id and len(state.subs_by_iccid[s.iccid]) > 2)
    by_iccid = api.get("/v2/subscriptions", params={"iccid": sim.iccid, "page_size": 100}).json()
    assert {s["id"] for s in by_iccid["data"]} == {s.id for s in state.subs_by_iccid[sim.iccid]}
    assert by_iccid["_metadata"]["links"]["_self"] == f"/v2/subscriptions?iccid={sim.iccid}&page=1&page_size=100"
    assert api.get("/v2/subscriptions", params={"iccid": sim.iccid + "/"}).json()["data"]  # docs' stray slash
    other = _sim(emu, "other-client")
    assert api.get("/v2/subscriptions", params={"iccid": other.iccid}).json()["data"] == []
    by_email = api.get("/v2/subscriptions", params={"email": sim.email, "page_size": 1000}).json()["data"]
    assert by_email and all(state.sims[s["sim_id"]].email == sim.email for s in by_email)
    product_id = state.subs_by_iccid[sim.iccid][0].product_id
    by_product = api.get("/v2/subscriptions", params={"product-id": product_id, "page_size": 1000}).json()["data"]
    assert by_product and all(s["product_id"] == product_id for s in by_product)
    active = api.get("/v2/subscriptions", params={"status": "ACTIVE", "page_size": 1000}).json()["data"]
    assert active and all(s["status"] == "ACTIVE" for s in active)
    assert any(s["current_balance"] < s["initial_balance"] * 0.1 for s in active)  # low-balance DAG finds some
    statuses = {s["status"] for s in api.get("/v2/subscriptions", params={"page_size": 1000}).json()["data"]}
    assert statuses >= {"ACTIVE", "PENDING", "DEPLETED", "EXPIRED"}
    everything = api.get("/v2/subscriptions", params={"page_size": 1000}).json()["data"]
    middle = sorted(s["created_date"] for s in everything)[100]
    before = api.get("/v2/subscriptions", params={"before": middle, "page_size": 1000}).json()["data"]
    after = api.get("/v2/subscriptions", params={"after": middle.replace("Z", "+0000"), "page_size": 1000}).json()
    assert before and all(s["created_date"] < middle for s in before)
    assert after["data"] and all(s["created_date"] > middle for s in after["data"])
    bad = api.get("/v2/subscriptions", params={"before": "yesterday"})
    assert bad.status_code == 400 and bad.json()["type"] == "INVALID_HTTP_MESSAGE"


def test_activate_and_expire(api, emu):
    pending = next(s for s in emu.state.client_subs[emu.client_id] if s.status == "PENDING")
    response = api.post(f"/v2/subscriptions/{pending.id}/activate")
    assert response.status_code == 200
    assert response.json()["status"] == "ACTIVE"
    again = api.post(f"/v2/subscriptions/{pending.id}/activate")
    assert again.status_code == 400 and again.json()["type"] == "INVALID_REQUEST_PARAMS"
    expired = api.post(f"/v2/subscriptions/{pending.id}/expire")
    assert expired.status_code == 200 and expired.json()["status"] == "EXPIRED"
    notes = emu.control.stats()["notifications"]
    assert notes[-1]["payload"]["type"] == "SUBSCRIPTION_END"


def test_activate_with_delay(api, emu):
    emu.control.set_config(activate_delay=30)
    pending = next(s for s in emu.state.client_subs[emu.client_id] if s.status == "PENDING")
    assert api.post(f"/v2/subscriptions/{pending.id}/activate").json()["status"] == "PENDING"
    emu.control.advance(31)
    assert api.get(f"/v2/subscriptions/{pending.id}").json()["status"] == "ACTIVE"


def test_pending_activates_and_active_expires_with_clock(api, emu):
    subs = emu.state.client_subs[emu.client_id]
    pending = min((s for s in subs if s.status == "PENDING"), key=lambda s: s.activation)
    active = min((s for s in subs if s.status == "ACTIVE"), key=lambda s: s.expiry)
    emu.control.set_time(pending.activation + 1)
    assert api.get(f"/v2/subscriptions/{pending.id}").json()["status"] == "ACTIVE"
    emu.control.set_time(active.expiry + 1)
    # a fresh token: the old one expired when the clock jumped
    api._token = None
    assert api.get(f"/v2/subscriptions/{active.id}").json()["status"] == "EXPIRED"


def test_usage_dynamics(api, emu):
    product = next(p for p in emu.state.product_list if p.data_unit == "MB")
    order = api.post(
        "/v2/orders",
        json={
            "operation_type": "ACTIVATION",
            "sim_type": "ESIM",
            "country": "GB",
            "product": {"id": product.id, "is_first_usage_activation": True},
            "subscriber": {
                "email": "fu@example.com",
                "first_name": "F",
                "last_name": "U",
                "country_of_residence": "GB",
                "device": {"operating_system": "ios", "model": "iPhone", "id": "1"},
            },
        },
    ).json()
    emu.control.advance(3)
    output = api.get(f"/v2/orders/{order['id']}").json()["output"]
    sub_path, iccid = f"/v2/subscriptions/{output['subscription_id']}", output["iccid"]
    pending = api.get(sub_path).json()
    assert pending["status"] == "PENDING_USAGE" and pending["activation_date"] is None
    assert api.get(f"/v2/sims/{iccid}").json()["status"] == "Released"
    summary = emu.control.usage(iccid, 1024)
    assert summary["consumed"] == 1024
    body = api.get(sub_path).json()
    assert body["status"] == "ACTIVE" and body["spend_balance"] == 1024 and body["activation_date"]
    assert api.get(f"/v2/sims/{iccid}").json()["status"] == "Installed"
    emu.control.usage(iccid, product.data_bytes)
    depleted = api.get(sub_path).json()
    assert depleted["status"] == "DEPLETED" and depleted["current_balance"] == 0
    kinds = [n["payload"]["type"] for n in emu.control.stats()["notifications"]]
    assert kinds == ["DOWNLOAD_PROGRESS", "USAGE_THRESHOLD", "SUBSCRIPTION_END"]


def test_cancel_sim(api, emu):
    state = emu.state
    sim = next(
        s for s in state.sims.values()
        if s.client_id == emu.client_id and s.status == "Released" and not s.used
    )  # fmt: skip
    sub_ids = [s.id for s in state.subs_by_iccid[sim.iccid]]
    response = api.request("DELETE", f"/v2/sims/{sim.iccid}")
    assert response.status_code == 204 and response.content == b""
    assert api.get(f"/v2/sims/{sim.iccid}").status_code == 404
    assert all(api.get(f"/v2/subscriptions/{i}").status_code == 404 for i in sub_ids)
    installed = _sim(emu, status="Installed")
    refused = api.request("DELETE", f"/v2/sims/{installed.iccid}")
    assert refused.status_code == 400 and refused.json()["type"] == "INVALID_REQUEST_PARAMS"


def test_sim_status_control_and_notifications_routes(api, emu):
    sim = _sim(emu, status="Released")
    assert emu.control.set_sim_status(sim.iccid, "Downloaded")["status"] == "Downloaded"
    assert api.get(f"/v2/sims/{sim.iccid}").json()["status"] == "Downloaded"
    path = f"/v2/sims/{sim.iccid}/preferences/notifications/SUBSCRITPION_END"
    response = api.request("PUT", path, json={"webhook_url": "https://example.com/hook"})
    assert response.status_code == 200
    assert response.json() == {"type": "SUBSCRIPTION_END", "webhook_url": "https://example.com/hook"}
    assert api.request("PUT", path, json={}).status_code == 400
    assert api.request("DELETE", path).status_code == 204
    assert api.request("DELETE", path).status_code == 404


def test_rfc7807_model(api, emu):
    emu.control.set_config(error_model="rfc7807")
    response = api.get("/v2/products/nope", headers={"X-Correlation-ID": "corr-7807"})
    assert response.status_code == 404
    body = response.json()
    assert body["title"] == "Not found" and body["status"] == 404
    assert body["correlation_id"] == "corr-7807"
    assert body["errors"][0]["detail"] == "Product nope not found"
    bad = api.post("/v2/orders", json={"operation_type": "ACTIVATION", "sim_type": "ESIM"}).json()
    assert bad["status"] == 400 and bad["title"] == "Invalid request parameters"
    paths = {e["json_path"] for e in bad["errors"]}
    assert {"$.product.id", "$.subscriber.email", "$.country"} <= paths
    assert all(set(e) == {"code", "json_path", "detail"} for e in bad["errors"])


def test_correlation_ids_recorded_and_strict_mode(api, emu):
    api.get("/v2/products", headers={"X-Correlation-ID": "abc-123"})
    requests_log = emu.control.stats()["requests"]
    assert any(r["correlation_id"] == "abc-123" and r["route"] == "GET /v2/products" for r in requests_log)
    emu.control.set_config(strict_correlation_id=True)
    without = requests.get(
        emu.api_base + "/v2/products", headers={"Authorization": f"Bearer {api.token()}"}, timeout=10
    )
    assert without.status_code == 400
    assert without.json() == {"type": "INVALID_REQUEST_PARAMS", "messages": ["X-Correlation-ID header is required"]}
    assert api.get("/v2/products").status_code == 200


def test_rate_limit(api, other_api, emu):
    # Start just after a minute boundary of the emulator clock: the fixed one-minute window cannot roll over mid-test.
    emu.control.set_time((emu.control.now() // 60 + 1) * 60 + 0.5)
    emu.control.set_config(rate_limit_per_minute=3)
    statuses = [api.get("/v2/products").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = api.get("/v2/products")
    assert limited.json()["type"] == "TOO MANY REQUESTS"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert api.get("/v2/products/x").status_code == 404  # another route template has its own budget
    assert other_api.get("/v2/products").status_code == 200  # and so does another client
    emu.control.set_config(retry_after=False)
    assert "Retry-After" not in api.get("/v2/products").headers
    emu.control.advance(60)
    api._token = None
    assert api.get("/v2/products").status_code == 200
    stats = emu.control.stats()
    assert stats["rate_limited"] == 3
    assert stats["requests_by_route"]["GET /v2/products"]["429"] == 3


def test_stats_urls_record_raw_targets(api, emu):
    api.get("/v2/products/abc%3D?x=1")
    urls = emu.control.stats()["urls"]
    assert "/connect-api/v2/products/abc%3D?x=1" in urls
    assert "/auth/realms/tru-staff/protocol/openid-connect/token" in urls
