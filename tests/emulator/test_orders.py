"""Order contract: validation (§7.1), lifecycle driven by the clock (§9.1), ACTIVATION and TOPUP outputs (§7.2)."""

from __future__ import annotations

import re
import uuid

SUBSCRIBER = {
    "email": "john@doe.com",
    "first_name": "John",
    "last_name": "Doe",
    "country_of_residence": "US",
    "device": {"operating_system": "ios", "model": "iPhone", "id": "1234567"},
}


def activation(product_id, **subscriber):
    return {
        "operation_type": "ACTIVATION",
        "sim_type": "ESIM",
        "country": "GB",
        "product": {"id": product_id},
        "subscriber": {**SUBSCRIBER, **subscriber},
    }


def topup(product_id, iccid):
    return {
        "operation_type": "TOPUP",
        "sim_type": "ESIM",
        "country": "GB",
        "product": {"id": product_id},
        "subscriber": {"device": SUBSCRIBER["device"], "sim": {"iccid": iccid}},
    }


def esim_product(emu):
    return next(p for p in emu.state.product_list if "ESIM" in p.sim_type)


def test_activation_lifecycle(api, emu):
    product = esim_product(emu)
    response = api.post("/v2/orders", json=activation(product.id), headers={"X-Correlation-ID": "corr-order-1"})
    assert response.status_code == 201
    created = response.json()
    assert set(created) == {"id", "status", "created_date", "_metadata"}
    assert uuid.UUID(created["id"]).version == 4
    assert created["status"] == "ACCEPTED"
    assert created["_metadata"] == {"_links": {"_self": f"{emu.api_base}/v2/orders/{created['id']}"}}
    path = f"/v2/orders/{created['id']}"
    accepted = api.get(path).json()
    assert accepted["status"] == "ACCEPTED" and "output" not in accepted
    assert accepted["_metadata"]["links"] == {"_self": f"{emu.api_base}{path}"}
    emu.control.advance(1.0)
    assert api.get(path).json()["status"] == "FULFILLING"
    emu.control.advance(2.0)
    done = api.get(path).json()
    assert done["status"] == "COMPLETED"
    output = done["output"]
    assert set(output) == {"matching_id", "iccid", "subscription_id"}
    assert re.match(r"^8944\d{15}$", output["iccid"])
    assert re.match(r"^[A-Z0-9]{2}-[A-Z0-9]{6}-[A-Z0-9]{4}$", output["matching_id"])
    lpa = f"1$rsp.truphone.com${output['matching_id']}"
    assert done["_metadata"]["links"] == {
        "_lpa": lpa,
        "_smdp": "rsp.truphone.com",
        "_sim": f"{emu.api_base}/v2/sims/{output['iccid']}",
        "_qrcode": f"https://services.truphone.com/connect/qrcode/v1/esim/LPA:{lpa}",
        "_subscription": f"{emu.api_base}/v2/subscriptions/{output['subscription_id']}",
        "_self": f"{emu.api_base}{path}",
    }
    sim = api.get(f"/v2/sims/{output['iccid']}").json()
    assert sim["status"] == "Released" and sim["matching_id"] == output["matching_id"]
    sub = api.get(f"/v2/subscriptions/{output['subscription_id']}").json()
    assert sub["status"] == "ACTIVE" and sub["product_id"] == product.id
    assert sub["current_balance"] == product.data_bytes
    listed = api.get("/v2/subscriptions", params={"iccid": output["iccid"]}).json()["data"]
    assert [s["id"] for s in listed] == [output["subscription_id"]]
    orders = emu.control.orders()
    assert orders[-1]["id"] == created["id"] and orders[-1]["correlation_id"] == "corr-order-1"
    assert emu.control.stats()["orders_created"] == [
        {"id": created["id"], "client_id": emu.client_id, "correlation_id": "corr-order-1"}
    ]


def test_order_of_other_client_is_denied(api, other_api, emu):
    created = api.post("/v2/orders", json=activation(esim_product(emu).id)).json()
    assert other_api.get(f"/v2/orders/{created['id']}").status_code == 403


def test_pending_activation_date(api, emu):
    activation_at = emu.control.now() + 3600
    body = activation(esim_product(emu).id)
    body["product"]["activation_date"] = _iso(activation_at)
    created = api.post("/v2/orders", json=body).json()
    emu.control.advance(5)
    sub_id = api.get(f"/v2/orders/{created['id']}").json()["output"]["subscription_id"]
    assert api.get(f"/v2/subscriptions/{sub_id}").json()["status"] == "PENDING"
    emu.control.advance(3600)
    api._token = None
    assert api.get(f"/v2/subscriptions/{sub_id}").json()["status"] == "ACTIVE"


def _iso(ts):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_topup_adds_subscription(api, emu):
    state = emu.state
    sim = next(s for s in state.sims.values() if s.client_id == emu.client_id and s.status == "Installed")
    before = len(state.subs_by_iccid[sim.iccid])
    product = esim_product(emu)
    created = api.post("/v2/orders", json=topup(product.id, sim.iccid))
    assert created.status_code == 201
    emu.control.advance(3)
    done = api.get(f"/v2/orders/{created.json()['id']}").json()
    assert done["status"] == "COMPLETED"
    assert set(done["output"]) == {"iccid", "subscription_id"}
    assert set(done["_metadata"]["links"]) == {"_sim", "_subscription", "_self"}
    subs = api.get("/v2/subscriptions", params={"iccid": sim.iccid, "page_size": 100}).json()["data"]
    assert len(subs) == before + 1 and done["output"]["subscription_id"] in {s["id"] for s in subs}


