"""The issue's "Done when": a plain-requests client does the whole round trip against the emulator."""

from __future__ import annotations

import uuid

import requests


def test_plain_requests_round_trip(emu):
    session = requests.Session()
    token = session.post(
        emu.oauth_url,
        data={"grant_type": "client_credentials", "client_id": emu.client_id, "client_secret": emu.client_secret},
        timeout=10,
    ).json()["access_token"]
    session.headers["Authorization"] = f"Bearer {token}"

    def call(method, path, **kwargs):
        headers = {"X-Correlation-ID": str(uuid.uuid4()), "Content-Type": "application/json"}
        url = emu.api_base.rstrip("/") + path  # relative links join the API base, not the host root
        response = session.request(method, url, headers=headers, timeout=10, **kwargs)
        response.raise_for_status()
        return response.json()

    subscriptions, link = [], "/v2/subscriptions?page_size=50"
    while link:
        page = call("GET", link)
        subscriptions.extend(page["data"])
        link = page["_metadata"]["links"].get("_next")
    assert len(subscriptions) == 200

    product = call("GET", "/v2/products")["data"][0]
    order = call(
        "POST",
        "/v2/orders",
        json={
            "operation_type": "ACTIVATION",
            "sim_type": "ESIM",
            "country": "GB",
            "product": {"id": product["id"]},
            "subscriber": {
                "email": "john@doe.com",
                "first_name": "John",
                "last_name": "Doe",
                "country_of_residence": "US",
                "device": {"operating_system": "ios", "model": "iPhone", "id": "1234567"},
            },
        },
    )
    status = order["status"]
    for _ in range(10):
        if status in ("COMPLETED", "FAILED"):
            break
        emu.control.advance(1)
        status = call("GET", f"/v2/orders/{order['id']}")["status"]
    assert status == "COMPLETED"
    assert emu.control.stats()["token_grants"][emu.client_id]["client_credentials"] == 1
