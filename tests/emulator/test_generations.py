"""Requests never leak across resets: a request belongs to the state generation it arrived in.

The race these tests pin down: a request's last steps (its record in the stats, its answer) can run after the test
that sent it has ended and the next test's reset has run, so it lands in the next test's fresh counters (a CI run
once counted a ``GET /v2/orders/{id}`` in a test that never polls). Pauses (a test hook of the emulator) hold a
request at the exact point before it is counted, so the interleaving is forced rather than hoped for; with the
generation check removed from the state, these tests fail.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import requests

from airflow_provider_truconnect.emulator.server import RunningEmulator, run_emulator

if TYPE_CHECKING:
    from tests.emulator.conftest import Api

ROUTE = "GET /v2/products"


def _activation(emu: RunningEmulator) -> dict[str, Any]:
    assert emu.state is not None
    product = next(p for p in emu.state.product_list if "ESIM" in p.sim_type)
    return {
        "operation_type": "ACTIVATION",
        "sim_type": "ESIM",
        "country": "GB",
        "product": {"id": product.id},
        "subscriber": {
            "email": "late@example.com",
            "first_name": "Late",
            "last_name": "Request",
            "country_of_residence": "GB",
            "device": {"operating_system": "ios", "model": "iPhone", "id": "1"},
        },
    }


class Call:
    """One client call run on its own thread, because a paused request keeps its client waiting."""

    def __init__(self, fn: Callable[[], requests.Response]) -> None:
        self._fn = fn
        self._outcome: list[requests.Response | Exception] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._outcome.append(self._fn())
        except requests.RequestException as exc:
            self._outcome.append(exc)

    def result(self) -> requests.Response | Exception:
        self.thread.join(timeout=30)
        assert self._outcome, "the call did not finish"
        return self._outcome[0]


@pytest.fixture
def calls(emu: RunningEmulator) -> Iterator[list[Call]]:
    started: list[Call] = []
    yield started
    emu.control.release_pauses()  # a failed test must not leave its client waiting
    for call in started:
        call.thread.join(timeout=30)


def test_request_paused_before_it_is_counted_is_dropped_by_a_direct_reset(
    api: Api, emu: RunningEmulator, calls: list[Call]
) -> None:
    """What the pytest fixture does between tests: ``state.reset()`` from the test thread, here forced to come between
    a request's processing and its record."""
    assert emu.state is not None
    api.token()
    emu.state.inflight.add_pause(ROUTE, point="answered")
    calls.append(Call(lambda: api.get("/v2/products")))
    assert emu.state.inflight.wait_paused(1) == 1  # processed, answer decided, neither counted nor sent
    assert ROUTE not in emu.control.stats()["requests_by_route"]

    emu.state.reset()

    assert isinstance(calls[0].result(), requests.ConnectionError)  # dropped, not answered
    stats = emu.control.stats()
    assert stats["requests_total"] == 0 and stats["requests"] == [] and stats["urls"] == []
    assert emu.state.inflight.count() == 0  # the reset waited for it to finish


def test_request_paused_before_it_is_counted_is_dropped_by_a_control_plane_reset(
    api: Api, emu: RunningEmulator, calls: list[Call]
) -> None:
    api.token()
    emu.control.pause(ROUTE, point="answered")
    calls.append(Call(lambda: api.get("/v2/products")))
    assert emu.control.wait_paused(1) == 1

    emu.control.reset()

    assert isinstance(calls[0].result(), requests.ConnectionError)
    assert emu.control.wait_idle()
    assert emu.control.stats()["requests_total"] == 0


def test_without_a_reset_the_paused_request_is_counted_and_answered(
    api: Api, emu: RunningEmulator, calls: list[Call]
) -> None:
    """The control case: the pause alone changes nothing but the timing."""
    api.token()
    emu.control.pause(ROUTE, point="answered", until="release")
    calls.append(Call(lambda: api.get("/v2/products")))
    assert emu.control.wait_paused(1) == 1
    assert ROUTE not in emu.control.stats()["requests_by_route"]
    assert emu.control.release_pauses() == 1
    answer = calls[0].result()
    assert isinstance(answer, requests.Response) and answer.status_code == 200
    assert emu.control.stats()["requests_by_route"][ROUTE] == {"200": 1}


def test_an_answer_the_client_has_read_is_already_counted(api: Api, emu: RunningEmulator) -> None:
    """The mirror image of the leak: a test that reads the stats right after its answer must find it there."""
    api.token()
    for n in range(1, 21):
        assert api.get("/v2/products").status_code == 200
        assert emu.control.stats()["requests_by_route"][ROUTE] == {"200": n}
    emu.control.add_fault(ROUTE, drop=True)
    with pytest.raises(requests.ConnectionError):
        api.get("/v2/products")
    assert emu.control.stats()["requests_by_route"][ROUTE] == {"200": 20, "0": 1}