def test_topup_rejections(api, emu):
    state = emu.state
    product = esim_product(emu)
    other = next(s for s in state.sims.values() if s.client_id == "other-client")
    assert api.post("/v2/orders", json=topup(product.id, other.iccid)).status_code == 403
    unknown = api.post("/v2/orders", json=topup(product.id, "8944999999999999999"))
    assert unknown.status_code == 400 and "subscriber.sim.iccid" in unknown.json()["messages"][0]
    own = next(s for s in state.sims.values() if s.client_id == emu.client_id and s.status == "Installed")
    emu.control.set_sim_status(own.iccid, "Unavailable")
    assert api.post("/v2/orders", json=topup(product.id, own.iccid)).status_code == 400
    emu.control.set_sim_status(own.iccid, "Installed")
    emu.control.set_config(order_complete_after=0.0, order_fulfilling_after=0.0)
    live = sum(1 for s in state.subs_by_iccid[own.iccid] if s.status in ("ACTIVE", "PENDING", "PENDING_USAGE"))
    for _ in range(15 - live):
        assert api.post("/v2/orders", json=topup(product.id, own.iccid)).status_code == 201
        api.get("/v2/products")  # any read settles due orders
    full = api.post("/v2/orders", json=topup(product.id, own.iccid))
    assert full.status_code == 400 and "15 active subscriptions" in full.json()["messages"][0]


def test_validation_messages(api, emu):
    response = api.post("/v2/orders", json={"operation_type": "ACTIVATION", "sim_type": "ESIM"})
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "INVALID_REQUEST_PARAMS"
    assert set(body["messages"]) >= {
        "country is required",
        "product.id is required",
        "subscriber.email is required",
        "subscriber.first_name is required",
        "subscriber.last_name is required",
        "subscriber.country_of_residence is required",
        "subscriber.device is required",
    }
    bad = activation("unknown-product=", country_of_residence="XX")
    bad["country"] = "United Kingdom"
    messages = api.post("/v2/orders", json=bad).json()["messages"]
    assert any(m.startswith("country ") for m in messages)
    assert any(m.startswith("product.id ") for m in messages)
    assert any(m.startswith("subscriber.country_of_residence") for m in messages)
    assert (
        api.post("/v2/orders", json={**activation(esim_product(emu).id), "operation_type": "SWAP"}).status_code == 400
    )
    assert api.post("/v2/orders", json=[1]).json()["type"] == "INVALID_REQUEST_PARAMS"
    priced = activation(esim_product(emu).id)
    priced["product"]["sold_price"] = 20
    assert "must be sent together" in api.post("/v2/orders", json=priced).json()["messages"][0]
    dated = activation(esim_product(emu).id)
    dated["product"]["activation_date"] = "tomorrow"
    assert api.post("/v2/orders", json=dated).json()["type"] == "INVALID_HTTP_MESSAGE"
    past = activation(esim_product(emu).id)
    past["product"]["activation_date"] = "2020-01-01T00:00:00Z"
    assert api.post("/v2/orders", json=past).json()["messages"] == ["product.activation_date must not be in the past"]
    assert emu.control.orders() == []


def test_bad_json(api):
    response = api.post("/v2/orders", data=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["type"] == "INVALID_HTTP_MESSAGE"


def test_failure_injection(api, emu):
    failing = api.post("/v2/orders", json=activation("FAIL-product")).json()
    by_email = api.post("/v2/orders", json=activation(esim_product(emu).id, email="x+fail@doe.com")).json()
    emu.control.advance(3)
    for created in (failing, by_email):
        body = api.get(f"/v2/orders/{created['id']}").json()
        assert body["status"] == "FAILED" and "output" not in body
        assert body["error"]["type"] == "ORDER_FAILED" and body["error"]["messages"]


def test_slow_orders(api, emu):
    created = api.post("/v2/orders", json=activation(esim_product(emu).id, email="x+slow@doe.com")).json()
    emu.control.advance(5)
    assert api.get(f"/v2/orders/{created['id']}").json()["status"] == "ACCEPTED"
    emu.control.advance(26)
    assert api.get(f"/v2/orders/{created['id']}").json()["status"] == "COMPLETED"


def test_caps(api, emu):
    emu.control.set_config(daily_esim_cap=2)
    product = esim_product(emu).id
    assert [api.post("/v2/orders", json=activation(product)).status_code for _ in range(3)] == [201, 201, 406]
    capped = api.post("/v2/orders", json=activation(product)).json()
    assert capped["type"] == "UNACCEPTABLE"
    sim = next(s for s in emu.state.sims.values() if s.client_id == emu.client_id and s.status == "Installed")
    assert api.post("/v2/orders", json=topup(product, sim.iccid)).status_code == 201  # top-ups are not capped
    emu.control.set_config(daily_esim_cap=None, monthly_esim_cap=2)
    assert api.post("/v2/orders", json=activation(product)).status_code == 406


def test_creation_variants(api, emu):
    emu.control.set_config(order_created_status=202, creation_links_key="links")
    response = api.post("/v2/orders", json=activation(esim_product(emu).id))
    assert response.status_code == 202
    assert set(response.json()["_metadata"]) == {"links"}
