"""Fault injection through the control plane."""

from __future__ import annotations

import pytest
import requests


def esim_product(emu):
    return next(p for p in emu.state.product_list if "ESIM" in p.sim_type)


def activation(product_id):
    return {
        "operation_type": "ACTIVATION",
        "sim_type": "ESIM",
        "country": "GB",
        "product": {"id": product_id},
        "subscriber": {
            "email": "john@doe.com",
            "first_name": "John",
            "last_name": "Doe",
            "country_of_residence": "US",
            "device": {"operating_system": "ios", "model": "iPhone", "id": "1234567"},
        },
    }


def test_status_fault_count(api, emu):
    emu.control.add_fault("GET /v2/products", status=503, count=2, retry_after=7)
    first = api.get("/v2/products")
    assert first.status_code == 503
    assert first.headers["Retry-After"] == "7"
    assert first.json()["type"] == "INTERNAL_ERROR"
    assert api.get("/v2/products").status_code == 503
    assert api.get("/v2/products").status_code == 200
    assert api.get("/v2/products/x").status_code == 404  # other routes untouched


def test_fault_429_uses_documented_type(api, emu):
    api.token()  # "*" also matches the token endpoint
    emu.control.add_fault("*", status=429)
    response = api.get("/v2/products")
    assert response.status_code == 429 and response.json()["type"] == "TOO MANY REQUESTS"
    assert "Retry-After" not in response.headers


def test_fraction_fault_is_seeded(api, emu):
    def run():
        emu.control.clear_faults()
        emu.control.add_fault("GET /v2/products", status=500, fraction=0.5, seed=7)
        return [api.get("/v2/products").status_code for _ in range(20)]

    first = run()
    assert first == run()
    assert 0 < first.count(500) < 20


def test_drop_raises_connection_error(api, emu):
    emu.control.add_fault("GET /v2/sims/{iccid}", drop=True)
    iccid = next(s.iccid for s in emu.state.sims.values() if s.client_id == emu.client_id)
    with pytest.raises(requests.ConnectionError):
        api.get(f"/v2/sims/{iccid}")
    assert api.get(f"/v2/sims/{iccid}").status_code == 200
    assert emu.control.stats()["requests_by_route"]["GET /v2/sims/{iccid}"] == {"0": 1, "200": 1}


def test_token_faults(emu):
    emu.control.add_fault("token", status=503)
    data = {"grant_type": "client_credentials", "client_id": emu.client_id, "client_secret": emu.client_secret}
    response = requests.post(emu.oauth_url, data=data, timeout=10)
    assert response.status_code == 503 and response.json()["error"] == "temporarily_unavailable"
    emu.control.add_fault("token", drop=True)
    with pytest.raises(requests.ConnectionError):
        requests.post(emu.oauth_url, data=data, timeout=10)
    assert requests.post(emu.oauth_url, data=data, timeout=10).status_code == 200


def test_malformed_and_html_bodies(api, emu):
    emu.control.add_fault("GET /v2/products", body="malformed")
    malformed = api.get("/v2/products")
    assert malformed.status_code == 200
    with pytest.raises(ValueError):
        malformed.json()
    emu.control.add_fault("GET /v2/products", body="html")
    html = api.get("/v2/products")
    assert html.status_code == 502 and html.headers["content-type"].startswith("text/html")
    assert "<html>" in html.text
    emu.control.add_fault("GET /v2/products", body="html", status=504)
    assert api.get("/v2/products").status_code == 504


def test_delay_fault_then_normal(api, emu):
    emu.control.add_fault("GET /v2/products", delay=0.05)
    assert api.get("/v2/products").status_code == 200
    emu.control.add_fault("GET /v2/products", delay=2.0)
    with pytest.raises(requests.Timeout):
        api.session.get(emu.api_base + "/v2/products", headers={"Authorization": f"Bearer {api.token()}"}, timeout=0.2)


@pytest.mark.parametrize(
    "fault",
    [{"status": 504}, {"drop": True}, {"body": "html"}],
    ids=["status", "drop", "html"],
)
def test_after_fault_still_creates_the_order(api, emu, fault):
    emu.control.add_fault("POST /v2/orders", after=True, **fault)
    try:
        response = api.post("/v2/orders", json=activation(esim_product(emu).id), headers={"X-Correlation-ID": "lost"})
    except requests.ConnectionError:
        response = None
    assert response is None or response.status_code >= 500
    orders = emu.control.orders()
    assert len(orders) == 1 and orders[0]["correlation_id"] == "lost"
    emu.control.advance(3)
    assert api.get(f"/v2/orders/{orders[0]['id']}").json()["status"] == "COMPLETED"


def test_fault_validation_and_listing(emu):
    with pytest.raises(RuntimeError):
        emu.control.add_fault("*")  # no effect given
    with pytest.raises(RuntimeError):
        emu.control.add_fault("*", status=500, fraction=2.0)
    emu.control.add_fault("*", status=500, count=3)
    listed = requests.get(emu.url + "/__emulator/faults", timeout=10).json()
    assert listed[0]["count"] == 3 and listed[0]["route"] == "*"
    emu.control.clear_faults()
    assert requests.get(emu.url + "/__emulator/faults", timeout=10).json() == []