def test_subprocess_emulator_drops_a_request_across_a_reset() -> None:
    with run_emulator(mode="subprocess", seed_subscriptions=2) as emu:
        session = requests.Session()
        token = session.post(
            emu.oauth_url,
            data={"grant_type": "client_credentials"},
            auth=(emu.client_id, emu.client_secret),
            timeout=10,
        ).json()["access_token"]
        emu.control.pause(ROUTE, point="answered")
        call = Call(
            lambda: session.get(emu.api_base + "/v2/products", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        )
        assert emu.control.wait_paused(1) == 1
        emu.control.reset()
        assert isinstance(call.result(), requests.ConnectionError)
        assert emu.control.wait_idle()
        assert emu.control.stats()["requests_total"] == 0
        session.close()


def test_request_that_arrived_before_a_reset_acts_on_nothing_after_it(
    api: Api, emu: RunningEmulator, calls: list[Call]
) -> None:
    """No order, no fault consumed, no count: the request is dropped, even though it resumes after the reset."""
    api.token()
    body = _activation(emu)
    emu.control.pause("POST /v2/orders", point="arrived", until="release")
    calls.append(Call(lambda: api.post("/v2/orders", json=body)))
    assert emu.control.wait_paused(1) == 1

    emu.control.reset()  # returns although the request is held: a held request is not waited for
    emu.control.add_fault("POST /v2/orders", status=500)
    assert emu.control.release_pauses() == 1

    assert isinstance(calls[0].result(), requests.ConnectionError)
    assert emu.control.wait_idle()
    assert emu.control.orders() == []
    faults = requests.get(emu.url + "/__emulator/faults", timeout=10).json()
    assert [(f["status"], f["applied"]) for f in faults] == [(500, 0)]
    assert emu.control.stats()["requests_total"] == 0


def test_delay_fault_is_cut_short_by_a_reset_and_not_counted(api: Api, emu: RunningEmulator) -> None:
    """The leak of ``test_delay_fault_then_normal``: a delayed request must not be answered in the next test."""
    assert emu.state is not None
    api.token()
    emu.control.add_fault(ROUTE, delay=600)
    with pytest.raises(requests.Timeout):
        api.session.get(emu.api_base + "/v2/products", headers={"Authorization": f"Bearer {api.token()}"}, timeout=0.2)
    assert emu.state.inflight.count() == 1

    emu.state.reset()

    assert emu.state.inflight.count() == 0
    assert emu.control.stats()["requests_total"] == 0


def test_order_created_with_a_delayed_answer_stays_in_its_generation(api: Api, emu: RunningEmulator) -> None:
    api.token()
    emu.control.add_fault("POST /v2/orders", after=True, delay=600)
    with pytest.raises(requests.Timeout):
        api.session.post(
            emu.api_base + "/v2/orders",
            json=_activation(emu),
            headers={"Authorization": f"Bearer {api.token()}"},
            timeout=(5, 0.2),
        )
    assert len(emu.control.orders()) == 1  # processed before the delay
    emu.control.reset()
    assert emu.control.orders() == [] and emu.control.stats()["requests_total"] == 0


def test_headers_that_never_end_are_ended_by_a_reset(api: Api, emu: RunningEmulator) -> None:
    assert emu.state is not None
    token = api.token()
    emu.control.add_fault(ROUTE, raw="headers_never_end")
    host, port = emu.url.rsplit("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        request = f"GET /connect-api/v2/products HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"
        sock.sendall(request.encode())
        head = b""
        while not head.endswith(b"application/json\r\n"):
            head += sock.recv(4096)
        assert head == b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        emu.state.reset()
        assert sock.recv(4096) == b""  # the connection closed, without the end of the headers
    assert emu.state.inflight.count() == 0
    assert emu.control.stats()["requests_total"] == 0


def test_body_that_never_arrives_does_not_hold_a_reset(api: Api, emu: RunningEmulator) -> None:
    assert emu.state is not None
    token = api.token()
    host, port = emu.url.rsplit("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = f"POST /connect-api/v2/orders HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        sock.sendall(f"{head}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{".encode())
        assert emu.state.inflight.wait_serving(1) == 1
        # The request runs without a pause up to reading its body; any later request on the same loop comes after.
        assert emu.control.health()
        emu.state.reset()
        assert sock.recv(4096) == b""  # dropped: the request belonged to the previous generation
    assert emu.state.inflight.count() == 0
    assert emu.control.orders() == [] and emu.control.stats()["requests_total"] == 0


def test_pause_arguments_are_checked(emu: RunningEmulator) -> None:
    for bad in (
        {"route": "GET /v2/nothing"},
        {"point": "later"},
        {"until": "never"},
        {"count": 0},
        {"limit": 0},
        {"colour": "red"},
    ):
        response = requests.post(emu.url + "/__emulator/pauses", json=bad, timeout=10)
        assert response.status_code == 400, bad
        assert response.json()["error"]
